"""'None of the ten' on kinds of animal never trained on: detectors tuned on the seen kinds, per fold.

Why: an unseen *source* of other animals still shows kinds the detector was taught (a lion is a lion), so it
overstates what visitors' photos of other mammals get. train/held_out_sources.json names 15 kinds of look-alike
mammal and three folds of them (cnn.holdout); each row here is tuned on the kinds outside its fold and measured on
the fold's kinds, so the folds together measure every kind once as never seen. A detector that learnt the *look*
of the kinds' one source (64 px Tiny-ImageNet crops) rather than "none of the ten" would shine on the unseen kinds
and fail on other sources, so each row also gives the unseen-source groups of --outliers and the held-out real
photos shrunk to 64 px and back, and "worst" is the worst of the unseen kinds and the unseen-source groups.

Detectors, each at the threshold where `--rate` of the real animal photos is wrongly flagged (the budget shared
as the shipped models share it, cnn.ood.fit_thresholds): the bundled model's energy score; cnn.ood's probe
(logistic regression on the penultimate features: training photos against the outlier photos it may be tuned
on, here those of the seen kinds and sources); and their unions (the first score of a union takes half the
budget, the last fills it: `--detector probe+energy` trains the first).

    python bench/ood_kinds.py --model model --data ../shared/data/animals \\
        --holdout-sources train/held_out_sources.json --real ../shared/data/animals-val --outliers ../shared/data/other
    python bench/ood_kinds.py --quick                # generated photos and kinds, random weights, for CI
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from common import detector_bench_parser, emit, note, run_detector_bench

from cnn import ood
from cnn.data import Listing, load_images, scan_folder, scan_photos
from cnn.engine import classifier_outputs
from cnn.holdout import HoldoutSpec, held_out, kinds_of, split_by_source
from cnn.inference import Classifier

DETECTORS = ("energy", "probe", "probe+energy", "energy+probe")
SHRINK = 64   # px: the look-alike kinds' own size


def main() -> None:
    p = detector_bench_parser(__doc__, "the training folder: the probe's in-distribution photos come from it")
    p.add_argument("--rate", type=float, default=0.08, help="share of real photos wrongly flagged (default 0.08, "
                                                            "the bundled model's budget)")
    run_detector_bench(p.parse_args(), quick_inputs, run)


def quick_inputs(args: argparse.Namespace, tmp: Path) -> None:
    from common import make_model_folder
    from imagegen import make_web_photos
    from test_holdout import KINDS, make_sourced_data, write_spec

    data = make_sourced_data(tmp / "data")
    args.model = str(make_model_folder(tmp / "model", labels=["circle", "square", "triangle"]))
    args.data, args.outliers = str(data / "animals"), str(data / "other")
    args.real = str(make_web_photos(tmp / "real", per_class=8))
    args.holdout_sources = str(write_spec(tmp / "held.json", ["web/shapes-b", "web/other-b"], kinds=KINDS,
                                          kind_folds=[["kind zero"], ["kind one"], ["kind two"]]))


def run(args: argparse.Namespace) -> None:
    if not (args.model and args.data and args.holdout_sources and args.outliers):
        raise SystemExit("give --model, --data, --holdout-sources (with kinds and kind_folds) and --outliers")
    clf = Classifier.from_pretrained(args.model)
    spec = HoldoutSpec.read(args.holdout_sources)
    if not spec.kind_folds:
        raise SystemExit(f"{args.holdout_sources} names no kind_folds: nothing to hold out by kind")
    train, held = split_by_source(scan_folder(args.data), spec)

    def outputs(listing: Listing) -> tuple[ood.Outputs, torch.Tensor]:
        photos = load_images(listing, clf.resize_side)
        return classifier_outputs(clf, photos.images), photos.images

    bank_photos = load_images(train, clf.resize_side)
    bank = bank_photos.images[ood.bank_sample(bank_photos.labels)]
    inside = classifier_outputs(clf, bank).features
    held_outputs, held_images = outputs(held)
    real = {"held-out sources": held_outputs, **({Path(args.real).name: outputs(scan_folder(args.real))[0]}
                                                 if args.real else {})}
    shrunk_images = torch.nn.functional.interpolate(torch.nn.functional.interpolate(
        held_images.float(), size=(SHRINK, SHRINK), mode="area"), size=held_images.shape[-2:], mode="bicubic")
    shrunk = classifier_outputs(clf, shrunk_images.clamp(0, 255).round().to(torch.uint8))
    found = scan_photos(args.outliers)
    out_photos = load_images(found, clf.resize_side)
    out = classifier_outputs(clf, out_photos.images)
    unseen_source = torch.tensor(held_out(found, out_photos.paths, spec))
    kinds = kinds_of(found, out_photos.paths, spec)
    groups = [ood.group_of(p) for p in out_photos.paths]

    rows = []
    for fold, fold_kinds in enumerate(spec.kind_folds):
        unseen_kind = torch.tensor([k in fold_kinds for k in kinds])
        probe = ood.ProbeDetector.fit(inside, out.features[~unseen_source & ~unseen_kind])   # what it may see

        def scores(o: ood.Outputs) -> dict[str, torch.Tensor]:
            return {"energy": ood.energy_score(o.logits), "probe": probe.score(o.features)}

        real_scores = [scores(o) for o in real.values()]
        for detector in DETECTORS:
            names = detector.split("+")
            pooled = {n: torch.cat([s[n] for s in real_scores]) for n in names}
            thresholds = ood.fit_thresholds(pooled, args.rate)

            def flagged(o: ood.Outputs) -> torch.Tensor:
                return ood.unknown_mask({n: v for n, v in scores(o).items() if n in names}, thresholds)
            out_flagged = flagged(out)
            cells = {"unseen kinds": out_flagged[unseen_kind].double().mean().item()}
            for group in sorted(set(groups)):
                mask = unseen_source & torch.tensor([g == group for g in groups]) & ~unseen_kind
                if mask.any():
                    cells[f"{group} (unseen source)"] = out_flagged[mask].double().mean().item()
            row = {"detector": detector, "fold": fold, "kinds": fold_kinds, **cells, "worst": min(cells.values()),
                   **{f"real flagged: {name}": flagged(o).double().mean().item() for name, o in real.items()},
                   f"held-out shrunk to {SHRINK} px flagged": flagged(shrunk).double().mean().item()}
            rows.append(row)
    for detector in DETECTORS:
        mine = [r for r in rows if r["detector"] == detector]
        key = detector.replace("+", "_and_")
        emit(f"{key}_unseen_kinds_flagged", sum(r["unseen kinds"] for r in mine) / len(mine))
        emit(f"{key}_worst_flagged", min(r["worst"] for r in mine))
    columns = [k for k in rows[0] if k not in ("detector", "fold", "kinds")]
    note(f"\nat {args.rate:.0%} of real photos wrongly flagged (pooled); each fold tuned on the other kinds")
    note(f"{'detector':<14}{'fold':>5}  " + "  ".join(f"{c:>{max(8, len(c))}}" for c in columns))
    for r in rows:
        note(f"{r['detector']:<14}{r['fold']:>5}  " + "  ".join(f"{r[c]:>{max(8, len(c))}.1%}" for c in columns))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
