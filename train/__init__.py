"""Command-line entry points: `python -m train` (train), `python -m train.evaluate`, `python -m train.push`."""
