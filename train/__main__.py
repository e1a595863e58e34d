"""python -m train --data DIR [--data DIR_OR_HUB_DATASET ...] [options]: train a classifier from scratch
and write a run folder.

Several --data sources are merged by class name: local folders, and Hub dataset repos written as
hf://datasets/user/name[@revision][/subfolder] (fetched through the Hugging Face cache, images only).

Defaults live in cnn.config.TrainConfig; every flag here only overrides them.
"""
from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
from pathlib import Path

from cnn.config import PRESETS, TrainConfig, make_config
from cnn.hub import MAX_BLUR_SIGMA, blur_sigma_ok
from cnn.models import list_models


def model_arg(text: str) -> tuple[str, object]:
    """KEY=VALUE, the value a Python literal (`depths=(1,2,2,1)`, `dropout=0.3`): timm's --model-kwargs shape,
    read with ast.literal_eval, which evaluates no code."""
    key, sep, value = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(f"{key}: {value!r} is not a Python literal (a number, tuple, string)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", action="append", metavar="SOURCE",
                   help="folder with one sub-folder of photos per class (e.g. Animals-10's raw-img), or split "
                        "into train/ + test/ or validation/ folders of them; a .zip, a .parquet or an image folder "
                        "with metadata.csv (read with `datasets`); or a Hub dataset "
                        "hf://datasets/user/name[@revision][/subfolder][?split=train]; repeat to merge several")
    p.add_argument("--val-data", metavar="DIR",
                   help="a separate folder of photos like those the model will see (e.g. larger web photos): picks "
                        "the best epoch and calibrates the probabilities; the random split is still reported "
                        "(default: the --data source's own validation split, else its test split, if it has one)")
    p.add_argument("--holdout-sources", metavar="JSON",
                   help="never train on the sources this file names (e.g. train/held_out_sources.json; needs the "
                        "data's sources.csv): their photos are a second real-photo validation set, and the best epoch "
                        "is picked by the worse of the two real-photo figures")
    p.add_argument("--kind-fold", type=int, metavar="N",
                   help="the fold of that file's kinds of outlier photo (its 'kind_folds') that is never trained on: "
                        f"'none of the ten' is measured on them; run each fold to measure every kind (default {d.kind_fold})")
    p.add_argument("--outliers", metavar="DIR",
                   help="photos that are none of the classes (any layout): part trains the model to say so "
                        "(outlier exposure), part measures it; sets the 'none of the ten' threshold")
    p.add_argument("--synthetic-outliers", type=float, metavar="SHARE",
                   help="share of the outlier slots filled with photos made from the batch (shuffled tiles, smooth "
                        f"noise; cnn.synthetic), all of them without --outliers (default {d.synthetic_outliers})")
    p.add_argument("--outlier-holdout", type=float, metavar="SHARE",
                   help="share of the outlier photos (of sources not held out) kept aside to measure 'none of the "
                        f"ten' instead of training it (default {d.outlier_holdout})")
    p.add_argument("--detector", metavar="SCORES",
                   help="'none of the ten': cnn.ood's scores joined by + (probability, energy, knn; "
                        f"default {d.detector})")
    p.add_argument("--unknown-rate", type=float, metavar="SHARE",
                   help="share of real animal photos 'none of the ten' may wrongly flag: its threshold is set there "
                        f"(default {d.unknown_rate})")
    p.add_argument("--blur-sigmas", type=float, nargs="+", metavar="SIGMA",
                   help="test-time softening tried at export (Gaussian blur, px; 0 = none): the one under which the "
                        "worse real-photo set is most accurate is kept (default "
                        f"{' '.join(f'{b:g}' for b in d.blur_sigmas)})")
    p.add_argument("--preset", default="default", choices=sorted(PRESETS),
                   help="'tutorial' reproduces the tutorial's basic_cnn recipe for comparison")
    p.add_argument("--arch", choices=list_models(), help=f"architecture (default {d.arch})")
    p.add_argument("--model-args", nargs="+", type=model_arg, metavar="KEY=VALUE",
                   help="keyword arguments of the architecture, e.g. depths='(1,2,2,1)' widths='(40,80,160,320)'")
    p.add_argument("--epochs", type=int, help=f"(default {d.epochs})")
    p.add_argument("--image-size", type=int, help=f"side of the square the model sees (default {d.image_size})")
    p.add_argument("--progressive-from", type=int, metavar="PX",
                   help="progressive resizing: start at this side and grow to --image-size (default off)")
    p.add_argument("--batch-size", type=int, help=f"per GPU/process (default {d.batch_size})")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default {d.lr})")
    p.add_argument("--weight-decay", type=float, help=f"(default {d.weight_decay})")
    p.add_argument("--label-smoothing", type=float, help=f"(default {d.label_smoothing})")
    p.add_argument("--mixup", type=float, metavar="ALPHA",
                   help=f"torchvision MixUp on whole batches with this Beta alpha, e.g. 0.2 (default {d.mixup}: off)")
    p.add_argument("--cutmix", type=float, metavar="ALPHA",
                   help=f"torchvision CutMix likewise, e.g. 1.0; with --mixup, one of the two per batch "
                        f"(default {d.cutmix}: off)")
    p.add_argument("--grayscale", type=float, metavar="SHARE",
                   help=f"share of training photos turned grey, e.g. 0.1 (default {d.grayscale}: off)")
    p.add_argument("--erasing", type=float, metavar="SHARE",
                   help=f"share of training photos with one random rectangle replaced by noise, e.g. 0.25 "
                        f"(default {d.erasing}: off)")
    p.add_argument("--ema-decay", type=float, help=f"EMA of weights, 0 = off (default {d.ema_decay})")
    p.add_argument("--teacher", metavar="MODEL",
                   help="distil from this trained model (a model or run folder, or a Hub repo id; it must know every "
                        "class): the student also learns its softened answers (cnn.distill; default off)")
    p.add_argument("--distill-weight", type=float, metavar="SHARE",
                   help=f"share of the loss that follows the teacher (default {d.distill_weight})")
    p.add_argument("--distill-temperature", type=float, metavar="T",
                   help=f"softens the teacher's and the student's answers before comparing them (default "
                        f"{d.distill_temperature})")
    p.add_argument("--val-fraction", type=float, help=f"(default {d.val_fraction})")
    p.add_argument("--seed", type=int, help=f"(default {d.seed})")
    p.add_argument("--run-dir", help="where to write the run (default runs/<time>-<arch>)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="(default auto)")
    p.add_argument("--workers", type=int, help="processes that decode photos into the cache (default: all cores)")
    p.add_argument("--cache-dir", help="decoded-photo cache (default $XDG_CACHE_HOME/cnn-animals)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model")
    p.add_argument("--no-amp", dest="amp", action="store_false", default=None,
                   help="train in fp32 (default: bf16/fp16 autocast on CUDA, bf16 on CPUs with native bf16)")
    p.add_argument("--no-balanced-sampling", dest="balanced_sampling", action="store_false", default=None,
                   help="draw photos uniformly instead of classes equally often")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this folder from its last checkpoint")
    p.add_argument("--push-to-hub", metavar="USER/NAME",
                   help="push the model to this Hub repo at the end (the token and the repo are checked before "
                        "training; exit status 1 if the push did not happen)")
    p.add_argument("--private", action="store_true", default=None, help="create the Hub repo as private")
    args = p.parse_args(argv)
    if args.model_args is not None:
        args.model_args = dict(args.model_args)
    if args.blur_sigmas is not None:
        if not all(map(blur_sigma_ok, args.blur_sigmas)):
            p.error(f"--blur-sigmas must be from 0 to {MAX_BLUR_SIGMA:g} (px)")
        args.blur_sigmas = tuple(args.blur_sigmas)
    if not args.data and not args.resume:
        p.error("--data DIR is required (or --resume RUN)")
    return args


# What --resume may override: where the photos are now, where to run, and what is set at export: the "none of the
# ten" detector, its budget and the softenings tried (resuming a finished run re-exports it with them, without
# training).
RESUME_MAY_CHANGE = ("data", "device", "workers", "detector", "unknown_rate", "blur_sigmas")


def main(argv: list[str] | None = None) -> int:
    from cnn.engine import fit

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    overrides = {k: v for k, v in vars(args).items() if k not in ("preset", "resume") and v is not None}
    try:
        if args.resume:  # the run's own configuration; only what changes no epoch may differ (RESUME_MAY_CHANGE)
            saved = json.loads((Path(args.resume) / "train_config.json").read_text())
            cfg = TrainConfig.from_dict({**saved, **{k: v for k, v in overrides.items() if k in RESUME_MAY_CHANGE}})
        else:
            cfg = make_config(args.preset, **overrides)
        fit(cfg, resume=args.resume)
    except KeyboardInterrupt:
        logging.error("interrupted; continue with: python -m train --resume RUN (the last finished epoch is kept)")
        return 130
    except (ValueError, OSError, RuntimeError) as e:
        logging.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
