"""python -m train.evaluate --model MODEL --data DIR: score a trained model on a labelled folder.

MODEL is a run folder (its model/ is used), a model folder or a Hub repo id ('user/name[@revision]'). DIR has
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

from cnn import hub, ood
from cnn.data import Listing, load_images, map_labels, scan_folder, scan_photos
from cnn.engine import classifier_outputs
from cnn.holdout import HoldoutSpec, find_sources_csv, kinds_of, read_sources, sources_of, split_by_source
from cnn.inference import Classifier
from cnn.metrics import flag_rates, plot_mistakes, summarize
from cnn.wording import none_of, percent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="run folder, model folder (config.json + model.safetensors) or Hub repo id")
    p.add_argument("--data", required=True, help="folder with one sub-folder of photos per class")
    p.add_argument("--batch-size", type=int, default=256, help="photos per forward pass (default 256)")
    p.add_argument("--k", type=int, default=3, help="also report top-k accuracy (default 3)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="(default auto)")
    p.add_argument("--workers", type=int, default=0, help="processes that decode photos (default: all cores)")
    p.add_argument("--cache-dir", help="decoded-photo cache (default $XDG_CACHE_HOME/cnn-animals)")
    p.add_argument("--outliers", metavar="DIR",
                   help="also report how many photos of this folder (none of the model's labels) are flagged, per "
                        "sub-folder (group) and, with a sources.csv beside it, per source")
    p.add_argument("--holdout-sources", metavar="JSON",
                   help="score only the photos of --data whose source this file holds out (cnn.holdout); with "
                        "--outliers, also report them per kind when the file names kinds")
    p.add_argument("--kind-fold", type=int, default=0, metavar="N",
                   help="the fold of that file's kinds the model never trained on, marked in the per-kind report "
                        "(train --kind-fold; default 0)")
    p.add_argument("--blur-sigma", type=float, metavar="SIGMA",
                   help="judge the photos softened by this Gaussian blur (px; 0 = none) instead of the model's own "
                        "(its config.json's blur_sigma): what another softening would do on these photos")
    p.add_argument("--json", metavar="OUT", help="also write the summary, and every wrong answer, to this JSON file")
    p.add_argument("--mistakes", metavar="PNG",
                   help="also draw the most confident wrong answers of each class on one contact sheet")
    args = p.parse_args(argv)
    if args.batch_size < 1 or args.k < 1:
        p.error("--batch-size and --k must be at least 1")
    if args.blur_sigma is not None and not hub.blur_sigma_ok(args.blur_sigma):
        p.error(f"--blur-sigma must be from 0 to {hub.MAX_BLUR_SIGMA:g} (px)")
    return args


def evaluate(model_id: str, data: str, batch_size: int = 256, k: int = 3, device: str = "auto",
             workers: int = 0, cache_dir: str | None = None, outliers: str | None = None,
             holdout_sources: str | None = None, mistakes: str | None = None,
             blur_sigma: float | None = None, kind_fold: int = 0) -> dict[str, Any]:
    """Accuracy, top-k accuracy, calibration, per-class results, every wrong answer and the app's warnings ("not
    sure", "none of the ten") of a model on a labelled folder (or only its held-out sources' photos), and optionally
    on a folder of photos that are none of its labels, per group and source. `mistakes`: a PNG file to draw the
    most confident wrong answers on; `blur_sigma`: a softening to use instead of the model's own; `kind_fold`:
    the fold of the held-out file's kinds of outlier photo that the model never trained on."""
    clf = Classifier.from_pretrained(model_id)
    if blur_sigma is not None:
        clf.blur_sigma = blur_sigma
    labels = clf.labels
    listing = scan_folder(data)
    spec = HoldoutSpec.read(holdout_sources, kind_fold) if holdout_sources else None
    if spec:
        listing = split_by_source(listing, spec)[1]
    to_model = torch.tensor(map_labels(listing, labels))
    photos = load_images(listing, clf.resize_side, cache_dir, workers)
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       "cpu" if device == "auto" else device)

    def judged(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Calibrated probabilities, and which photos the model's rule calls none of its labels."""
        probs, logits, features = classifier_outputs(clf, images, dev, batch_size)
        return probs, clf.unknown(probs, logits, features)

    probs, unknown = judged(photos.images)
    targets = to_model[photos.labels]
    summary = summarize(probs, targets, labels)
    del summary["unsure_below"]   # the threshold these photos would set; only the model's own is reported
    report: dict[str, Any] = {}
    origin = photo_sources(listing, photos.paths)
    confidence, answers = probs.max(1)
    report["wrong_answers"] = [{"photo": str(listing.file(photos.paths[i])), "label": labels[targets[i]],
                                "answer": labels[answers[i]], "confidence": round(confidence[i].item(), 4),
                                **({"source": origin[i]} if origin else {})}
                               for i in (answers != targets).nonzero().flatten().tolist()]
    if mistakes:
        plot_mistakes(photos.images, probs, targets, labels, mistakes)
    if origin:
        right = answers == targets
        report["accuracy_by_source"] = {name: {"photos": int(mask.sum()), "accuracy": round(right[mask].double().mean().item(), 4)}
                                        for name in sorted(set(origin))
                                        for mask in [torch.tensor([o == name for o in origin])]}
        by_source = [row["accuracy"] for row in report["accuracy_by_source"].values()]
        # each source weighs the same, and the worst one: a big easy source hides a hard one in the pooled figure
        report["accuracy_sources_weighted_equally"] = round(sum(by_source) / len(by_source), 4)
        report["worst_source_accuracy"] = min(by_source)
    if outliers:
        found = scan_photos(outliers)
        out_photos = load_images(found, clf.resize_side, cache_dir, workers)
        out_probs, out_unknown = judged(out_photos.images)
        warnings = flag_rates(probs, targets, clf.unsure_below, unknown, out_probs, out_unknown)
        report["outliers_by_group"] = ood.flagged_by(out_unknown, [ood.group_of(p) for p in out_photos.paths])
        names = photo_sources(found, out_photos.paths)
        if names:
            report["outliers_by_source"] = ood.flagged_by(out_unknown, names)
        if spec and spec.kinds:
            report.update(outliers_by_kind(out_unknown, kinds_of(found, out_photos.paths, spec), spec.held_out_kinds))
    else:
        warnings = flag_rates(probs, targets, clf.unsure_below, unknown)
    warnings.update(ood.thresholds_to_config(clf.unknown_thresholds), detector="+".join(clf.unknown_thresholds) or "none")
    top_k = min(k, len(labels))
    hits = (probs.topk(top_k, 1).indices == targets[:, None]).any(1)
    return {"model": clf.source, "blur_sigma": clf.blur_sigma,
            "data": str(Path(data)) + (" (held-out sources only)" if holdout_sources else ""),
            "images": len(targets), "labels": labels, "k": top_k,
            "top_k_accuracy": round(hits.double().mean().item(), 4), **summary, "warnings": warnings, **report}


def outliers_by_kind(unknown: torch.Tensor, kinds: list[str], never_trained_on: list[str]) -> dict[str, Any]:
    """Outliers flagged per named kind, the kinds the model never trained on marked, and those pooled
    ("unseen_kinds_flagged", the figure that predicts photos of other animals)."""
    named = [i for i, kind in enumerate(kinds) if kind]
    marked = [kinds[i] + (" (never trained on)" if kinds[i] in never_trained_on else "") for i in named]
    found: dict[str, Any] = {"outliers_by_kind": ood.flagged_by(unknown[named], marked)} if named else {}
    unseen = [i for i in named if kinds[i] in never_trained_on]
    if unseen:
        found["unseen_kinds_flagged"] = round(unknown[unseen].double().mean().item(), 4)
    return found


def photo_sources(listing: Listing, paths: list[str]) -> list[str]:
    """The source of each photo, when a sources.csv lies beside the folder (or the one above it); else nothing."""
    try:
        table = read_sources(find_sources_csv(listing.roots, "sources.csv"))
    except ValueError:   # no sources.csv: no per-source report
        return []
    return [name or "(not listed)" for name in sources_of(listing, paths, table)]


def format_report(result: dict[str, Any]) -> str:
    """The summary as lines a person reads: totals first, then one line per class (shares as cnn.wording
    writes them everywhere)."""
    soft = f" (photos softened by a Gaussian blur of σ {result['blur_sigma']:g} px)" if result["blur_sigma"] else ""
    lines = [f"model     {result['model']}{soft}", f"data      {result['data']} ({result['images']} photos)",
             f"accuracy  {percent(result['accuracy'])}", f"top-{result['k']:<5} {percent(result['top_k_accuracy'])}",
             f"ECE       {result['ece']:.4f}  (expected calibration error, 0 = confidence matches accuracy)",
             *warning_lines(result["warnings"], len(result["labels"])), *source_lines(result), *outlier_lines(result), "",
             f"{'class':<16}{'precision':>10}{'recall':>10}{'support':>9}"]
    for name, row in result["per_class"].items():
        lines.append(f"{name:<16}{percent(row['precision']):>10}{percent(row['recall']):>10}{row['support']:>9d}")
    return "\n".join(lines)


def warning_lines(w: dict[str, Any], n_labels: int) -> list[str]:
    """What the app's warnings, at the model's own thresholds (the only ones shown), do on these photos."""
    flag = none_of(n_labels)
    rules = rule_words(w)
    unknown = (f", {flag} when {' or '.join(rules)}" if rules else
               f" ({flag}: no rule, the model was trained without photos of other things)")
    unwarned = ("every answer carried a warning" if w["accuracy_when_confident"] is None else
                f"answers without a warning are right {percent(w['accuracy_when_confident'])} of the time")
    lines = [f"warnings  at the model's thresholds: not sure under {percent(w['unsure_below'])}{unknown}",
             f"          {percent(w['wrong_warned'])} of wrong answers warned, {percent(w['right_passed'])} of right "
             f"ones pass without; {unwarned}"]
    if rules:
        wrong = w.get("flagged_were_wrong")
        lines.append(f"          {percent(w['val_flagged_unknown'])} of these photos flagged {flag}"
                     + (f" ({percent(wrong)} of them answered wrongly anyway)" if wrong is not None else ""))
    if "outliers_flagged" in w:
        lines.append(f"outliers  {percent(w['outliers_flagged'])} flagged {flag}, {percent(w['outliers_warned'])} "
                     "get a warning of either kind")
    return lines


def rule_words(w: dict[str, Any]) -> list[str]:
    """The model's "none of the ten" rule in words, one part per score."""
    parts = []
    if w.get("unknown_below"):
        parts.append(f"top probability under {percent(w['unknown_below'])}")
    if "unknown_energy_above" in w:
        parts.append(f"energy > {w['unknown_energy_above']:.3f}")
    if "unknown_distance_above" in w:
        parts.append(f"feature distance > {w['unknown_distance_above']:.3f}")
    return parts


def source_lines(result: dict[str, Any]) -> list[str]:
    """Accuracy per source (sources.csv): photos from elsewhere are not all equally hard, and this says which."""
    lines = [f"  source     {name:<40} {percent(row['accuracy']):>7} of {row['photos']}"
             for name, row in result.get("accuracy_by_source", {}).items()]
    if len(lines) > 1:
        lines.append(f"  sources weighted equally {percent(result['accuracy_sources_weighted_equally']):>24}, "
                     f"worst source {percent(result['worst_source_accuracy'])}")
    return lines


def outlier_lines(result: dict[str, Any]) -> list[str]:
    """Outliers flagged per group and per source: the worst line is the one that matters."""
    lines = []
    for key, title in (("outliers_by_group", "by group"), ("outliers_by_source", "by source"),
                       ("outliers_by_kind", "by kind")):
        for name, row in result.get(key, {}).items():
            lines.append(f"  {title:<10} {name:<40} {percent(row['flagged']):>7} of {row['photos']} flagged")
    if "unseen_kinds_flagged" in result:
        lines.append(f"  kinds never trained on, together {percent(result['unseen_kinds_flagged']):>25} flagged")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.device == "cuda" and not torch.cuda.is_available():
        logging.error("--device cuda was asked for, but PyTorch sees no CUDA GPU")
        return 1
    try:
        result = evaluate(args.model, args.data, args.batch_size, args.k, args.device, args.workers, args.cache_dir,
                          args.outliers, args.holdout_sources, args.mistakes, args.blur_sigma, args.kind_fold)
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    except (hub.ModelLoadError, ValueError, OSError) as e:  # DataError is a ValueError
        logging.error("%s", e)
        return 1
    print(format_report(result))
    if args.mistakes:
        print(f"\nthe most confident wrong answers of each class are drawn in {args.mistakes}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
