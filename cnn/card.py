"""The model card (README.md of a model folder): Hub metadata, results, how it was trained.

Everything it says comes from the run: its labels, its data sources (cnn.sources.record) and its figures,
so a model trained on someone's own three folders is described as that, not as the bundled one. The
metadata is written by huggingface_hub's ModelCardData: `datasets:` lists only the Hub datasets the run
read, and the model-index names the photos its accuracy was measured on (a Hub id and commit, or a local
folder by its name).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from . import DISTRIBUTION, REPOSITORY
from .holdout import REAL_SETS
from .ood import thresholds_from_config
from .wording import capitalised, headline, none_of, percent

HUB_DATASETS = "https://huggingface.co/datasets/"
REPO_PLACEHOLDER = "USER/NAME"     # the usage snippet's repo id until the model is pushed (cnn.hub fills it in)
SNIPPET_REPO = re.compile(r'(Classifier\.from_pretrained\(")[^"]*("\))')
TITLE = re.compile(r"^# .*$", re.MULTILINE)   # the body's first heading: the model's name
TAGS = ["image-classification", "pytorch", "cnn", "from-scratch"]
OPTIMIZERS = {"sgd": "SGD with Nesterov momentum", "adam": "Adam", "adamw": "AdamW"}

BODY = """
# {name}

A photo classifier that tells apart {n_classes} labels: {labels}. It is a `{arch}` convolutional network
({params:,} parameters, {size}×{size} input) trained from scratch, with no pretrained weights.

## Results

{results_intro}

| metric | value |
| --- | --- |
{metric_rows}

Per class, on {per_class_set}:

| class | precision | recall | photos |
| --- | --- | --- | --- |
{class_rows}

![training curves](curves.png)

![confusion matrix](confusion.png)

## Training data

| source | revision | photos |
| --- | --- | --- |
{source_rows}

## Training

{recipe}

```bash
{command}
```

## Use

With the `cnn` package of the project that trained it, [{distribution}]({repository}):

```bash
pip install "git+{repository}"
```

```python
from cnn import Classifier
clf = Classifier.from_pretrained("{repo_id}")
print(clf.predict("photo.jpg", k=3))   # [(label, probability), ...]
```

## Intended use and limitations

