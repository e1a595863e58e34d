"""The ablation sweep: a base recipe (112 px, 18 epochs), then one change per run, one line per run.

Why: a change pays only if it moves the figures that predict photos from elsewhere, so every run holds out the
same whole sources (train/held_out_sources.json) and is read by the worse of its two real-photo figures.

    python bench/ablations.py --data ../shared/data                 # every run in ABLATIONS, in order
    python bench/ablations.py --data ../shared/data --only base ema # some of them
    python bench/ablations.py --data ../shared/data --only teacher distilled   # distillation (on a GPU)
    python bench/ablations.py --data ../shared/data -- --epochs 2   # arguments after -- go to every run

Each run is `python -m train` (its exact command is in the run's command.txt) in RUNS/<name>; a run whose
model is already there is read, not retrained, so a sweep that was stopped continues where it was. Per run it
prints `NAME.METRIC VALUE` lines (bench/common.py) and one summary line for people: minutes, device, held-out
sources %, animals-val %, the worse of the two, in-split %, and "none of the ten" on the unseen source's other
animals / objects at the model's own 5 % threshold.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import ROOT, emit, note

import torch  # noqa: E402

# The base: the bundled recipe before the 128 px / 36-epoch model (README, "What paid"), less the data and run
# folders, which the sweep sets. The README's table was measured with these runs.
BASE = ["--image-size", "112", "--progressive-from", "64", "--epochs", "18", "--val-fraction", "0.05"]
ABLATIONS: dict[str, list[str]] = {
    "base": [],
    "synthetic-outliers": ["--synthetic-outliers", "0.5"],
    "epochs-36": ["--epochs", "36"],
    "128px": ["--image-size", "128"],
    "mixup-cutmix": ["--mixup", "0.2", "--cutmix", "1.0"],
    "ema": ["--ema-decay", "0.999"],
    "photo-weighted": ["--no-balanced-sampling"],
    "erasing-grayscale": ["--erasing", "0.25", "--grayscale", "0.1"],
    # distillation: a large teacher (torchvision's ResNet-18, 11.2 M parameters: a GPU's job), then the base
    # network trained on its answers too; "{runs}" is the sweep's folder, so the teacher run comes first
    "teacher": ["--arch", "resnet18"],
    "distilled": ["--teacher", "{runs}/teacher"],
}


def train_command(name: str, data: Path, holdout: Path, runs: Path, extra: list[str]) -> list[str]:
    """The run's `python -m train` command: the data's three folders, BASE, the change, then `extra`."""
    return [sys.executable, "-m", "train", "--data", str(data / "animals"), "--val-data", str(data / "animals-val"),
            "--outliers", str(data / "other"), "--holdout-sources", str(holdout), *BASE,
            *(arg.format(runs=runs) for arg in ABLATIONS[name]), *extra,
            "--run-dir", str(runs / name)]


def summary(run: Path) -> dict[str, float | str]:
    """The figures of a finished run, from its model's config.json and metrics.json."""
    found = json.loads((run / "model" / "config.json").read_text())["metrics"]
    history = json.loads((run / "metrics.json").read_text())["history"]
    unseen = found.get("unseen_outliers_by_group", {})
    return {"minutes": sum(row["seconds"] for row in history) / 60,   # in training epochs (evaluation aside)
            "heldout": found["heldout_val_accuracy"], "animals_val": found["real_val_accuracy"],
            "worse": found["worst_real_accuracy"], "in_split": found["val_accuracy"],
            "ece": max(found["heldout_val_ece"], found["real_val_ece"]),
            **{f"unseen_{group}": v["flagged"] for group, v in unseen.items()}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the folder holding animals/, animals-val/, other/")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "ablations")
    p.add_argument("--only", nargs="+", choices=list(ABLATIONS), help="these runs only (default: all)")
    p.add_argument("--holdout-sources", type=Path, default=ROOT / "train" / "held_out_sources.json")
    p.add_argument("extra", nargs="*", help="after --: arguments added to every run's command")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    args.runs.mkdir(parents=True, exist_ok=True)
    for name in args.only or list(ABLATIONS):
        run = args.runs / name
        if not (run / "model" / "config.json").exists():
            command = train_command(name, args.data.resolve(), args.holdout_sources.resolve(), args.runs.resolve(),
                                    args.extra)
            note("$", " ".join(command))
            with open(args.runs / f"{name}.log", "w") as log:
                if subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode:
                    note(f"{name}: training failed, see {args.runs / (name + '.log')}")
                    continue
        figures = summary(run)
        for key, value in figures.items():
            emit(f"{name}.{key}", value)
        note(f"{name:20s} {figures['minutes']:5.1f} min {device}  held-out {figures['heldout']:.1%}  "
             f"animals-val {figures['animals_val']:.1%}  worse {figures['worse']:.1%}  in-split {figures['in_split']:.1%}  "
             f"ECE {figures['ece']:.3f}  unseen other animals {figures.get('unseen_other_animals', float('nan')):.0%}  "
             f"objects {figures.get('unseen_other_objects', float('nan')):.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
