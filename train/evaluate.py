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
from cnn.data import DataError, Listing, load_images, scan_folder
from cnn.engine import predict_probs
from cnn.metrics import calibrate, summarize


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
    p.add_argument("--json", metavar="OUT", help="also write the summary to this JSON file")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.k < 1:
        p.error("--batch-size and --k must be at least 1")
    return args


def label_targets(listing: Listing, labels: list[str]) -> list[int]:
    """For each class of the data folder, its index among the model's labels (case-insensitive)."""
    index = {name.lower(): i for i, name in enumerate(labels)}
    unknown = [c for c in listing.classes if c.lower() not in index]
    if unknown:
        raise DataError(f"class(es) {', '.join(unknown)} in {listing.root} are not labels of this model "
                        f"(it knows: {', '.join(labels)}); remove or rename those folders")
    return [index[c.lower()] for c in listing.classes]


def evaluate(model_id: str, data: str, batch_size: int = 256, k: int = 3, device: str = "auto",
             workers: int = 0, cache_dir: str | None = None) -> dict[str, Any]:
    """Accuracy, top-k accuracy, calibration and per-class results of a model on a labelled folder."""
    folder, source = hub.resolve(model_id)
    model, config = hub.load_pretrained(folder)
    labels = list(config["label_names"])
    pre = config["pretrained_cfg"]
    image_size = pre["input_size"][-1]

    listing = scan_folder(data)
    to_model = torch.tensor(label_targets(listing, labels))
    photos = load_images(listing, round(image_size / pre["crop_pct"]), cache_dir, workers)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)
    probs = predict_probs(model.to(dev), photos.images, image_size, pre["mean"], pre["std"],
                          pre.get("tta_flip", False), dev, batch_size=batch_size)
    probs = calibrate(probs, pre.get("temperature", 1.0))
    targets = to_model[photos.labels]
    summary = summarize(probs, targets, labels)
    top_k = min(k, len(labels))
    hits = (probs.topk(top_k, 1).indices == targets[:, None]).any(1)
    return {"model": source, "data": str(Path(data)), "images": len(targets), "labels": labels, "k": top_k,
            "top_k_accuracy": round(hits.double().mean().item(), 4), **summary}


def format_report(result: dict[str, Any]) -> str:
    """The summary as lines a person reads: totals first, then one line per class."""
    lines = [f"model     {result['model']}", f"data      {result['data']} ({result['images']} photos)",
             f"accuracy  {result['accuracy']:.2%}", f"top-{result['k']:<5} {result['top_k_accuracy']:.2%}",
             f"ECE       {result['ece']:.4f}  (expected calibration error, 0 = confidence matches accuracy)",
             f"not sure  below {result['unsure_below']:.2f} top probability (answers there were mostly wrong)", "",
             f"{'class':<16}{'precision':>10}{'recall':>10}{'support':>9}"]
    for name, row in result["per_class"].items():
        lines.append(f"{name:<16}{row['precision']:>10.2%}{row['recall']:>10.2%}{row['support']:>9d}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.device == "cuda" and not torch.cuda.is_available():
        logging.error("--device cuda was asked for, but PyTorch sees no CUDA GPU")
        return 1
    try:
        result = evaluate(args.model, args.data, args.batch_size, args.k, args.device, args.workers, args.cache_dir)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    except (hub.ModelLoadError, ValueError, OSError) as e:  # DataError is a ValueError
        logging.error("%s", e)
        return 1
    print(format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
