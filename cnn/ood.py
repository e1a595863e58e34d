""""None of the ten": scores that say a photo looks like none of the model's labels.

The calibrated top probability alone is weak evidence: a small network trained on ten classes gives a T-shirt
or a street a confident "cat", and outlier exposure only teaches it the outlier photos it saw. A distance in
feature space stands on its own: the cosine distance from a photo's penultimate features (the input of the
last Linear layer) to its k-th nearest neighbour among the training photos' features (Sun et al., 2022,
"Out-of-distribution detection with deep nearest neighbors"). The feature bank is stored beside the weights as
`detector.safetensors` (tensors only, never a pickle), so the app loads it offline; its threshold lives in
config.json with the others.

Four scores, each "higher = more unknown": `probability` (1 − the calibrated top probability: the rule before
this module, meaningful once outlier exposure has taught the model to spread its answer), `energy` (−logsumexp
of the logits), `knn`, and `probe`: a linear read of the same features, fitted at export to tell the training
photos from the outlier photos the run was taught with (stored as `probe.safetensors`). Energy knows only that
no label scores high; the probe also knows what photos of other things look like, and on kinds of animal it was
never shown it flags several times more (bench/ood_kinds.py, docs/none-of-the-ten.md). A model's detector is a union of some of them ("energy+knn"): a photo is flagged when
any score is over its threshold, and `fit_thresholds` shares one budget (the share of real animal photos that
may be wrongly flagged) between them in the order the detector names them ("probe+energy": the probe takes half,
the energy score fills the rest).
"""
from __future__ import annotations

import contextlib
import difflib
import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
from torch import nn

DETECTOR_FILE = "detector.safetensors"
PROBE_FILE = "probe.safetensors"


class DetectorError(RuntimeError):
    """The stored detector cannot be used (missing, damaged, or made for another model)."""


