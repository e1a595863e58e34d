"""python -m train --data DIR [--data DIR_OR_HUB_DATASET ...] [options]: train a classifier from scratch
and write a run folder.

Several --data sources are merged by class name: local folders (class folders, train/ + test/ splits, zips,
Parquet, image folders with metadata.csv), and Hub dataset repos in any of those layouts, written as
hf://datasets/user/name[@revision][/subfolder][?split=NAME] (fetched through the Hugging Face cache).

Defaults live in cnn.config.TrainConfig; every flag here only overrides them.
"""
from __future__ import annotations

import argparse
import ast
import difflib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cnn import hub, ood
from cnn.config import PRESETS, TrainConfig, lr_batch_warning, make_config
from cnn.io import closest_path
from cnn.models import list_models

EXAMPLES = """examples:
  # Animals-10 with the bundled recipe's real-photo checks, pushed to the Hub when it ends
  python -m train --data raw-img --val-data animals-val --outliers other --epochs 48 \\
      --push-to-hub you/animal-cnn
  # four GPUs, a smaller batch per GPU and the learning rate scaled to it (0.2 x 64 / 128)
  torchrun --nproc_per_node 4 -m train --data raw-img --batch-size 64 --lr 0.1 --run-dir runs/four
"""
DEFAULTS = vars(TrainConfig())


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


def one_of(names: Iterable[str], what: str) -> Callable[[str], str]:
    """An argparse type for a name from `names`: a typo is refused with the closest name, not just the list."""
    names = list(names)

    def check(text: str) -> str:
        if text in names:
            return text
        close = difflib.get_close_matches(text, names, n=1)
        raise argparse.ArgumentTypeError(f"unknown {what} {text!r}" + (f"; did you mean {close[0]!r}?" if close else "")
                                         + f" (known: {', '.join(names)})")
    return check


def detector_arg(text: str) -> str:
    """A "none of the ten" detector, checked when the command is read, not at export after the whole run."""
    try:
        ood.parse_detector(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def model_id_arg(text: str) -> str:
    """A model folder or Hub repo id; a folder that does not exist is refused now, with the closest one."""
    try:
        hub.check_model_id(text)
    except hub.ModelNotFoundError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def run_folder_arg(text: str) -> str:
    """A run folder to resume; a mistyped one is refused with the closest existing path."""
    if Path(text).is_dir():
        return text
    if Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text!r} is a file, not a run folder")
    closest = closest_path(text)
    meant = f"; did you mean {closest!r}?" if closest else ""
    raise argparse.ArgumentTypeError(f"run folder {text!r} does not exist{meant}")


