"""What a visitor reads before trusting the model: where it came from (one line for the page's header)
and the "About this model" text (architecture, data, accuracy, intended use), from the model folder's
config.json and model card, plus the plots and example photos the folder holds.

Everything here reads the model folder only: the same for the bundled model, any folder and a Hub repo.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .data import photo_files
from .hub import CARD_NAME, EXAMPLES_DIR, HUB_PREFIX, WEIGHTS_NAME
from .inference import Classifier

PLOTS = {"curves.png": "Training curves (loss and accuracy per epoch)",
         "confusion.png": "Confusion matrix (rows: true label, columns: the model's answer)"}
LIMITATIONS = ("A teaching and demo model: it knows only the labels above, in ordinary photos where the animal is "
               "the main subject. Accuracy on your own photos may be lower than the figures here; do not use it "
               "for decisions that matter.")


def origin(clf: Classifier, bundled: Path | None = None) -> str:
    """Where the model came from, without the server's paths: "bundled model", "user/name @ revision"
    for a Hub model, else the model folder's own name."""
    if clf.source.startswith(HUB_PREFIX):
        return clf.source[len(HUB_PREFIX):]
    if clf.folder is None:
        return clf.source or "unknown"
    if bundled is not None and clf.folder.resolve() == bundled.resolve():
        return "bundled model"
    folder = clf.folder.resolve()
    return f"{folder.parent.name}/{folder.name}" if folder.name == "model" else folder.name


def accuracy_parts(metrics: dict[str, Any]) -> list[str]:
    """The accuracy figures a model has, best evidence first: real photos, then its own held-out split."""
    parts = []
    if metrics.get("real_val_accuracy") is not None:
        parts.append(f"accuracy on real-photo validation set {metrics['real_val_accuracy']:.1%}")
    if metrics.get("val_accuracy") is not None:
        parts.append(f"in-split validation accuracy {metrics['val_accuracy']:.1%}")
    return parts


def header(clf: Classifier, bundled: Path | None = None) -> str:
    """One markdown line: architecture, size, accuracy and where the model came from."""
    parts = [f"**Model:** {clf.config.get('architecture', '?')}", f"{clf.num_parameters / 1e6:.2f} M parameters"]
    return " · ".join(parts + accuracy_parts(clf.config.get("metrics", {})) + [origin(clf, bundled)])


def repo_url(clf: Classifier) -> str | None:
    """The model's page on the Hub when it came from there, else None (a local folder has no page)."""
    if not clf.source.startswith(HUB_PREFIX):
        return None
    repo_id = clf.source[len(HUB_PREFIX):].split(" @ ")[0]
    return f"https://huggingface.co/{repo_id}"


def plain_words(clf: Classifier) -> str:
    """The header's line for a visitor: what the model knows, how often it is right on photos it never
    trained on (from elsewhere when it was measured so), and a link to its Hub repo."""
    metrics = clf.config.get("metrics", {})
    knows = f"It knows {len(clf.labels)} kinds of photo (the ones listed above)"
    if clf.unknown_below > 0:
        knows += " and says so when a photo shows none of them"
    parts = [knows + "."]
    if metrics.get("real_val_accuracy") is not None:
        photos = sum(v.get("support", 0) for v in metrics.get("real_val_per_class", {}).values())
        where = f"{photos} photos" if photos else "photos"
        parts.append(f"It was right on {metrics['real_val_accuracy']:.0%} of {where} from elsewhere, never used "
                     "in its training.")
    elif metrics.get("val_accuracy") is not None:
        parts.append(f"It was right on {metrics['val_accuracy']:.0%} of photos held back from its training "
                     "folders; photos from elsewhere may score lower.")
    url = repo_url(clf)
    if url:
        parts.append(f"[The model on the Hugging Face Hub]({url}).")
    return " ".join(parts)


def card_sections(text: str) -> dict[str, str]:
    """A model card's `## ` sections by heading (front matter and title dropped), images removed: the
    page shows the plots itself."""
    body = re.sub(r"\A---\n.*?\n---\n", "", text, flags=re.S)
    sections = {}
    for chunk in re.split(r"^## ", body, flags=re.M)[1:]:
        heading, _, content = chunk.partition("\n")
        kept = [line for line in content.splitlines() if not line.lstrip().startswith("![")]
        sections[heading.strip()] = "\n".join(kept).strip()
    return sections


def _section(sections: dict[str, str], prefix: str) -> str | None:
    return next((text for heading, text in sections.items() if heading.startswith(prefix)), None)


def about_markdown(clf: Classifier) -> str:
    """The "About this model" text: architecture and size, training data and recipe (from the model
    card), accuracy overall and per class, intended use and limitations."""
    metrics = clf.config.get("metrics", {})
    card_file = clf.folder / CARD_NAME if clf.folder else None
    sections = card_sections(card_file.read_text(encoding="utf-8")) if card_file and card_file.is_file() else {}
    weights = clf.folder / WEIGHTS_NAME if clf.folder else None
    size = f", {weights.stat().st_size / 2**20:.1f} MB of weights" if weights and weights.is_file() else ""
    side = clf.image_size
    lines = ["### Architecture",
             f"`{clf.config.get('architecture', '?')}`, a convolutional network trained from scratch (no pretrained "
             f"weights): {clf.num_parameters:,} parameters, {side}×{side} input{size}.",
             "", "### What it was trained on",
             f"Photos of {len(clf.labels)} labels: {', '.join(clf.labels)}."]
    training = "\n\n".join(filter(None, [sections.get("Training data"), sections.get("Training")]))
    lines += ["", training] if training else []
    lines += ["", "### Accuracy"]
    figures = accuracy_parts(metrics)
    lines.append("; ".join(figures).capitalize() + "." if figures else "No accuracy recorded.")
    if metrics.get("real_val_accuracy") is not None and metrics.get("real_val_data"):
        lines.append(f"The real-photo validation set is *{metrics['real_val_data']}*, photos never trained on; "
                     "the in-split figure comes from photos held out of the training folder.")
    per_class = metrics.get("real_val_per_class")
    results = _section(sections, "Results")
    if per_class:
        lines += ["", "Per class, on the real-photo validation set:", "", "| class | precision | recall | photos |",
                  "| --- | --- | --- | --- |"]
        lines += [f"| {c} | {v['precision']:.1%} | {v['recall']:.1%} | {v['support']} |" for c, v in per_class.items()]
    elif results:
        lines += ["", "From the model card:", "", results]
    lines += ["", "### Intended use and limitations", _section(sections, "Intended use") or LIMITATIONS]
    return "\n".join(lines)


def plots(folder: Path | None) -> list[tuple[Path, str]]:
    """The training curves and confusion matrix the model folder holds, with captions."""
    if folder is None:
        return []
    return [(folder / name, caption) for name, caption in PLOTS.items() if (folder / name).is_file()]


def model_examples(clf: Classifier) -> list[Path]:
    """The example photos that came with the model (its folder's or Hub repo's examples/)."""
    return photo_files(clf.folder / EXAMPLES_DIR) if clf.folder else []
