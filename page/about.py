"""What a visitor reads before trusting the model: where it came from (one line for the page's header)
and the "About this model" text (what it knows, what it learnt from, how often it is right, what its
warnings mean), in a visitor's words, plus the plots and example photos the folder holds.

Every figure comes from the model folder's config.json, and what it was trained on from its model card's
Training data table (shown by folder name or Hub id, never a server path): the same for the bundled model,
any folder and a Hub repo.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cnn.card import limitations, unknown_rule
from cnn.data import ITALIAN_TO_ENGLISH, photo_files
from cnn.holdout import REAL_SETS
from cnn.hub import CARD_NAME, EXAMPLES_DIR, HUB_PREFIX, WEIGHTS_NAME
from cnn.inference import Classifier
from cnn.wording import ELSEWHERE, HELD_BACK, capitalised, headline, headline_photos, headline_set, none_of, percent

PLOTS = {"curves.png": "Training curves (loss and accuracy per epoch)",
         "confusion.png": "Confusion matrix (rows: true label, columns: the model's answer)"}


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


def title(clf: Classifier, bundled: Path | None = None) -> str:
    """The page's title, from the model: "Animal classifier" for the ten animals it began with, else its Hub
    repo's or folder's name ("my-cats classifier"), else its labels ("Photo classifier: cat, dog, …")."""
    if sorted(clf.labels) == sorted(ITALIAN_TO_ENGLISH.values()):
        return "Animal classifier"
    name = origin(clf, bundled).split(" @ ")[0].removesuffix("/model").split("/")[-1]
    if clf.source.startswith(HUB_PREFIX) or (clf.folder is not None and name != "bundled model"):
        return f"{name} classifier"
    return f"Photo classifier: {', '.join(clf.labels[:3])}{', …' if len(clf.labels) > 3 else ''}"


def header(clf: Classifier, bundled: Path | None = None) -> str:
    """One markdown line: the headline figure (wording.headline, worded as About and the card word it) and
    where the model came from."""
    figure = headline(clf.config.get("metrics", {}))
    return " · ".join(filter(None, [f"**{capitalised(figure)}**" if figure else "",
                                    origin(clf, bundled)]))


def repo_url(clf: Classifier) -> str | None:
    """The model's page on the Hub when it came from there, else None (a local folder has no page)."""
    if not clf.source.startswith(HUB_PREFIX):
        return None
    repo_id = clf.source[len(HUB_PREFIX):].split(" @ ")[0]
    return f"https://huggingface.co/{repo_id}"


def plain_words(clf: Classifier) -> str:
    """The header's second line for a visitor: what it does with a photo of something else, what the header's
    figure was measured on (no second figure), and a link to its Hub repo."""
    metrics = clf.config.get("metrics", {})
    parts = ["When a photo shows none of these, it says so." if clf.unknown_thresholds else
             "It always answers with one of these, even for a photo of something else."]
    photos = headline_photos(metrics)
    if headline_set(metrics):
        parts.append(f"That figure comes from {f'{photos:,} ' if photos else ''}{ELSEWHERE}, never used in its "
                     "training; your own photos may score differently.")
    elif metrics.get("val_accuracy") is not None:
        parts.append(f"That figure comes from {HELD_BACK}; {ELSEWHERE} may score lower.")
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


def table_rows(section: str, first_header: str) -> list[list[str]]:
    """The cells of the markdown table in `section` whose first header cell is `first_header`."""
    rows, inside = [], False
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.startswith("|") else None
        if cells is None:
            inside = False
        elif cells[0] == first_header:
            inside = True
        elif inside and not set(cells[0]) <= set("-: "):
            rows.append(cells)
    return rows