def shown(value: Any) -> str:
    """A default as the help line shows it ('' for none)."""
    if not value and not isinstance(value, (int, float)):
        return ""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return " ".join(f"{v:g}" for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def add(group: argparse._ArgumentGroup, flag: str, help: str, default_text: str | None = None, **kwargs: Any) -> None:
    """A flag overriding the TrainConfig field of its name; its help line ends with that field's default (or
    `default_text`, words for one the field cannot show; '' for none)."""
    dest = kwargs.get("dest", flag.removeprefix("--").replace("-", "_"))
    text = shown(DEFAULTS.get(dest, "")) if default_text is None else default_text
    group.add_argument(flag, help=f"{help} (default {text})" if text else help, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("data")
    add(g, "--data", "folder with one sub-folder of photos per class (e.g. Animals-10's raw-img), or split into "
        "train/ + test/ or validation/ folders of them; a .zip, a .parquet or an image folder with metadata.csv "
        "(read with `datasets`); or a Hub dataset hf://datasets/user/name[@revision][/subfolder][?split=train]; "
        "repeat to merge several", action="append", metavar="SOURCE")
    add(g, "--val-data", "a separate folder of photos like those the model will see (e.g. larger web photos): "
        "picks the best epoch and calibrates the probabilities; the random split is still reported", metavar="DIR",
        default_text="the --data source's own validation split, else its test split, if it has one")
    add(g, "--holdout-sources", "never train on the sources this file names (e.g. train/held_out_sources.json; "
        "needs the data's sources.csv): their photos are a second real-photo validation set, and the best epoch is "
        "picked by the worse of the two real-photo figures", metavar="JSON")
    add(g, "--kind-fold", "the fold of that file's kinds of outlier photo (its 'kind_folds') never trained on: "
        "'none of the ten' is measured on them; run each fold to measure every kind", type=int, metavar="N")
    add(g, "--kinds-tune-only", "the file's other kinds of outlier photo fit the probe detector only, never outlier "
        "exposure (the look-alike kinds are 64 px crops: exposure to them teaches that a small photo is none of the "
        "classes)", default_text="", action="store_true", dest="kinds_tune_only")
    add(g, "--outliers", "photos that are none of the classes (any layout): part trains the model to say so "
        "(outlier exposure), part measures it; sets the 'none of the ten' threshold", metavar="DIR")
    add(g, "--val-fraction", "share of the training photos kept aside as the random validation split", type=float,
        metavar="SHARE")
    add(g, "--no-balanced-sampling", "draw photos uniformly instead of classes equally often", default_text="",
        dest="balanced_sampling", action="store_false")
    add(g, "--workers", "processes that decode photos into the cache", default_text="all cores", type=int, metavar="N")
    add(g, "--cache-dir", "decoded-photo cache", default_text="$XDG_CACHE_HOME/cnn-animals", metavar="DIR")

    g = p.add_argument_group("model")
    add(g, "--preset", "'tutorial' reproduces the tutorial's basic_cnn recipe for comparison",
        type=one_of(sorted(PRESETS), "preset"), metavar="|".join(sorted(PRESETS)))
    add(g, "--arch", f"architecture: {', '.join(list_models())}", type=one_of(list_models(), "architecture"),
        metavar="NAME")
    add(g, "--model-args", "keyword arguments of the architecture, e.g. depths='(1,2,2,1)' widths='(40,80,160,320)'",
        nargs="+", type=model_arg, metavar="KEY=VALUE")
    add(g, "--image-size", "side of the square the model sees", type=int, metavar="PX")
    add(g, "--teacher", "distil from this trained model (a model or run folder, or a Hub repo id; it must know every "
        "class): the student also learns its softened answers (cnn.distill)", type=model_id_arg, metavar="MODEL",
        default_text="off")
    add(g, "--distill-weight", "share of the loss that follows the teacher", type=float, metavar="SHARE")
    add(g, "--distill-temperature", "softens the teacher's and the student's answers before comparing them",
        type=float, metavar="T")

    g = p.add_argument_group("schedule")
    add(g, "--epochs", "passes over the training photos", type=int, metavar="N")
    add(g, "--batch-size", "photos per step, per GPU/process; change --lr with it (the rate scales with the batch)",
        type=int, metavar="N")
    add(g, "--lr", "peak learning rate for --batch-size (multiplied by the number of processes under torchrun)",
        type=float, metavar="RATE")
    add(g, "--weight-decay", "L2 penalty on the weights (not on BatchNorm and biases)", type=float, metavar="DECAY")
    add(g, "--label-smoothing", "share of each label's probability spread over the other classes", type=float,
        metavar="SHARE")
    add(g, "--ema-decay", "exponential moving average of the weights, which is then evaluated and exported; 0 = off",
        type=float, metavar="DECAY")
    add(g, "--progressive-from", "progressive resizing: start at this side and grow to --image-size; 0 = off",
        type=int, metavar="PX")
    add(g, "--seed", "seeds the split, the sample order, the augmentation and the initial weights", type=int,
        metavar="N")

    g = p.add_argument_group("augmentation")
    add(g, "--mixup", "torchvision MixUp on whole batches with this Beta alpha, e.g. 0.2; 0 = off", type=float,
        metavar="ALPHA")
    add(g, "--cutmix", "torchvision CutMix likewise, e.g. 1.0; with --mixup, one of the two per batch; 0 = off",
        type=float, metavar="ALPHA")
    add(g, "--grayscale", "share of training photos turned grey, e.g. 0.1", type=float, metavar="SHARE")
    add(g, "--erasing", "share of training photos with one random rectangle replaced by noise, e.g. 0.25",
        type=float, metavar="SHARE")
    add(g, "--synthetic-outliers", "share of the outlier slots filled with photos made from the batch (shuffled "
        "tiles, smooth noise; cnn.synthetic), all of them without --outliers", type=float, metavar="SHARE")

    g = p.add_argument_group("export", "set when the best epoch becomes the model folder; --resume of a finished "
                             "run re-exports it with new values, without training")
    add(g, "--detector", f"'none of the ten': cnn.ood's scores joined by + ({', '.join(ood.SCORES)})",
        type=detector_arg, metavar="SCORES")
    add(g, "--unknown-rate", "share of real animal photos 'none of the ten' may wrongly flag: its threshold is set "
        "there", type=float, metavar="SHARE")
    add(g, "--outlier-holdout", "share of the outlier photos (of sources not held out) kept aside to measure 'none "
        "of the ten' instead of training it", type=float, metavar="SHARE")
    add(g, "--blur-sigmas", "test-time softening tried (Gaussian blur, px; 0 = none): the one under which the worse "
        "real-photo set is most accurate is kept", type=float, nargs="+", metavar="SIGMA")

    g = p.add_argument_group("Hub")
    add(g, "--push-to-hub", "push the model to this Hub repo at the end (the token and the repo are checked before "
        "training; exit status 1 if the push did not happen)", metavar="USER/NAME")
    add(g, "--private", "create the Hub repo as private", action="store_true", default_text="")

    g = p.add_argument_group("run")
    add(g, "--run-dir", "where to write the run", default_text="runs/<time>-<arch>", metavar="DIR")
    add(g, "--resume", "continue the run in this folder from its last checkpoint", type=run_folder_arg,
        metavar="RUN")
    add(g, "--device", "where to train: auto takes the GPU when PyTorch sees one", choices=["auto", "cpu", "cuda"])
    add(g, "--compile", "torch.compile the model", action="store_true")
    add(g, "--no-amp", "train in fp32 (default: bf16/fp16 autocast on CUDA, bf16 on CPUs with native bf16)",
        dest="amp", action="store_false", default_text="")
    for action in p._actions:   # unset flags stay None, so that only the ones given override TrainConfig
        if action.dest != "help":
            action.default = None
    p.set_defaults(preset="default")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    if args.model_args is not None:
        args.model_args = dict(args.model_args)
    if args.blur_sigmas is not None:
        if not all(map(hub.blur_sigma_ok, args.blur_sigmas)):
            p.error(f"--blur-sigmas must be from 0 to {hub.MAX_BLUR_SIGMA:g} (px)")
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
            warning = lr_batch_warning(args.preset, overrides)
            if warning and os.environ.get("RANK", "0") == "0":   # once, not once per torchrun process
                logging.warning("%s", warning)
        fit(cfg, resume=args.resume)
    except KeyboardInterrupt:
        logging.error("interrupted; continue with: python -m train --resume RUN (the last finished epoch is kept)")
        return 130
    except (ValueError, OSError, RuntimeError, ImportError) as e:   # ImportError: a model needing torchvision
        logging.error("%s", e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
