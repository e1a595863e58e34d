"""cnn.synthetic: outliers made from the training batch (shuffled tiles, smooth noise), on whole batches,
repeatable under the run's seed, and wired into training with or without an outlier folder."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file

from cnn.config import TrainConfig, make_config
from cnn.engine import fit
from cnn.synthetic import patch_shuffle, smooth_noise, synthetic_outliers
from train.__main__ import parse_args


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(n: int = 6, side: int = 16) -> torch.Tensor:
    return torch.rand(n, 3, side, side, generator=gen(1))


def tiles(images: torch.Tensor, grid: int = 4) -> torch.Tensor:
    n, c, h, w = images.shape
    return images.reshape(n, c, grid, h // grid, grid, w // grid).permute(0, 2, 4, 1, 3, 5).reshape(n, grid * grid, -1)


def test_off_by_default_and_from_the_command_line():
    assert TrainConfig().synthetic_outliers == 0.0
    assert parse_args(["--data", "d", "--synthetic-outliers", "0.5"]).synthetic_outliers == 0.5


def test_patch_shuffle_moves_each_photos_own_tiles_in_an_order_of_its_own():
    x = batch()
    out = patch_shuffle(x, gen(0))
    assert out.shape == x.shape and not torch.equal(out, x)
    before, after = tiles(x), tiles(out)
    orders = []
    for i in range(len(x)):     # every tile of the result is one of the same photo's tiles, each used once
        match = (after[i][:, None] == before[i][None]).all(-1)
        assert (match.sum(1) == 1).all() and (match.sum(0) == 1).all()
        orders.append(match.int().argmax(1))
    assert len({tuple(o.tolist()) for o in orders}) == len(x)      # per photo, not one order for the batch


def test_patch_shuffle_keeps_the_rows_a_grid_does_not_cover_and_refuses_tiny_photos():
    x = torch.rand(2, 3, 18, 18, generator=gen(2))
    out = patch_shuffle(x, gen(0))
    assert torch.equal(out[:, :, 16:], x[:, :, 16:]) and torch.equal(out[:, :, :, 16:], x[:, :, :, 16:])
    with pytest.raises(ValueError, match="too small"):
        patch_shuffle(torch.rand(1, 3, 3, 3), gen(0))


def test_smooth_noise_is_smooth_colour_in_range():
    noise = smooth_noise(8, 32, gen(3), torch.device("cpu"))
    assert noise.shape == (8, 3, 32, 32) and noise.min() >= 0 and noise.max() <= 1
    step = (noise[..., 1:] - noise[..., :-1]).abs().mean()        # neighbours are alike, unlike white noise
    white = torch.rand(8, 3, 32, 32, generator=gen(4))
    assert step < 0.5 * (white[..., 1:] - white[..., :-1]).abs().mean()
    assert len({round(noise[i].std().item(), 4) for i in range(8)}) > 1


def test_synthetic_outliers_half_shuffled_half_noise_and_repeatable():
    x = batch(n=3)
    out = synthetic_outliers(x, 5, gen(7))
    assert out.shape == (5, 3, 16, 16) and out.min() >= 0 and out.max() <= 1
    assert torch.equal(out, synthetic_outliers(x, 5, gen(7))) and not torch.equal(out, synthetic_outliers(x, 5, gen(8)))
    for i in range(3):      # the first three: the batch's photos, their pixels rearranged
        assert torch.equal(out[i].flatten().sort().values, x[i].flatten().sort().values)
    assert synthetic_outliers(x, 0, gen(7)).shape == (0, 3, 16, 16)


@pytest.mark.parametrize("with_folder", [False, True])
def test_training_with_synthetic_outliers_is_repeatable(shapes_dir, tmp_path, with_folder):
    from imagegen import make_outlier_folder

    common = dict(data=str(shapes_dir), epochs=1, image_size=32, batch_size=32, workers=1, seed=5,
                  cache_dir=str(tmp_path / "cache"), model_args={"widths": [8, 16, 32, 64]},
                  outliers=str(make_outlier_folder(tmp_path / "other", per_group=6)) if with_folder else "")
    runs = [fit(make_config(run_dir=str(tmp_path / name), **common, **extra))
            for name, extra in (("a", dict(synthetic_outliers=0.5)), ("b", dict(synthetic_outliers=0.5)), ("plain", {}))]
    a, b, plain = (load_file(str(run / "model" / "model.safetensors")) for run in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], plain[k]) for k in a)          # the made-up outliers were trained on
    assert json.loads((runs[0] / "train_config.json").read_text())["synthetic_outliers"] == 0.5
    card = (runs[0] / "model" / "README.md").read_text()
    assert "cut into tiles and shuffled" in card and ("50% of those outliers" in card) == with_folder
    assert "cut into tiles" not in (runs[2] / "model" / "README.md").read_text()


def test_outlier_holdout_zero_trains_on_every_outlier(shapes_dir, tmp_path, caplog):
    from imagegen import make_outlier_folder

    assert parse_args(["--data", "d", "--outlier-holdout", "0"]).outlier_holdout == 0.0
    with caplog.at_level(logging.INFO):
        run = fit(make_config(data=str(shapes_dir), epochs=1, image_size=32, batch_size=32, workers=1,
                              cache_dir=str(tmp_path / "cache"), model_args={"widths": [8, 16, 32, 64]},
                              outlier_holdout=0.0, synthetic_outliers=0.25, run_dir=str(tmp_path / "r"),
                              outliers=str(make_outlier_folder(tmp_path / "other", per_group=6))))
    assert "outlier exposure: 12 photos of none of the classes (none held out)" in caplog.text
    assert "synthetic outliers (cnn.synthetic) fill 25% of the outlier places" in caplog.text
    found = json.loads((run / "model" / "config.json").read_text())["metrics"]
    assert "unknown_energy_above" in found and "outliers_flagged" not in found   # nothing was left to measure it on
    assert "held out to measure" not in (run / "model" / "README.md").read_text()