@contextlib.contextmanager
def feature_tap(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """While open, every forward pass this thread runs appends its penultimate features (the last Linear
    layer's input) to the yielded list: one forward pass gives both the answer and the features. Passes that
    other threads run meanwhile on the same model (the app serves two requests at once) are not recorded."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise DetectorError("the model has no Linear layer to take features from")
    found: list[torch.Tensor] = []
    owner = threading.get_ident()

    def keep(_module, inputs, _output):
        if threading.get_ident() == owner:
            found.append(inputs[0].detach().float())

    handle = linears[-1].register_forward_hook(keep)
    try:
        yield found
    finally:
        handle.remove()


class Outputs(NamedTuple):
    """What a pass over photos gives the scores, each averaged over the flip TTA views."""
    probs: torch.Tensor      # N×labels class probabilities (as the model gives them, or calibrated)
    logits: torch.Tensor     # N×labels logits: the energy score's input
    features: torch.Tensor   # N×D penultimate features (N×0 when not read): the kNN detector's input


def forward_views(model: nn.Module, x: torch.Tensor, tta_flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean softmax, mean logits) over the photos and, with flip TTA, their mirrors: the one forward pass the
    Classifier and the training's evaluation share."""
    logits = model(x).float()
    probs = logits.softmax(1)
    if tta_flip:
        mirrored = model(x.flip(3)).float()
        probs, logits = (probs + mirrored.softmax(1)) / 2, (logits + mirrored) / 2
    return probs, logits


def normalise(features: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(features.float(), dim=1)


def energy_score(logits: torch.Tensor) -> torch.Tensor:
    """−logsumexp of the logits (Liu et al., 2020): low energy = in distribution."""
    return -torch.logsumexp(logits.float(), 1)


SCORES = ("probability", "energy", "knn", "probe")
# Where config.json's "metrics" keeps each score's threshold. `unknown_below` is a top probability (flagged under
# it), as it always was; the others are scores (flagged over them).
CONFIG_KEYS = {"probability": "unknown_below", "energy": "unknown_energy_above", "knn": "unknown_distance_above",
               "probe": "unknown_probe_above"}


def parse_detector(spec: str) -> list[str]:
    """'energy+knn' → ['energy', 'knn'] (checked)."""
    names = [name.strip() for name in spec.split("+") if name.strip()]
    unknown = [name for name in names if name not in SCORES]
    if unknown or not names:
        close = [name if name in SCORES else next(iter(difflib.get_close_matches(name, SCORES, n=1)), "")
                 for name in names]
        meant = f" (did you mean {'+'.join(close)!r}?)" if names and all(close) else ""
        raise ValueError(f"unknown detector {spec!r}{meant}: combine {', '.join(SCORES)} with '+', e.g. energy+knn")
    return names


def compute_scores(names, probs: torch.Tensor, logits: torch.Tensor, features: torch.Tensor,
                   knn: "KnnDetector | None", probe: "ProbeDetector | None" = None) -> dict[str, torch.Tensor]:
    """The scores `names` asks for, from one forward pass's calibrated probabilities, logits and penultimate
    features (each averaged over the flip TTA views: the last layer is linear after pooling, so the mean logits
    are that layer applied to the mean features). Only `knn` and `probe` read the features."""
    found = {}
    if "probability" in names:
        found["probability"] = 1 - probs.max(1).values
    if "energy" in names:
        found["energy"] = energy_score(logits)
    if "knn" in names and knn is not None:
        found["knn"] = knn.score(features)
    if "probe" in names and probe is not None:
        found["probe"] = probe.score(features)
    return {name: found[name] for name in names if name in found}   # in the order asked: fit_thresholds' shares


def thresholds_to_config(thresholds: dict[str, float]) -> dict[str, float]:
    """The thresholds as config.json keeps them (see CONFIG_KEYS)."""
    return {CONFIG_KEYS[name]: round(1 - t if name == "probability" else t, 4) for name, t in thresholds.items()}


def thresholds_from_config(metrics: dict) -> dict[str, float]:
    """A model's thresholds, from its config.json metrics (older models: the top probability alone)."""
    found = {name: float(metrics[key]) for name, key in CONFIG_KEYS.items() if key in metrics}
    if "probability" in found:
        found["probability"] = 1 - found["probability"]
    return found


def bank_sample(labels: torch.Tensor, per_class: int = 500, seed: int = 0) -> torch.Tensor:
    """Indices of up to `per_class` photos of each class, in order: the kNN bank. Every class is equally
    present, the bank stays small enough that scoring one photo is one small matrix product, and only these
    photos need their features computed."""
    g = torch.Generator().manual_seed(seed)
    keep = [idx[torch.randperm(len(idx), generator=g)[:per_class]]
            for idx in ((labels == c).nonzero().flatten() for c in labels.unique())]
    return torch.cat(keep).sort().values


@dataclass
class KnnDetector:
    """Cosine distance to the k-th nearest training photo in feature space."""
    bank: torch.Tensor          # M×D L2-normalised features of training photos
    k: int = 10

    @classmethod
    def fit(cls, features: torch.Tensor, k: int = 10) -> "KnnDetector":
        """The detector whose bank is these training photos' features (pick them with `bank_sample`)."""
        if len(features) <= k:
            raise DetectorError(f"a nearest-neighbour detector with k={k} needs more than {k} training photos")
        return cls(normalise(features), k)

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """N distances (0 = identical direction, 2 = opposite); higher = less like any training photo."""
        sims = normalise(features) @ self.bank.float().T
        return 1 - sims.topk(self.k, dim=1).values[:, -1]

    def save(self, folder: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        from .io import atomic_write
        path = Path(folder) / DETECTOR_FILE
        with atomic_write(path) as tmp:
            save_file({"bank": self.bank.half().contiguous()}, str(tmp),
                      metadata={"kind": "knn_cosine", "k": str(self.k)})
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike, feature_dim: int) -> "KnnDetector":
        """The stored detector, checked against the model it serves (a clear DetectorError otherwise)."""
        path = Path(folder) / DETECTOR_FILE
        tensors, meta = read_detector(path, "knn_cosine", {"bank": 2}, feature_dim)
        k = int(meta.get("k", "0")) if meta.get("k", "").isdigit() else 0
        if not 0 < k < len(tensors["bank"]):
            raise DetectorError(f"{path} is not a nearest-neighbour detector this version can use")
        return cls(tensors["bank"].float(), k)


@dataclass
class ProbeDetector:
    """Logistic regression on L2-normalised penultimate features: the training photos against the outlier
    photos the run was taught with, both sides weighing the same. Higher = more like photos of other things."""
    weight: torch.Tensor        # D
    bias: float

    @classmethod
    def fit(cls, inside: torch.Tensor, outside: torch.Tensor, l2: float = 1e-3) -> "ProbeDetector":
        """The probe that tells `inside` features (training photos) from `outside` ones (outlier photos)."""
        if len(inside) < 2 or len(outside) < 2:
            raise DetectorError("a probe needs at least 2 training photos and 2 photos of other things")
        x = normalise(torch.cat([inside, outside]))
        y = torch.cat([torch.zeros(len(inside)), torch.ones(len(outside))])
        weight, bias = torch.zeros(x.shape[1], requires_grad=True), torch.zeros(1, requires_grad=True)
        optimiser = torch.optim.LBFGS([weight, bias], max_iter=200, line_search_fn="strong_wolfe")
        balance = torch.tensor(len(inside) / len(outside))

        def loss() -> torch.Tensor:
            optimiser.zero_grad()
            value = (nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, y, pos_weight=balance)
                     + l2 * weight.pow(2).sum())
            value.backward()
            return value
        with torch.enable_grad():
            optimiser.step(loss)
        return cls(weight.detach(), float(bias.detach()))

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """N logits of "a photo of something else"."""
        return normalise(features) @ self.weight + self.bias

    def save(self, folder: str | os.PathLike) -> Path:
        from safetensors.torch import save_file

        from .io import atomic_write
        path = Path(folder) / PROBE_FILE
        with atomic_write(path) as tmp:
            save_file({"weight": self.weight.float().contiguous(), "bias": torch.tensor([self.bias])}, str(tmp),
                      metadata={"kind": "linear_probe"})
        return path

    @classmethod
    def load(cls, folder: str | os.PathLike, feature_dim: int) -> "ProbeDetector":
        """The stored probe, checked against the model it serves (a clear DetectorError otherwise)."""
        tensors, _ = read_detector(Path(folder) / PROBE_FILE, "linear_probe", {"weight": 1, "bias": 1}, feature_dim)
        return cls(tensors["weight"].float(), float(tensors["bias"][0]))


def read_detector(path: Path, kind: str, dims: dict[str, int], feature_dim: int) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors (`dims`: name → number of dimensions; the first one's last is the feature size) and metadata
    of a stored detector of this `kind`, or a DetectorError that says what is wrong."""
    from safetensors import SafetensorError, safe_open

    wrong = DetectorError(f"{path} is not a {kind.replace('_', ' ')} detector this version can use")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("kind") != kind or not set(dims) <= set(f.keys()):
                raise wrong
            tensors = {name: f.get_tensor(name) for name in dims}
    except FileNotFoundError:
        raise DetectorError(f"{path} is missing") from None
    except (SafetensorError, OSError, ValueError, KeyError, json.JSONDecodeError) as e:
        raise DetectorError(f"{path} is damaged or not a detector ({type(e).__name__}: {e})") from None
    if any(tensors[name].ndim != n for name, n in dims.items()):
        raise wrong
    size = tensors[next(iter(dims))].shape[-1]
    if size != feature_dim:
        raise DetectorError(f"{path} holds {size}-dimensional features; the model gives {feature_dim}")
    return tensors, meta


def group_of(path: str) -> str:
    """The group of an outlier photo: its sub-folder (e.g. other_animals), "(top)" for one at the top."""
    return path.split("/")[0] if "/" in path else "(top)"


def flagged_by(unknown: torch.Tensor, groups: list[str]) -> dict[str, dict[str, float]]:
    """{group: {"photos": n, "flagged": share}} for each group of outlier photos."""
    rows = {}
    for name in sorted(set(groups)):
        mask = torch.tensor([g == name for g in groups])
        rows[name] = {"photos": int(mask.sum()), "flagged": round(unknown[mask].double().mean().item(), 4)}
    return rows


def threshold_at_rate(scores: torch.Tensor, rate: float) -> float:
    """The score above which `rate` of these (in-distribution) scores lie."""
    if rate <= 0 or len(scores) == 0:
        return float("inf")
    return float(torch.quantile(scores.double(), 1 - rate))


def fit_thresholds(scores: dict[str, torch.Tensor], rate: float) -> dict[str, float]:
    """Thresholds for "flag when any score is over its threshold" that together flag `rate` of these
    in-distribution photos: each score but the last takes an equal share of the budget on its own, and the last
    one fills the union up to `rate` (at least one photo's worth, so that it always takes part)."""
    names = list(scores)
    n = len(next(iter(scores.values())))
    thresholds = {name: threshold_at_rate(scores[name], rate / len(names)) for name in names[:-1]}
    flagged = unknown_mask({k: scores[k] for k in thresholds}, thresholds) if thresholds else torch.zeros(n, dtype=torch.bool)
    rest = scores[names[-1]][~flagged].sort(descending=True).values
    target = max(1, math.ceil(rate * n - 1e-9) - int(flagged.sum()))
    thresholds[names[-1]] = float(rest[min(target, len(rest)) - 1]) - 1e-6 if len(rest) else float("inf")
    return thresholds


def unknown_mask(scores: dict[str, torch.Tensor], thresholds: dict[str, float]) -> torch.Tensor:
    """The rule the app, the batch table and the reports share: a photo looks like none of the labels when any
    of its scores is over that score's threshold."""
    flagged = None
    for name, threshold in thresholds.items():
        if name in scores:
            over = scores[name] > threshold
            flagged = over if flagged is None else flagged | over
    if flagged is None:
        return torch.zeros(len(next(iter(scores.values()))) if scores else 0, dtype=torch.bool)
    return flagged
