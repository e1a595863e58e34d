"""The model card (README.md of a model folder): Hub metadata, results, how it was trained."""
from __future__ import annotations

from pathlib import Path
from typing import Any

CARD = """---
library_name: pytorch
pipeline_tag: image-classification
license: mit
tags:
- image-classification
- animals
- from-scratch
- cnn
datasets:
- animals-10{hub_datasets}
metrics:
- accuracy
model-index:
- name: {name}
  results:
  - task:
      type: image-classification
    dataset:
      name: {dataset}
      type: imagefolder
      split: validation
    metrics:
    - type: accuracy
      value: {accuracy}
      name: {accuracy_name}
---

# {name}: an animal photo classifier trained from scratch

A `{arch}` convolutional network ({params:,} parameters, {size}×{size} input) trained from scratch,
with no pretrained weights, to tell apart: {labels}.

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

```bash
{command}
```

Recipe: {recipe}.

## Use

```python
from cnn import Classifier
clf = Classifier.from_pretrained("{repo_hint}")
print(clf.predict("photo.jpg", k=3))   # [(label, probability), ...]
```

## Intended use and limitations

A teaching and demo model: it recognises the {n_classes} classes above in ordinary photos where the animal
is the main subject. {unknown_note} A low top probability means "not sure". It was trained on a small,
uneven photo set (thumbnails and web photos), so accuracy on your own photos may be lower than the figures
above; do not use it for decisions that matter.
"""


def results(m: dict[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """The card's results: a sentence on what was measured, and (metric, value) rows from config["metrics"]."""
    real = "real_val_accuracy" in m
    intro = (f"Measured on **{m['real_val_data']}**, a separate set of real photos never trained on (it picked the "
             f"best epoch and calibrated the probabilities), and on {m['val_data']}." if real else
             f"Measured on {m['val_data']}.")
    rows = []
    if real:
        rows.append((f"top-1 accuracy, {m['real_val_data']} (real photos)", f"{100 * m['real_val_accuracy']:.1f} %"))
    rows += [("top-1 accuracy, held-out split" if real else "top-1 accuracy", f"{100 * m['val_accuracy']:.1f} %"),
             (f"expected calibration error on {m['calibrated_on']}, before → after temperature scaling",
              f"{m['val_ece_before_calibration']:.3f} → {m['val_ece']:.3f}"),
             ('"not sure" below top probability', f"{m['unsure_below']:.2f}"),
             ("wrong answers that get a warning / right answers that pass without one",
              f"{100 * m['wrong_warned']:.0f} % / {100 * m['right_passed']:.0f} %")]
    if m.get("unknown_below"):
        rows.append(('"none of the ten" below top probability', f"{m['unknown_below']:.3f}"))
        if "outliers_flagged" in m:
            rows.append(('held-out photos of none of the labels flagged "none of the ten"',
                         f"{100 * m['outliers_flagged']:.0f} %"))
        rows.append((f"{m['calibrated_on']} photos wrongly flagged", f"{100 * m['val_flagged_unknown']:.0f} %"))
    rows.append(("best epoch / epochs", f"{m['best_epoch']} / {m['epochs']}"))
    return intro, rows


def write_model_card(folder: str | Path, config: dict[str, Any], run_metrics: dict[str, Any],
                     train: dict[str, Any], command: str, repo_hint: str = "USER/NAME",
                     sources: list[dict[str, Any]] | None = None) -> Path:
    """Write README.md into a model folder from its config (whose `metrics` hold the final figures), the run's
    metrics.json and its data sources (cnn.sources.record: a Hub dataset is listed with its commit, and in the
    metadata's `datasets`)."""
    m = config["metrics"]
    real = "real_val_accuracy" in m
    per_class = m["real_val_per_class"] if real else run_metrics["per_class"]
    class_rows = "\n".join(f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['support']} |"
                           for c, v in per_class.items())
    intro, rows = results(m)
    recipe = (f"{train['optimizer']} lr {train['lr']} ({train['schedule']} schedule), batch {train['batch_size']}, "
              f"weight decay {train['weight_decay']}, label smoothing {train['label_smoothing']}, "
              f"EMA {train['ema_decay']}, balanced sampling {train['balanced_sampling']}, "
              f"random-resized-crop scale {tuple(train['scale'])}, flip {train['flip_p']}, "
              f"rotation ±{train['rotation']}°, colour jitter {train['color_jitter']}, flip TTA {train['tta_flip']}")
    if train.get("progressive_from"):
        recipe += f", progressive resizing {train['progressive_from']} → {train['image_size']} px"
    if train.get("outliers"):
        recipe += (f", outlier exposure on {Path(train['outliers']).name} (weight {train['outlier_weight']}, "
                   f"{train['outlier_holdout']:.0%} held out)")
    unknown_note = ('When the top probability is under the "none of the ten" threshold above, the photo looks '
                    "like none of the labels and `Classifier.is_known` returns False." if m.get("unknown_below") else
                    "It always answers with one of these labels, even for a photo of something else.")
    sources = sources or [{"spec": spec, "type": "folder"} for spec in train["data"]]
    source_rows = "\n".join(f"| `{row['spec']}` | {row.get('commit') or '(local folder)'} | {row.get('photos', '?')} |"
                            for row in sources)
    hub_datasets = "".join(f"\n- {row['repo_id']}" for row in sources if row.get("repo_id"))
    names = [row.get("repo_id") or Path(row["spec"]).name for row in sources]
    accuracy = m["real_val_accuracy"] if real else m["val_accuracy"]
    path = Path(folder) / "README.md"
    path.write_text(CARD.format(
        name=Path(folder).resolve().parent.name if Path(folder).name == "model" else Path(folder).name,
        dataset=m["real_val_data"] if real else " + ".join(n for n in names if n) or "images", accuracy=accuracy,
        accuracy_name=f"accuracy on {m['real_val_data']}" if real else "accuracy on the validation split",
        arch=config["architecture"], params=config["num_parameters"], size=config["pretrained_cfg"]["input_size"][-1],
        labels=", ".join(config["label_names"]), n_classes=config["num_classes"], results_intro=intro,
        metric_rows="\n".join(f"| {k} | {v} |" for k, v in rows),
        per_class_set=m["real_val_data"] if real else "the held-out split", class_rows=class_rows,
        unknown_note=unknown_note, source_rows=source_rows, hub_datasets=hub_datasets, command=command, recipe=recipe,
        repo_hint=repo_hint))
    return path
