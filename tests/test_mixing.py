"""cnn.mixing: torchvision's MixUp / CutMix on whole batches, repeatable under the run's seed, trained with soft
targets; off by default."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from cnn.config import TrainConfig, make_config
from cnn.engine import fit
from cnn.mixing import make_mixer, mix_batch
from train.__main__ import parse_args

C = 5


def batch(n: int = 8, side: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, side, side, generator=g), torch.arange(n) % C


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_off_by_default_and_from_the_command_line():
    assert (TrainConfig().mixup, TrainConfig().cutmix) == (0.0, 0.0) and make_mixer(0, 0, C) is None
    args = parse_args(["--data", "x", "--mixup", "0.2", "--cutmix", "1.0"])
    assert (make_config(mixup=args.mixup, cutmix=args.cutmix).mixup, args.cutmix) == (0.2, 1.0)
    with pytest.raises(ValueError, match="mixup alpha must be 0"):
        make_mixer(-1, 0, C)


@pytest.mark.parametrize("mixup, cutmix", [(0.4, 0), (0, 1.0), (0.4, 1.0)])
def test_shapes_and_probabilities(mixup, cutmix):
    x, y = batch()
    mixed, target = mix_batch(make_mixer(mixup, cutmix, C), x, y, gen(0))
    assert mixed.shape == x.shape and mixed.dtype == x.dtype
    assert target.shape == (8, C) and torch.allclose(target.sum(1), torch.ones(8))
    assert (target >= 0).all()


def test_mixup_mixes_the_whole_batch_with_one_lambda():
    x, y = batch()
    mixed, target = mix_batch(make_mixer(0.4, 0, C), x, y, gen(3))
    lam = target[0, y[0]].item()
    assert 0 < lam < 1
    # every photo is λ of itself and 1-λ of its neighbour in the batch, and its target likewise
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x.roll(1, 0))
    one_hot = nn.functional.one_hot(y, C).float()
    torch.testing.assert_close(target, lam * one_hot + (1 - lam) * one_hot.roll(1, 0))


def test_cutmix_pastes_one_box_into_every_photo():
    x, y = batch()
    mixed, target = mix_batch(make_mixer(0, 1.0, C), x, y, gen(5))
    from_neighbour = (mixed == x.roll(1, 0)) & (mixed != x)
    per_photo = from_neighbour.all(1).flatten(1).sum(1)             # pixels taken from the neighbour
    assert (per_photo == per_photo[0]).all() and per_photo[0] > 0    # the same box in every photo
    lam = target[0, y[0]].item()
    assert lam == pytest.approx(1 - per_photo[0].item() / 16 ** 2)


def test_the_run_seed_fixes_the_mix_and_leaves_the_global_rng_alone():
    x, y = batch()
    mixer = make_mixer(0.4, 1.0, C)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = mix_batch(mixer, x, y, gen(7))
    assert torch.equal(torch.get_rng_state(), before)               # dropout's draws are untouched
    b = mix_batch(mixer, x, y, gen(7))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    others = [mix_batch(mixer, x, y, gen(s)) for s in range(8, 12)]
    assert any(not torch.equal(a[1], o[1]) for o in others)


def test_the_loss_takes_the_soft_targets_with_label_smoothing():
    x, y = batch()
    _, target = mix_batch(make_mixer(0.4, 0, C), x, y, gen(3))
    logits = torch.randn(8, C, generator=gen(4))
    smoothed = target * 0.9 + 0.1 / C
    expected = -(smoothed * logits.log_softmax(1)).sum(1).mean()
    torch.testing.assert_close(nn.CrossEntropyLoss(label_smoothing=0.1)(logits, target), expected)


def test_training_with_mixup_and_cutmix_is_repeatable(shapes_dir, tmp_path):
    common = dict(data=str(shapes_dir), epochs=1, image_size=32, batch_size=32, workers=1, seed=5,
                  cache_dir=str(tmp_path / "cache"), model_args={"widths": [8, 16, 32, 64]})
    runs = [fit(make_config(run_dir=str(tmp_path / name), **common, **mix))
            for name, mix in (("a", dict(mixup=0.4, cutmix=1.0)), ("b", dict(mixup=0.4, cutmix=1.0)), ("plain", {}))]
    a, b, plain = (load_file(str(run / "model" / "model.safetensors")) for run in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], plain[k]) for k in a)         # the mixing was applied
    saved = json.loads((runs[0] / "train_config.json").read_text())
    assert (saved["mixup"], saved["cutmix"]) == (0.4, 1.0)