def trained_on(sections: dict[str, str], train_photos: int | None = None) -> str:
    """The card's training sources, as a visitor reads them. With `train_photos` (what the run trained on, in
    config.json since models record it): "It learnt from 18,976 photos from the folder *animals* (1,000 more of
    its photos were held back to measure it)."; an older model: each source's count, held-back photos included."""
    rows = table_rows(sections.get("Training data", ""), "source")
    counts = [int(photos) if photos.isdigit() else None for _source, _revision, photos, *_ in rows]
    # a Hub dataset is already a link; a local folder goes by its name, never its path on the training machine
    places = [f"the Hub dataset {source}" if source.startswith("[") else f"the folder *{Path(source.strip('`')).name}*"
              for source, *_ in rows]
    if not places:
        return ""
    if train_photos is None:
        return "It learnt from " + " and ".join(f"{count:,} photos from {place}" if count is not None else
                                                 f"photos from {place}" for count, place in zip(counts, places)) + "."
    held = sum(counts) - train_photos if None not in counts else 0
    return (f"It learnt from {train_photos:,} photos from {' and '.join(places)}"
            + (f" ({held:,} more of {'its' if len(places) == 1 else 'their'} photos were held back to measure it)."
               if held > 0 else "."))


def _share(cell: str) -> str:
    """A card's precision or recall, whether written as a percent or (older cards) as a fraction."""
    try:
        return cell if cell.endswith("%") else percent(float(cell))
    except ValueError:
        return cell


def per_class_rows(metrics: dict[str, Any], sections: dict[str, str]) -> list[tuple[str, str, str, str]]:
    """Per label: how often it is right when it gives that label, how many photos of it it finds, and how many
    photos there were (the headline's photos from elsewhere when measured there, else the card's held-out split)."""
    measured = metrics.get(f"{headline_set(metrics)}_per_class")
    if measured:
        return [(c, percent(v["precision"]), percent(v["recall"]), str(v["support"])) for c, v in measured.items()]
    rows = table_rows(sections.get("Results", ""), "class")
    return [(row[0], _share(row[1]), _share(row[2]), row[3]) for row in rows if len(row) >= 4]


def training_words(metrics: dict[str, Any], sections: dict[str, str]) -> list[str]:
    """What it learnt from and how long, without the training machine's paths or the raw recipe."""
    words = [trained_on(sections, metrics.get("train_photos"))]
    if metrics.get("best_epoch") and metrics.get("epochs"):
        picked_on = ELSEWHERE if metrics.get("real_val_data") else HELD_BACK
        words.append(f"It trained for {metrics['epochs']} rounds over those photos and keeps the weights of round "
                     f"{metrics['best_epoch']}, the best on {picked_on}.")
    if "outliers_flagged" in metrics:
        words.append("Photos of other things were mixed into its training, so that it can say a photo shows "
                     "none of its labels.")
    return [" ".join(filter(None, words))]


def warning_words(clf: Classifier) -> list[str]:
    """What the page's two warnings mean, with how well they worked on the photos they were set on."""
    m = clf.config.get("metrics", {})
    on = " On photos it never trained on, "
    lines = [f'When its best guess is under {percent(clf.unsure_below)}, the page says *not sure*.'
             + (f"{on}{percent(m['wrong_warned'])} of its wrong answers got a warning and "
                f"{percent(m['right_passed'])} of its right answers passed without one." if "wrong_warned" in m else "")]
    rule = unknown_rule(clf.unknown_thresholds)
    if rule:
        flag = none_of(len(clf.labels))
        text = f"When {rule}, it says *{flag}*"
        caught = ([f"for {percent(m['unseen_outliers_flagged'])} of photos of other things from sources it never saw"]
                  if "unseen_outliers_flagged" in m else
                  [f"for {percent(m['outliers_flagged'])} of photos of other things it never saw"] if "outliers_flagged" in m else [])
        if "unseen_kinds_flagged" in m:   # the figure that predicts photos of other animals (cnn.holdout's kinds)
            caught.append(f"for {percent(m['unseen_kinds_flagged'])} of photos of kinds of animal it never trained on "
                          f"({', '.join(m.get('unseen_kinds_by_kind') or {})})")
        if "val_flagged_unknown" in m:
            wrong = m.get("flagged_were_wrong")
            caught.append(f"wrongly for {percent(m['val_flagged_unknown'])} of photos that show one of its labels"
                          + (f" ({percent(wrong)} of those it would have answered wrongly anyway)" if wrong is not None else ""))
        if caught:
            text += ": it did so " + ", and ".join(caught)
        lines.append(text + ".")
    return lines


