"""The ablation sweep: a base recipe, then one change per run, one line per run.

Why: a change pays only if it moves the figures that predict photos from elsewhere, so every run holds out the
same whole sources (train/held_out_sources.json) and is read by the worse of its two real-photo figures.

    python bench/ablations.py --data ../shared/data                 # every run in ABLATIONS, in order
    python bench/ablations.py --data ../shared/data --only base ema # some of them
    python bench/ablations.py --data ../shared/data --only teacher distilled   # distillation (on a GPU)
    python bench/ablations.py --data packed/photos --base bundled --parallel 6   # a lent GPU, side by side
    python bench/ablations.py --data ../shared/data -- --epochs 2   # arguments after -- go to every run

Two bases: `quick` (112 px, 18 epochs: the CPU sweep docs/results.md's first ablation table was measured with)
and `bundled` (the bundled model's own recipe, which a GPU runs in minutes). `--parallel N` trains N runs at
once (one GPU holds several of these small networks); a run that reads another's model ("{runs}/teacher")
starts after it. Each run is `python -m train` (its exact command is in the run's command.txt) in RUNS/<name>;
a run whose model is already there is read, not retrained, so a sweep that was stopped continues where it was.
Per run it prints `NAME.METRIC VALUE` lines (bench/common.py) and one summary line for people: minutes, device,
held-out sources %, animals-val %, the worse of the two, in-split %, and "none of the ten" on the unseen
source's other animals / objects at the model's own threshold.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, emit, note

import torch  # noqa: E402

# The bases, less the data and run folders, which the sweep sets. `quick`: the bundled recipe before the 128 px /
# 36-epoch model (README, "What paid", was measured with it); `bundled`: the bundled model's command (README).
BASES: dict[str, list[str]] = {
    "quick": ["--image-size", "112", "--progressive-from", "64", "--epochs", "18", "--val-fraction", "0.05"],
    "bundled": ["--synthetic-outliers", "0.5", "--outlier-holdout", "0", "--image-size", "128", "--progressive-from",
                "64", "--epochs", "48", "--val-fraction", "0.05", "--unknown-rate", "0.08",
                "--model-args", "depths=(1,2,2,2)", "--erasing", "0.25", "--grayscale", "0.1"],
}
ABLATIONS: dict[str, list[str]] = {
    "base": [],
    "synthetic-outliers": ["--synthetic-outliers", "0.5"],
    "epochs-36": ["--epochs", "36"],
    "epochs-96": ["--epochs", "96"],
    "128px": ["--image-size", "128"],
    "mixup-cutmix": ["--mixup", "0.2", "--cutmix", "1.0"],
    "ema": ["--ema-decay", "0.999"],
    "photo-weighted": ["--no-balanced-sampling"],
    "erasing-grayscale": ["--erasing", "0.25", "--grayscale", "0.1"],
    # distillation: a large teacher (our network at 1.5x the width and two blocks a stage: 6.3 M parameters,
    # 2.6x the bundled model's compute, a GPU's job), then the base network trained on its answers too; "{runs}"
    # is the sweep's folder, so the teacher run comes first
    "teacher": ["--model-args", "widths=(48,96,192,384)", "depths=(2,2,2,2)"],
    "distilled": ["--teacher", "{runs}/teacher"],
    # leave one source out for "none of the ten": another source's other/ photos are the unseen ones
    "loso-sisso16": ["--holdout-sources", "bench/held_out_sisso16.json"],
    "loso-zhangtao7750": ["--holdout-sources", "bench/held_out_zhangtao7750.json"],
}


def needs(name: str) -> set[str]:
    """The runs whose models this run reads (its arguments name "{runs}/OTHER"): they train first."""
    return {arg.split("{runs}/", 1)[1] for arg in ABLATIONS[name] if "{runs}/" in arg}


def train_command(name: str, data: Path, holdout: Path, runs: Path, extra: list[str], base: str = "quick") -> list[str]:
    """The run's `python -m train` command: the data's three folders, the base, the change, then `extra`."""
    return [sys.executable, "-m", "train", "--data", str(data / "animals"), "--val-data", str(data / "animals-val"),
            "--outliers", str(data / "other"), "--holdout-sources", str(holdout), *BASES[base],
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
            **{f"unseen_{group}": v["flagged"] for group, v in unseen.items()},
            **({"unseen_kinds": found["unseen_kinds_flagged"]} if "unseen_kinds_flagged" in found else {})}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, required=True, help="the folder holding animals/, animals-val/, other/")
    p.add_argument("--runs", type=Path, default=ROOT / "runs" / "ablations")
    p.add_argument("--only", nargs="+", choices=list(ABLATIONS), help="these runs only (default: all)")
    p.add_argument("--holdout-sources", type=Path, default=ROOT / "train" / "held_out_sources.json")
    p.add_argument("--base", choices=list(BASES), default="quick", help="the recipe each change is made to")
    p.add_argument("--parallel", type=int, default=1, help="runs trained at once (default 1)")
    p.add_argument("--report", action="store_true", help="train nothing: report the runs that have finished")
    p.add_argument("extra", nargs="*", help="after --: arguments added to every run's command")
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    args.runs.mkdir(parents=True, exist_ok=True)
    names = args.only or list(ABLATIONS)
    waiting = [] if args.report else [name for name in names if not (args.runs / name / "model" / "config.json").exists()]
    running: dict[str, subprocess.Popen] = {}
    while waiting or running:
        for name in [n for n in waiting if not needs(n) & {*waiting, *running}][:args.parallel - len(running)]:
            command = train_command(name, args.data.resolve(), args.holdout_sources.resolve(), args.runs.resolve(),
                                    args.extra, args.base)
            note("$", " ".join(command))
            with open(args.runs / f"{name}.log", "w") as log:
                running[name] = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
            waiting.remove(name)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                if proc.returncode:
                    note(f"{name}: training failed, see {args.runs / (name + '.log')}")
        time.sleep(0.5)
    for name in names:
        run = args.runs / name
        if not (run / "model" / "config.json").exists():
            continue
        figures = summary(run)
        for key, value in figures.items():
            emit(f"{name}.{key}", value)
        note(f"{name:20s} {figures['minutes']:5.1f} min {device}  held-out {figures['heldout']:.1%}  "
             f"animals-val {figures['animals_val']:.1%}  worse {figures['worse']:.1%}  in-split {figures['in_split']:.1%}  "
             f"ECE {figures['ece']:.3f}  unseen other animals {figures.get('unseen_other_animals', float('nan')):.0%}  "
             f"objects {figures.get('unseen_other_objects', float('nan')):.0%}  "
             f"kinds never trained on {figures.get('unseen_kinds', float('nan')):.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