{limitations}
"""


def unknown_rule(thresholds: dict[str, float]) -> str:
    """When the model says a photo shows none of its labels (cnn.ood's union of scores, as Classifier.
    unknown_thresholds holds them), in words; '' when it never does."""
    rules = []
    below = 1 - thresholds.get("probability", 1.0)
    if below > 0:
        rules.append(f"its best guess is under {percent(below)}")
    if "energy" in thresholds:
        rules.append("none of its labels scores high")
    if "knn" in thresholds:
        rules.append("the photo looks unlike all of its training photos")
    if "probe" in thresholds:
        rules.append("the photo looks more like the photos of other things it was shown than like its labels")
    return " or ".join(rules)


def limitations(n_classes: int, unsure_below: float, rule: str,
                unseen_by_group: dict[str, dict[str, Any]] | None = None) -> str:
    """What the model is for and where its answers stop being worth much (the card's and the page's text);
    `rule` is unknown_rule's, `unseen_by_group` the metrics' "unseen_outliers_by_group" (what the rule missed)."""
    unknown = (f'When {rule}, the photo looks like none of its labels and it says so ("{none_of(n_classes)}"). '
               if rule else "It always answers with one of its labels, even for a photo of something else. ")
    if rule and unseen_by_group:
        missed = " and ".join(f"{percent(1 - row['flagged'])} of the {group.replace('_', ' ')}"
                              for group, row in unseen_by_group.items())
        unknown += (f"Of photos of none of its labels from sources it never saw, it still gave one of its labels to "
                    f"{missed}. ")
    return (f"A teaching and demo model: it knows only its {n_classes} labels, in ordinary photos where the subject "
            f"fills much of the frame. {unknown}When its best guess is under {percent(unsure_below)}, it is "
            '"not sure". Accuracy on your own photos may be lower than the figures here; do not use it for '
            "decisions that matter.")


def results(m: dict[str, Any], n_classes: int) -> tuple[str, list[tuple[str, str]]]:
    """The card's results: a sentence on what was measured, and (metric, value) rows from config["metrics"]."""
    real = "real_val_accuracy" in m
    figure = headline(m)
    intro = (f"{capitalised(figure)}. " if real else "") + (
             f"Measured on **{m['real_val_data']}**, a separate set of real photos never trained on (it picked the "
             f"best epoch and calibrated the probabilities), and on {m['val_data']}." if real else
             f"Measured on {m['val_data']}.")
    rows = []
    rows += [(f"top-1 accuracy, {m[f'{key}_data']} (real photos)", percent(m[f"{key}_accuracy"]))
             for key in REAL_SETS if f"{key}_accuracy" in m]
    rows += [("top-1 accuracy, held-out split" if real else "top-1 accuracy", percent(m["val_accuracy"])),
             (f"expected calibration error on {m['calibrated_on']}, before → after temperature scaling",
              f"{m['val_ece_before_calibration']:.3f} → {m['val_ece']:.3f}"),
             ('"not sure" below top probability', percent(m["unsure_below"])),
             *softening_rows(m),
             ("wrong answers that get a warning / right answers that pass without one",
              f"{percent(m['wrong_warned'])} / {percent(m['right_passed'])}")]
    flag = none_of(n_classes)
    if m.get("unknown_below"):
        rows.append((f'"{flag}" below top probability', percent(m["unknown_below"])))
    if "unknown_energy_above" in m:
        rows.append((f'"{flag}" above energy (no label scores high)', f"{m['unknown_energy_above']:.3f}"))
    if "unknown_distance_above" in m:
        rows.append((f'"{flag}" above feature distance to the training photos', f"{m['unknown_distance_above']:.3f}"))
    if "unknown_probe_above" in m:
        rows.append((f'"{flag}" above the probe\'s score (photos of other things against its own)', f"{m['unknown_probe_above']:.3f}"))
    if unknown_rule(thresholds_from_config(m)):
        if "outliers_flagged" in m:
            rows.append((f'held-out photos of none of the labels flagged "{flag}" (sources it trained on)',
                         percent(m["outliers_flagged"])))
        unseen = m.get("unseen_outliers_by_group") or {}
        rows += [(f'photos of none of the labels from sources it never saw flagged "{flag}": {group} '
                  f'({row["photos"]} photos)', percent(row["flagged"])) for group, row in unseen.items()]
        if "unseen_kinds_flagged" in m:
            kinds = m.get("unseen_kinds_by_kind") or {}
            rows.append((f'photos of kinds of animal it never trained on flagged "{flag}" '
                         f'({", ".join(kinds)}: {sum(row["photos"] for row in kinds.values())} photos)',
                         percent(m["unseen_kinds_flagged"])))
        rows.append((f"{m['calibrated_on']} photos wrongly flagged", percent(m["val_flagged_unknown"])))
        if m.get("flagged_were_wrong") is not None:
            rows.append(("of those, answered wrongly anyway (the flag costs them nothing)", percent(m["flagged_were_wrong"])))
    rows.append(("best epoch / epochs", f"{m['best_epoch']} / {m['epochs']}"))
    return intro, rows


def softening_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    """The worse set's accuracy under each test-time softening the export tried (no row when it tried one)."""
    tried = m.get("accuracy_by_blur_sigma", {})
    if len(tried) < 2:
        return []
    measured = "the worse real-photo set" if any(f"{key}_accuracy" in m for key in REAL_SETS) else "the held-out split"
    return [(f"top-1 accuracy by test-time softening (Gaussian blur σ, px), {measured}",
             " · ".join(f"σ {blur}: {percent(accuracy)}" for blur, accuracy in tried.items()))]


