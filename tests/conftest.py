"""Shared fixtures: generated photo folders and a tiny saved model (no network, no ../shared)."""
from __future__ import annotations

from pathlib import Path

import pytest

from imagegen import make_outlier_folder, make_shapes_folder, make_web_photos


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory) -> Path:
    """A learnable three-class task (circle / square / triangle), 40 photos each."""
    return make_shapes_folder(tmp_path_factory.mktemp("shapes"), per_class=40)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test session decodes into its own cache folder, never the user's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "xdg-cache"))


@pytest.fixture(scope="session")
def trained_run(shapes_dir, tmp_path_factory) -> Path:
    """A run folder from a short real training on the shapes task (a few seconds on a CPU)."""
    from cnn.config import make_config
    from cnn.engine import fit

    cfg = make_config(data=str(shapes_dir), run_dir=str(tmp_path_factory.mktemp("run")), epochs=4,
                      image_size=48, batch_size=32, lr=0.1, workers=1,
                      cache_dir=str(tmp_path_factory.mktemp("cache")), model_args={"widths": [16, 32, 64, 128]})
    return fit(cfg)


@pytest.fixture(scope="session")
def model_dir(trained_run) -> Path:
    """The model folder (config.json, model.safetensors, README.md) of `trained_run`."""
    return trained_run / "model"


@pytest.fixture(scope="session")
def real_run(shapes_dir, tmp_path_factory) -> Path:
    """A run picked and calibrated on a separate folder of bigger photos (`web-photos`, beside the run), with
    outlier exposure on generated photos of none of the shapes and progressive resizing 32 → 48 px."""
    from cnn.config import make_config
    from cnn.engine import fit

    root = tmp_path_factory.mktemp("real")
    val = make_web_photos(root / "web-photos")
    outliers = make_outlier_folder(root / "other", per_group=40)
    cfg = make_config(data=str(shapes_dir), val_data=str(val), outliers=str(outliers), outlier_fraction=0.5,
                      run_dir=str(root / "run"), epochs=6, image_size=48, progressive_from=32, batch_size=32,
                      lr=0.1, workers=1, cache_dir=str(tmp_path_factory.mktemp("cache")),
                      model_args={"widths": [16, 32, 64, 128]})
    return fit(cfg)
