"""Scores computed from predictions, and the plots people would rather look at than read."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch


def confusion_matrix(preds: torch.Tensor, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """cm[true, predicted] counts."""
    idx = targets.long() * num_classes + preds.long()
    return torch.bincount(idx, minlength=num_classes ** 2).view(num_classes, num_classes)


def per_class(cm: torch.Tensor, classes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Precision, recall and support of every class from a confusion matrix."""
    cm = cm.double()
    tp = cm.diag()
    precision = tp / cm.sum(0).clamp(min=1)
    recall = tp / cm.sum(1).clamp(min=1)
    return {c: {"precision": round(precision[i].item(), 4), "recall": round(recall[i].item(), 4),
                "support": int(cm[i].sum().item())} for i, c in enumerate(classes)}


def confidence_bins(probs: torch.Tensor, targets: torch.Tensor, bins: int):
    """The top probabilities, whether each answer was right, and (upper edge, members) of each equal-width
    confidence bin: what calibration error and the "not sure" threshold are both measured on."""
    conf, pred = probs.max(1)
    correct = (pred == targets).double()
    edges = torch.linspace(0, 1, bins + 1)
    return conf, correct, [(hi.item(), (conf > lo) & (conf <= hi)) for lo, hi in zip(edges[:-1], edges[1:])]


def expected_calibration_error(probs: torch.Tensor, targets: torch.Tensor, bins: int = 15) -> float:
    """Mean |accuracy − confidence| over equal-width confidence bins, weighted by bin size."""
    conf, correct, groups = confidence_bins(probs, targets, bins)
    ece = 0.0
    for _, inside in groups:
        if inside.any():
            ece += inside.double().mean().item() * abs(correct[inside].mean().item() - conf[inside].double().mean().item())
    return ece


def unsure_threshold(probs: torch.Tensor, targets: torch.Tensor, min_accuracy: float = 0.5,
                     bins: int = 10, min_count: int = 20) -> float:
    """The top probability below which answers were right less than `min_accuracy` of the time.

    Answers are grouped in equal-width confidence bins; the threshold is the upper edge of the most confident
    bin (with at least `min_count` answers) whose accuracy is under `min_accuracy`. The app calls answers below
    it "not sure": they are more likely wrong than right. Without such a bin it is `min_accuracy`, which is
    where a calibrated model (small ECE) crosses that accuracy.
    """
    _, correct, groups = confidence_bins(probs, targets, bins)
    threshold = min_accuracy
    for hi, inside in groups:
        if inside.sum() >= min_count and correct[inside].mean() < min_accuracy:
            threshold = hi
    return round(threshold, 2)


def unknown_threshold(probs: torch.Tensor, rate: float) -> float:
    """The top probability under which a photo "looks like none of the labels": the `rate` quantile of the
    top probabilities of real validation photos, so about that share of real animal photos is flagged."""
    return round(torch.quantile(probs.max(1).values.double(), rate).item(), 4)


def flag_rates(probs: torch.Tensor, targets: torch.Tensor, unsure_below: float, unknown: torch.Tensor,
               outlier_probs: torch.Tensor | None = None, outlier_unknown: torch.Tensor | None = None) -> dict[str, float]:
    """How the app's two warnings behave on labelled photos (and on photos of none of the labels): how many
    wrong answers get a warning, how many right ones pass without, what "none of the ten" flags, and how many of
    the labelled photos it flags the model would have answered wrongly anyway (those lose nothing).
    `unknown` (and `outlier_unknown`) mark the photos that the model's rule (cnn.ood.unknown_mask) flags."""
    conf, pred = probs.max(1)
    right = pred == targets
    warned = unknown | (conf < unsure_below)

    def share(mask: torch.Tensor) -> float:
        return round(mask.double().mean().item(), 4) if len(mask) else 0.0

    rates = {"unsure_below": unsure_below, "wrong_warned": share(warned[~right]), "right_passed": share(~warned[right]),
             # None when every answer carried a warning: there is no unwarned answer to be right or wrong
             "accuracy_when_confident": share(right[~warned]) if (~warned).any() else None,
             "val_flagged_unknown": share(unknown),
             "flagged_were_wrong": share(~right[unknown]) if unknown.any() else None}
    if outlier_probs is not None and outlier_unknown is not None:
        rates.update(outliers_flagged=share(outlier_unknown),
                     outliers_warned=share(outlier_unknown | (outlier_probs.max(1).values < unsure_below)))
    return rates