def measured_on(metrics: dict[str, Any]) -> list[str]:
    """Each figure with the name of the photos it was measured on (the technical section's words)."""
    sets = [key for key in REAL_SETS if metrics.get(f"{key}_accuracy") is not None]
    words = [f"{percent(metrics[f'{key}_accuracy'])} on *{metrics.get(f'{key}_data', key)}*" for key in sets]
    if metrics.get("val_accuracy") is not None:
        words.append(f"{percent(metrics['val_accuracy'])} on {metrics.get('val_data', HELD_BACK)}")
    return [f"Measured: {'; '.join(words)}."] if words else []


def about_markdown(clf: Classifier) -> str:
    """The "About this model" text: what it knows and learnt from, how often it is right (the header's figure
    first, then per label), what its warnings mean, what it is for, and last what it is (the technical words:
    architecture, size, the names of the photo sets)."""
    metrics = clf.config.get("metrics", {})
    card_file = clf.folder / CARD_NAME if clf.folder else None
    sections = card_sections(card_file.read_text(encoding="utf-8")) if card_file and card_file.is_file() else {}
    weights = clf.folder / WEIGHTS_NAME if clf.folder else None
    size = f", {weights.stat().st_size / 2**20:.1f} MB of weights" if weights and weights.is_file() else ""
    side = clf.image_size
    lines = ["### What it knows", f"{len(clf.labels)} labels: {', '.join(clf.labels)}.", "",
             *training_words(metrics, sections), "", "### How often it is right"]
    figure, photos = headline(metrics), headline_photos(metrics)
    if figure:
        lines.append(capitalised(figure) + (f": {photos:,} photos it never trained on." if photos
                                                             else "."))
    others = [key for key in REAL_SETS if metrics.get(f"{key}_accuracy") is not None and key != headline_set(metrics)]
    lines += [f"On other {ELSEWHERE}: right {percent(metrics[f'{key}_accuracy'])} of the time." for key in others]
    if headline_set(metrics) and metrics.get("val_accuracy") is not None:
        lines.append(f"On {HELD_BACK}: right {percent(metrics['val_accuracy'])} of the time.")
    if not figure:
        lines.append("No accuracy recorded.")
    rows = per_class_rows(metrics, sections)
    if rows:
        lines += ["", "| label | right when it says so | of its photos, found | photos |", "| --- | --- | --- | --- |"]
        lines += [f"| {' | '.join(row)} |" for row in rows]
    lines += ["", "### Its warnings", "\n\n".join(warning_words(clf))]
    lines += ["", "### Intended use and limitations", limitations(len(clf.labels), clf.unsure_below,
                                                                  unknown_rule(clf.unknown_thresholds),
                                                                  metrics.get("unseen_outliers_by_group"))]
    lines += ["", "### What it is",
              f"`{clf.config.get('architecture', '?')}`, a convolutional network trained from scratch (no pretrained "
              f"weights): {clf.num_parameters:,} parameters, {side}×{side} pixel input{size}.", "", *measured_on(metrics)]
    return "\n".join(lines)


def plots(folder: Path | None) -> list[tuple[Path, str]]:
    """The training curves and confusion matrix the model folder holds, with captions."""
    if folder is None:
        return []
    return [(folder / name, caption) for name, caption in PLOTS.items() if (folder / name).is_file()]


def model_examples(clf: Classifier) -> list[Path]:
    """The example photos that came with the model (its folder's or Hub repo's examples/)."""
    return photo_files(clf.folder / EXAMPLES_DIR) if clf.folder else []
