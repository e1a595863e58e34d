"""Outliers made from the training batch itself, for outlier exposure beside (or without) an --outliers folder.

    python -m train --data raw-img --outliers other --synthetic-outliers 0.5   # half the outlier slots

A fixed folder of "none of these" photos teaches the model what *those* photos look like; photos from elsewhere
(a T-shirt, a street) still come back as a confident "cat". Two kinds of made-up photos carry over further,
because they remove what makes a photo one of the classes while keeping what a small network latches on to:
a photo cut into a grid of tiles and shuffled (an animal's fur and colours, no animal's shape) and smooth colour
noise (blobs and gradients, like walls, sky and fabric). Both are made on whole augmented float batches, on the
device the batch is on, from the epoch's seeded generator, so a run repeats exactly. torchvision has neither.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

GRID = 4            # tiles per side of a shuffled photo (28 px tiles at 112 px)
NOISE_SIDES = (2, 4, 8, 16)   # the noise's own resolution before it is blown up: coarse blobs to fine mottling


def patch_shuffle(images: torch.Tensor, generator: torch.Generator, grid: int = GRID) -> torch.Tensor:
    """(N, C, H, W) floats with each photo's grid×grid tiles put in a random order of its own (a side that is
    not a multiple of `grid` keeps its last rows and columns where they are)."""
    n, c, h, w = images.shape
    th, tw = h // grid, w // grid
    if th == 0 or tw == 0:
        raise ValueError(f"photos of {h}×{w} px are too small for a {grid}×{grid} grid")
    out = images.clone()
    body = out[:, :, :th * grid, :tw * grid]
    tiles = body.reshape(n, c, grid, th, grid, tw).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, c, th, tw)
    order = torch.rand(n, grid * grid, generator=generator, device=generator.device).argsort(1).to(images.device)
    tiles = tiles[torch.arange(n, device=images.device)[:, None], order]
    body.copy_(tiles.reshape(n, grid, grid, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, th * grid, tw * grid))
    return out


def smooth_noise(n: int, size: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """`n` photos of size×size: uniform colour noise drawn at a coarse random resolution and blown up bicubically,
    in [0, 1]."""
    out = torch.empty(n, 3, size, size, device=device)
    sides = torch.randint(len(NOISE_SIDES), (n,), generator=generator, device=generator.device).tolist()
    for i, side in enumerate(NOISE_SIDES):
        pick = [j for j, s in enumerate(sides) if s == i]
        if pick:
            low = torch.rand(len(pick), 3, side, side, generator=generator, device=generator.device).to(device)
            out[pick] = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False)
    return out.clamp_(0, 1)


def synthetic_outliers(images: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """`n` outliers for an augmented float batch (N, 3, S, S) in [0, 1]: the first half shuffles the tiles of the
    batch's first photos (cycled when `n` exceeds the batch), the rest is smooth noise."""
    if n <= 0:
        return images[:0]
    shuffled = n - n // 2
    source = images[torch.arange(shuffled, device=images.device) % len(images)]
    return torch.cat([patch_shuffle(source, generator), smooth_noise(n // 2, images.shape[-1], generator, images.device)])