def calibrate(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Temperature scaling: softmax(log p / T). T > 1 softens over-confident answers, T < 1 sharpens
    under-confident ones (label smoothing trains those); the ranking never changes."""
    if temperature == 1.0:
        return probs
    return (probs.double().clamp_min(1e-12).log() / temperature).softmax(-1).to(probs.dtype)


def fit_temperature(probs: torch.Tensor, targets: torch.Tensor) -> float:
    """The temperature that minimises the negative log-likelihood of held-out answers (grid search)."""
    log_p = probs.double().clamp_min(1e-12).log()
    grid = torch.logspace(-2, 2, 161, base=2, dtype=torch.float64)   # 0.25 … 4
    nll = torch.stack([torch.nn.functional.cross_entropy(log_p / t, targets.long()) for t in grid])
    return round(grid[int(nll.argmin())].item(), 3)


def summarize(probs: torch.Tensor, targets: torch.Tensor, classes: Sequence[str]) -> dict[str, Any]:
    """Accuracy, per-class results, the confusion matrix and calibration of one evaluation."""
    cm = confusion_matrix(probs.argmax(1), targets, len(classes))
    return {"accuracy": round(cm.diag().sum().item() / max(1, cm.sum().item()), 4),
            "ece": round(expected_calibration_error(probs, targets), 4),
            "unsure_below": unsure_threshold(probs, targets),
            "per_class": per_class(cm, classes),
            "confusion_matrix": cm.tolist()}


def worst_mistakes(probs: torch.Tensor, targets: torch.Tensor, per_class: int) -> dict[int, list[int]]:
    """The most confident wrong answers of each true class (photo indices, most confident first): the photos most
    worth a look, whether the model or the label is wrong."""
    confidence, answers = probs.max(1)
    found = {}
    for c in targets.unique().tolist():
        wrong = ((targets == c) & (answers != c)).nonzero().flatten()
        if len(wrong):
            found[c] = wrong[confidence[wrong].argsort(descending=True, stable=True)][:per_class].tolist()
    return found


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_curves(history: list[dict[str, float]], path: str | Path) -> None:
    """Loss and accuracy per epoch, train beside validation."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((ax_loss, "loss", "loss"), (ax_acc, "accuracy", "accuracy")):
        ax.plot(epochs, [h[f"train_{key}"] for h in history], label="train", marker=".")
        ax.plot(epochs, [h[f"val_{key}"] for h in history], label="validation (split)", marker=".")
        for real, name in (("real_val", "real photos"), ("heldout_val", "held-out sources")):
            if f"{real}_{key}" in history[-1]:
                ax.plot(epochs, [h[f"{real}_{key}"] for h in history], label=f"validation ({name})", marker=".")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(cm: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path) -> None:
    """Confusion matrix with rows normalised to recall, counts written in the cells."""
    plt = _pyplot()
    cm_t = torch.tensor(cm, dtype=torch.float64)
    rates = cm_t / cm_t.sum(1, keepdim=True).clamp(min=1)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * n, 0.8 + 0.6 * n))
    ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=45, ha="right")
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(cm_t[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_mistakes(images: torch.Tensor, probs: torch.Tensor, targets: torch.Tensor, classes: Sequence[str],
                  path: str | Path, per_class: int = 8) -> None:
    """A contact sheet of wrong answers (`images`: N×3×S×S uint8): one row per true class ("dog: 70 of 251
    wrong"), its most confident mistakes from left to right, each captioned with the answer and its confidence."""
    plt = _pyplot()
    rows = worst_mistakes(probs, targets, per_class)
    confidence, answers = probs.max(1)
    columns = max((len(found) for found in rows.values()), default=1)
    fig, axes = plt.subplots(max(len(rows), 1), columns, figsize=(1.6 * columns + 1.2, 1.8 * max(len(rows), 1)),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    if not rows:
        axes[0, 0].text(0.5, 0.5, f"no wrong answers among {len(targets)} photos", ha="center", va="center")
    for row, (c, found) in zip(axes, rows.items()):
        wrong = int(((targets == c) & (answers != c)).sum())
        row[0].set_ylabel(f"{classes[c]}\n{wrong} of {int((targets == c).sum())} wrong", fontsize=9)
        for ax, i in zip(row, found):
            ax.imshow(images[i].permute(1, 2, 0).cpu().numpy())
            ax.set_title(f"{classes[answers[i]]} {confidence[i].item():.0%}", fontsize=8)
    fig.suptitle("most confident wrong answers (row: the true class; above each photo: the answer given)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))   # room for the title above the first row
    fig.savefig(path, dpi=100)
    plt.close(fig)
