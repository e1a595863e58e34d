"""The GPU check, one command: train the default recipe on a packed copy of the photos and report.

Made for a lent GPU machine (run it within 8 minutes there), and tested on the CPU with a tiny setting:

    python bench/pack_photos.py ../shared/data packed/photos.zip   # here, once: ~57 MiB that travels with the tree
    python bench/gpu_train.py packed/photos.zip                    # there: prints device, images/s, minutes, accuracy
    python bench/gpu_train.py packed/photos.zip --quick            # a tiny CPU run (CI)

It goes through `cnn.engine.fit` exactly as `python -m train` does, with animals-val picking the epoch and
other/ teaching "none of the ten", and prints `NAME VALUE` lines read from the run's metrics.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import zipfile
from pathlib import Path

from common import emit, note

import torch  # noqa: E402

from cnn.config import make_config  # noqa: E402
from cnn.engine import fit  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("packed", type=Path, help="the zip bench/pack_photos.py wrote")
    p.add_argument("--run-dir", default="runs/gpu-check")
    p.add_argument("--epochs", type=int, help="(default: the recipe's)")
    p.add_argument("--image-size", type=int, help="(default: the recipe's)")
    p.add_argument("--quick", action="store_true", help="a tiny run on the CPU: 1 epoch at 32 px, a narrow model")
    args = p.parse_args(argv)
    quick = dict(epochs=1, image_size=32, progressive_from=0, batch_size=32, device="cpu", workers=1,
                 model_args={"widths": [8, 16, 32, 64]}) if args.quick else {}
    overrides = {k: v for k, v in (("epochs", args.epochs), ("image_size", args.image_size)) if v}
    photos = args.packed.with_suffix("")  # packed/photos.zip -> packed/photos/
    with zipfile.ZipFile(args.packed) as pack:  # our own pack: names were written by pack_photos.py
        pack.extractall(photos)
    cfg = make_config(data=str(photos / "animals"), val_data=str(photos / "animals-val"),
                      outliers=str(photos / "other"), run_dir=args.run_dir, **{**quick, **overrides})
    device = "cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu"
    note(f"training on {device} ({torch.cuda.get_device_name() if device == 'cuda' else 'CPU'})")
    start = time.perf_counter()
    run = fit(cfg, command=" ".join(["python bench/gpu_train.py"] + (argv if argv is not None else sys.argv[1:])))
    minutes = (time.perf_counter() - start) / 60
    found = json.loads((run / "model" / "config.json").read_text())["metrics"]
    history = json.loads((run / "metrics.json").read_text())["history"]
    emit("cuda", int(device == "cuda"))
    emit("images_per_s", statistics.median(h["images_per_s"] for h in history[1:] or history))  # past the warm-up
    emit("minutes", minutes)
    emit("epochs", len(history))
    emit("real_val_accuracy", found["real_val_accuracy"])
    emit("val_accuracy", found["val_accuracy"])
    emit("outliers_flagged", found["outliers_flagged"])
    emit("val_flagged_unknown", found["val_flagged_unknown"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
