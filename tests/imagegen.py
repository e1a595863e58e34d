"""Photos the test suite and benchmarks generate themselves: a learnable shapes task and every
awkward file a real folder can hold. No photo from ../shared is ever used here."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLOURS = {"circle": (220, 40, 40), "square": (40, 160, 60), "triangle": (40, 70, 220)}


def shape_image(kind: str, size: int = 64, seed: int = 0) -> Image.Image:
    """A coloured shape of class `kind` at a random place and size on a noisy background."""
    rng = random.Random(f"{kind}-{size}-{seed}")
    noise = np.random.default_rng(rng.randrange(2**32)).integers(90, 170, (size, size, 3), dtype=np.uint8)
    img = Image.fromarray(noise)
    draw = ImageDraw.Draw(img)
    r = rng.uniform(0.22, 0.35) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    colour = tuple(min(255, max(0, c + rng.randint(-30, 30))) for c in COLOURS[kind])
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return img


def make_shapes_folder(root: Path, per_class: int = 40, size: int = 64, classes=SHAPES) -> Path:
    """root/<shape>/NNN.jpg|png: a small task a CNN learns in a few epochs."""
    for kind in classes:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = shape_image(kind, size, i)
            img.save(root / kind / (f"{i:03d}.png" if i % 4 == 0 else f"{i:03d}.jpg"))
    return root