def recipe(train: dict[str, Any], n_classes: int, blur_sigma: float = 0.0) -> str:
    """How the run trained and how the model reads a photo in use, in sentences (the exact values follow in the
    command)."""
    schedule = "warm-up, then cosine decay" if train["schedule"] == "onecycle" else "constant"
    words = [f"{train['epochs']} epochs of {OPTIMIZERS.get(train['optimizer'], train['optimizer'])} (peak learning "
             f"rate {train['lr']}, {schedule}) on batches of {train['batch_size']} photos, weight decay "
             f"{train['weight_decay']}, label smoothing {train['label_smoothing']}."]
    if train["balanced_sampling"]:
        words.append("Every label is drawn equally often, however many photos it has.")
    low, high = train["scale"]
    seen = [f"a random crop of {low:.0%}–{high:.0%} of the photo"]
    if train["flip_p"]:
        seen.append(f"mirrored {train['flip_p']:.0%} of the time")
    if train["rotation"]:
        seen.append(f"turned by up to {train['rotation']:g}°")
    if train["color_jitter"]:
        seen.append(f"with brightness, contrast and saturation changed by up to {train['color_jitter']:.0%}")
    if train.get("grayscale"):
        seen.append(f"in grey {train['grayscale']:.0%} of the time")
    if train.get("erasing"):
        seen.append(f"with a random rectangle of it replaced by noise {train['erasing']:.0%} of the time")
    words.append("Each time a photo is used, the model sees " + ", ".join(seen) + ".")
    if train.get("progressive_from"):
        words.append(f"Photos grow from {train['progressive_from']} to {train['image_size']} px over the first "
                     "three quarters of the run.")
    if train.get("ema_decay"):
        words.append(f"The weights kept are a running average (decay {train['ema_decay']}).")
    if train.get("outliers"):
        held = (f"; {train['outlier_holdout']:.0%} of them are held out to measure \"{none_of(n_classes)}\""
                if train["outlier_holdout"] else "")
        words.append(f"Photos of none of the labels (*{Path(train['outliers']).name}*) are mixed into every batch and "
                     f"trained towards no answer (weight {train['outlier_weight']}){held}.")
    if train.get("synthetic_outliers"):
        made = "its photos cut into tiles and shuffled, and smooth colour noise"
        words.append(f"{train['synthetic_outliers']:.0%} of those outliers are made from the batch itself ({made})."
                     if train.get("outliers") else
                     f"Photos made from each batch itself ({made}) are mixed into it and trained towards no answer "
                     f"(weight {train['outlier_weight']}).")
    if train.get("teacher"):
        words.append(f"It also learnt from the answers of a teacher model, *{teacher_name(train['teacher'])}* "
                     f"(distillation: {train['distill_weight']:.0%} of the loss on the labelled photos, temperature "
                     f"{train['distill_temperature']:g}).")
    if train["tta_flip"]:
        words.append("In use, each photo is also read mirrored and the two answers are averaged.")
    if blur_sigma:
        words.append(f"Before it is read, each photo is softened by a Gaussian blur of σ {blur_sigma:g} px: of the "
                     "softenings tried at export, the one under which the real photos were answered best.")
    return " ".join(words)


def teacher_name(spec: str) -> str:
    """A teacher as a reader may see it: a Hub repo id as it is, a local folder by its name (a run's, for the
    model/ folder inside it), never its path."""
    path = Path(spec)
    if not path.is_dir():
        return spec
    return path.parent.name if path.name == "model" else path.name


def source_name(row: dict[str, Any]) -> str:
    """A source as a reader may see it: a Hub dataset's id, or a local folder's name (never its path)."""
    if row.get("repo_id"):
        sub = f"/{row['subfolder']}" if row.get("subfolder") else ""
        return f"[{row['repo_id']}]({HUB_DATASETS}{row['repo_id']}){sub}"
    return f"`{Path(row['spec']).name}`"


def source_rows(sources: list[dict[str, Any]]) -> str:
    """The Training data table's rows: a Hub dataset with the revision asked for and the commit it was."""
    rows = []
    for row in sources:
        revision = (f"{row['revision'] + ' = ' if row.get('revision') else ''}{row['commit']}" if row.get("repo_id")
                    else "(local folder)")
        rows.append(f"| {source_name(row)} | {revision} | {row.get('photos', '?')} |")
    return "\n".join(rows)


def evaluated_on(m: dict[str, Any], sources: list[dict[str, Any]]) -> dict[str, str]:
    """The model-index's dataset: the Hub dataset (id and commit) the figure was measured on, or the local
    folder by its name."""
    if "real_val_accuracy" in m:
        return {"dataset_type": m["real_val_data"], "dataset_name": f"{m['real_val_data']} (local folder)"}
    hub = [row for row in sources if row.get("repo_id")]
    if len(hub) == len(sources) == 1:
        return {"dataset_type": hub[0]["repo_id"], "dataset_name": hub[0]["repo_id"],
                "dataset_revision": hub[0]["commit"]}
    names = " + ".join(row["repo_id"] if row.get("repo_id") else f"{Path(row['spec']).name} (local folder)"
                       for row in sources)
    return {"dataset_type": "+".join(row.get("repo_id") or Path(row["spec"]).name for row in sources),
            "dataset_name": f"held-out split of {names}"}


