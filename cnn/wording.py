"""How figures and warnings read to a person, the same on the page, in the batch table, the model card and
`train.evaluate`: a share is a whole percent, rounded as Gradio's Label rounds the page's probabilities (so
one photo's 53% reads 53% everywhere), and the flag for a photo of none of the labels names how many there are.
"""
from __future__ import annotations

import math


def whole_percent(share: float) -> int:
    """0.5345 → 53: JavaScript's Math.round(share * 100), as the page's Label shows it (half up, where
    Python's round() and format() go to the even neighbour: 82.5 → 82)."""
    value = share * 100
    whole = math.floor(value)
    return whole + (value - whole >= 0.5)


def percent(share: float) -> str:
    """0.5345 → '53%' (rounded as whole_percent)."""
    return f"{whole_percent(share)}%"


def none_of(count: int) -> str:
    """The flag for a photo that looks like none of a model's `count` labels: 'none of the 10'."""
    return f"none of the {count}"
