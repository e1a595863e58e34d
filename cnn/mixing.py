"""Batch mixing for training: torchvision's MixUp and CutMix, applied to whole batches, off unless asked for.

    python -m train --data raw-img --mixup 0.2 --cutmix 1.0     # alphas of their Beta distributions

With both on, each batch gets one of the two (torchvision's RandomChoice), as torchvision's reference recipes do.
They mix each photo with its neighbour in the batch (one λ per batch) and turn the labels into probabilities,
which nn.CrossEntropyLoss takes as they are, label smoothing included. Our own per-photo augmentation stays in
cnn.data.augment_batch: torchvision's v2 transforms draw one set of random parameters per call, so on a batch
tensor every photo would get the same crop, rotation and jitter.
"""
from __future__ import annotations

from typing import Callable

import torch

Mixer = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def make_mixer(mixup: float, cutmix: float, num_classes: int) -> Mixer | None:
    """torchvision's MixUp and/or CutMix for `num_classes` labels (an alpha of 0 leaves one out); None when
    both are off, so the default recipe runs exactly as it did."""
    from torchvision.transforms import v2

    for name, alpha in (("mixup", mixup), ("cutmix", cutmix)):
        if alpha < 0:
            raise ValueError(f"{name} alpha must be 0 (off) or positive, got {alpha}")
    mixers = [cls(alpha=alpha, num_classes=num_classes)
              for cls, alpha in ((v2.MixUp, mixup), (v2.CutMix, cutmix)) if alpha > 0]
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def mix_batch(mixer: Mixer, images: torch.Tensor, labels: torch.Tensor,
              generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(mixed images, label probabilities) for a float batch (N, 3, H, W) and its class indices.

    torchvision draws λ and the CutMix box from torch's global CPU RNG; here that RNG is seeded from the epoch's
    `generator` inside fork_rng, so a run's seed fixes every mix and dropout's draws are left as they were."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device).item())
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return mixer(images, labels)
