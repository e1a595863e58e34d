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
---

# {name}: an animal photo classifier trained from scratch

A `{arch}` convolutional network ({params:,} parameters, {size}×{size} input) trained from scratch,
with no pretrained weights, to tell apart: {labels}.

## Results (held-out validation split, {n_val} photos)

| metric | value |
| --- | --- |
| top-1 accuracy | {accuracy_pct:.1f} % |
| expected calibration error (after temperature scaling, T = {temperature:.2f}; before: {ece_raw:.3f}) | {ece:.3f} |
| "not sure" below (answers under this top probability were right less than half the time) | {unsure:.2f} |
| epochs | {epochs} |

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
is the main subject. It always answers with one of these labels, even for a photo of something else, so
treat a low top probability as "not sure". It was trained on a small, uneven photo set (thumbnails and web
photos), so accuracy on your own photos may be lower than the validation figure; do not use it for
decisions that matter.
"""


def write_model_card(folder: str | Path, config: dict[str, Any], metrics: dict[str, Any],
                     train: dict[str, Any], command: str, repo_hint: str = "USER/NAME",
                     sources: list[dict[str, Any]] | None = None) -> Path:
    """Write README.md into a model folder from its config, the run's final metrics and its data sources
    (cnn.sources.record: a Hub dataset is listed with its commit, and in the metadata's `datasets`)."""
    per_class = metrics.get("per_class", {})
    rows = "\n".join(f"| {c} | {v['precision']:.3f} | {v['recall']:.3f} | {v['support']} |"
                     for c, v in per_class.items())
    recipe = (f"{train['optimizer']} lr {train['lr']} ({train['schedule']} schedule), batch {train['batch_size']}, "
              f"weight decay {train['weight_decay']}, label smoothing {train['label_smoothing']}, "
              f"EMA {train['ema_decay']}, balanced sampling {train['balanced_sampling']}, "
              f"random-resized-crop scale {tuple(train['scale'])}, flip {train['flip_p']}, "
              f"rotation ±{train['rotation']}°, colour jitter {train['color_jitter']}, flip TTA {train['tta_flip']}")
    sources = sources or [{"spec": spec, "type": "folder"} for spec in train["data"]]
    source_rows = "\n".join(f"| `{row['spec']}` | {row.get('commit') or '(local folder)'} | {row.get('photos', '?')} |"
                            for row in sources)
    hub_datasets = "".join(f"\n- {row['repo_id']}" for row in sources if row.get("repo_id"))
    names = [row.get("repo_id") or Path(row["spec"]).name for row in sources]
    accuracy = metrics.get("best_val_accuracy", 0.0)
    path = Path(folder) / "README.md"
    path.write_text(CARD.format(
        name=Path(folder).resolve().parent.name if Path(folder).name == "model" else Path(folder).name,
        dataset=" + ".join(n for n in names if n) or "images", accuracy=accuracy, accuracy_pct=100 * accuracy,
        arch=config["architecture"], params=config["num_parameters"], size=config["pretrained_cfg"]["input_size"][-1],
        labels=", ".join(config["label_names"]), n_classes=config["num_classes"],
        n_val=sum(v["support"] for v in per_class.values()), ece=metrics.get("ece", float("nan")),
        unsure=metrics.get("unsure_below", float("nan")),
        temperature=config["pretrained_cfg"].get("temperature", 1.0),
        ece_raw=metrics.get("val_ece_before_calibration", metrics.get("ece", float("nan"))),
        epochs=metrics.get("epochs", 0), class_rows=rows, source_rows=source_rows, hub_datasets=hub_datasets,
        command=command, recipe=recipe, repo_hint=repo_hint))
    return path
