"""python -m train.evaluate --model MODEL --data DIR: score a trained model on a labelled folder.

MODEL is a model folder (e.g. runs/NAME/model) or a Hub repo id ('user/name[@revision]'). DIR has
one sub-folder of photos per class, like the training data; Animals-10's Italian folder names are
read as English labels, and it may hold only some of the model's classes. Photos go through the
same decoded-image cache, centre crop and flip test-time augmentation as validation in training.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

from cnn import hub
from cnn.data import load_images, map_labels, scan_folder, scan_photos
from cnn.engine import predict_probs
from cnn.inference import Classifier
from cnn.metrics import calibrate, flag_rates, summarize


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="model folder (config.json + model.safetensors) or Hub repo id")
    p.add_argument("--data", required=True, help="folder with one sub-folder of photos per class")
    p.add_argument("--batch-size", type=int, default=256, help="photos per forward pass (default 256)")
    p.add_argument("--k", type=int, default=3, help="also report top-k accuracy (default 3)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="(default auto)")
    p.add_argument("--workers", type=int, default=0, help="processes that decode photos (default: all cores)")
    p.add_argument("--cache-dir", help="decoded-photo cache (default $XDG_CACHE_HOME/cnn-animals)")
    p.add_argument("--outliers", metavar="DIR",
                   help="also report how many photos of this folder (none of the model's labels) are flagged")
    p.add_argument("--json", metavar="OUT", help="also write the summary to this JSON file")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.k < 1:
        p.error("--batch-size and --k must be at least 1")
    return args


def evaluate(model_id: str, data: str, batch_size: int = 256, k: int = 3, device: str = "auto",
             workers: int = 0, cache_dir: str | None = None, outliers: str | None = None) -> dict[str, Any]:
    """Accuracy, top-k accuracy, calibration, per-class results and the app's warnings ("not sure", "none of
    the ten") of a model on a labelled folder, and optionally on a folder of photos that are none of its labels."""
    clf = Classifier.from_pretrained(model_id)
    labels = clf.labels
    listing = scan_folder(data)
    to_model = torch.tensor(map_labels(listing, labels))
    photos = load_images(listing, clf.resize_side, cache_dir, workers)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)

    def probs_of(images: torch.Tensor) -> torch.Tensor:
        raw = predict_probs(clf.model.to(dev), images, clf.image_size, clf.mean, clf.std, clf.tta_flip, dev,
                            batch_size=batch_size)
        return calibrate(raw, clf.temperature)

    probs = probs_of(photos.images)
    targets = to_model[photos.labels]
    summary = summarize(probs, targets, labels)
    outlier_probs = (probs_of(load_images(scan_photos(outliers), clf.resize_side, cache_dir, workers).images)
                     if outliers else None)
    warnings = flag_rates(probs, targets, clf.unsure_below, clf.unknown_below, outlier_probs)
    top_k = min(k, len(labels))
    hits = (probs.topk(top_k, 1).indices == targets[:, None]).any(1)
    return {"model": clf.source, "data": str(Path(data)), "images": len(targets), "labels": labels, "k": top_k,
            "top_k_accuracy": round(hits.double().mean().item(), 4), **summary, "warnings": warnings}


def format_report(result: dict[str, Any]) -> str:
    """The summary as lines a person reads: totals first, then one line per class."""
    lines = [f"model     {result['model']}", f"data      {result['data']} ({result['images']} photos)",
             f"accuracy  {result['accuracy']:.2%}", f"top-{result['k']:<5} {result['top_k_accuracy']:.2%}",
             f"ECE       {result['ece']:.4f}  (expected calibration error, 0 = confidence matches accuracy)",
             f"not sure  below {result['unsure_below']:.2f} top probability on these photos (answers there were mostly wrong)",
             *warning_lines(result["warnings"]), "",
             f"{'class':<16}{'precision':>10}{'recall':>10}{'support':>9}"]
    for name, row in result["per_class"].items():
        lines.append(f"{name:<16}{row['precision']:>10.2%}{row['recall']:>10.2%}{row['support']:>9d}")
    return "\n".join(lines)


def warning_lines(w: dict[str, float]) -> list[str]:
    """What the app's warnings, at the model's own thresholds, do on these photos."""
    lines = [f"warnings  at the model's thresholds (not sure < {w['unsure_below']:.2f}, none of the ten < "
             f"{w['unknown_below']:.3f}): {w['wrong_warned']:.0%} of wrong answers warned, {w['right_passed']:.0%} "
             f"of right ones pass; accuracy without a warning {w['accuracy_when_confident']:.2%}",
             f"          {w['val_flagged_unknown']:.1%} of these photos flagged as none of the ten"]
    if "outliers_flagged" in w:
        lines.append(f"outliers  {w['outliers_flagged']:.1%} flagged as none of the ten, {w['outliers_warned']:.1%} "
                     "get a warning of either kind")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.device == "cuda" and not torch.cuda.is_available():
        logging.error("--device cuda was asked for, but PyTorch sees no CUDA GPU")
        return 1
    try:
        result = evaluate(args.model, args.data, args.batch_size, args.k, args.device, args.workers, args.cache_dir,
                          args.outliers)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    except (hub.ModelLoadError, ValueError, OSError) as e:  # DataError is a ValueError
        logging.error("%s", e)
        return 1
    print(format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
