"""How figures and warnings read to a person, the same on the page, in the batch table, the model card and
`train.evaluate`: a share is a whole percent, rounded as Gradio's Label rounds the page's probabilities (so
one photo's 53% reads 53% everywhere), the flag for a photo of none of the labels names how many there are, and
the one headline figure (how often it is right) is named the same way in the page's header, About and the card.
"""
from __future__ import annotations

import math
from typing import Any

from .holdout import REAL_SETS

ELSEWHERE = "photos from elsewhere"                  # the real-photo sets: never trained on, from other sources
HELD_BACK = "photos held back from its training"     # the split of its own training folders


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


def headline_set(metrics: dict[str, Any]) -> str | None:
    """The real-photo set ("real_val", "heldout_val") behind the headline: the worse one, as a visitor's own
    photos are likelier to score like it (config.json's worst_real_accuracy); None when none was measured."""
    real = [key for key in REAL_SETS if metrics.get(f"{key}_accuracy") is not None]
    return min(real, key=lambda key: metrics[f"{key}_accuracy"]) if real else None


def headline(metrics: dict[str, Any]) -> str:
    """The one figure a visitor reads: 'right 86% of the time on photos from elsewhere' (the worse real-photo
    set), else on the photos held back from its training; '' when nothing was measured."""
    key = headline_set(metrics)
    if key:
        return f"right {percent(metrics[f'{key}_accuracy'])} of the time on {ELSEWHERE}"
    if metrics.get("val_accuracy") is not None:
        return f"right {percent(metrics['val_accuracy'])} of the time on {HELD_BACK}"
    return ""


def headline_photos(metrics: dict[str, Any]) -> int:
    """How many photos the headline figure was measured on (0 when the model did not record it)."""
    key = headline_set(metrics)
    return sum(row.get("support", 0) for row in metrics.get(f"{key}_per_class", {}).values()) if key else 0


def capitalised(text: str) -> str:
    """A phrase such as headline()'s at the start of a sentence ('Right 86% …'); str.capitalize would lower the rest."""
    return text[:1].upper() + text[1:]