def front_matter(name: str, config: dict[str, Any], sources: list[dict[str, Any]]) -> str:
    """The card's YAML metadata, through huggingface_hub (which also checks the model-index)."""
    from huggingface_hub import EvalResult, ModelCardData

    m = config["metrics"]
    real = "real_val_accuracy" in m
    result = EvalResult(task_type="image-classification", task_name="Image classification", dataset_split="validation",
                        metric_type="accuracy", metric_value=m["real_val_accuracy"] if real else m["val_accuracy"],
                        metric_name=f"accuracy on {m['real_val_data']}" if real else "accuracy on the validation split",
                        **evaluated_on(m, sources))
    datasets = sorted({row["repo_id"] for row in sources if row.get("repo_id")})
    data = ModelCardData(pipeline_tag="image-classification", license="mit",
                         tags=TAGS + [config["architecture"].replace("_", "-")], datasets=datasets or None,
                         metrics=["accuracy"], model_name=name, eval_results=[result], library_name=DISTRIBUTION)
    return f"---\n{data.to_yaml()}\n---\n"


def with_repo_id(text: str, repo_id: str) -> str:
    """The card as cnn.hub uploads it to `repo_id`: its usage snippet, its title and its model-index name are the
    repo's, not the local folder's (the bundled card says "bundled"); the local card is left as it is."""
    from huggingface_hub import ModelCard

    card = ModelCard(text)
    name = repo_id.split("/")[-1]
    head = text[:len(text) - len(card.text)]         # the front matter as written ('' where there is none)
    if card.data.eval_results:                       # the model-index is named after the model
        card.data.model_name = name
        head = f"---\n{card.data.to_yaml()}\n---\n"
    body = TITLE.sub(lambda _: f"# {name}", card.text, count=1)
    return head + SNIPPET_REPO.sub(lambda match: f"{match[1]}{repo_id}{match[2]}", body)


def write_model_card(folder: str | Path, config: dict[str, Any], run_metrics: dict[str, Any],
                     train: dict[str, Any], command: str, repo_hint: str = REPO_PLACEHOLDER,
                     sources: list[dict[str, Any]] | None = None) -> Path:
    """Write README.md into a model folder from its config (whose `metrics` hold the final figures), the run's
    metrics.json, its training configuration and its data sources (cnn.sources.record)."""
    m = config["metrics"]
    real = "real_val_accuracy" in m
    n_classes = config["num_classes"]
    per_class = m["real_val_per_class"] if real else run_metrics["per_class"]
    class_rows = "\n".join(f"| {c} | {percent(v['precision'])} | {percent(v['recall'])} | {v['support']} |"
                           for c, v in per_class.items())
    intro, rows = results(m, n_classes)
    sources = sources or [{"spec": spec, "type": "folder"} for spec in train["data"]]
    folder = Path(folder)
    name = repo_hint.split("/")[-1] if repo_hint != REPO_PLACEHOLDER else (
        folder.resolve().parent.name if folder.name == "model" else folder.name)
    body = BODY.format(
        name=name, n_classes=n_classes, labels=", ".join(config["label_names"]), arch=config["architecture"],
        params=config["num_parameters"], size=config["pretrained_cfg"]["input_size"][-1], results_intro=intro,
        metric_rows="\n".join(f"| {k} | {v} |" for k, v in rows),
        per_class_set=m["real_val_data"] if real else "the held-out split", class_rows=class_rows,
        source_rows=source_rows(sources),
        recipe=recipe(train, n_classes, config["pretrained_cfg"].get("blur_sigma", 0.0)), command=command, repo_id=repo_hint,
        distribution=DISTRIBUTION, repository=REPOSITORY,
        limitations=limitations(n_classes, m["unsure_below"], unknown_rule(thresholds_from_config(m)),
                                m.get("unseen_outliers_by_group")))
    path = folder / "README.md"
    path.write_text(front_matter(name, config, sources) + body)
    return path
