"""cnn.models: the tutorial's network kept exactly, the registry, and the cheaper default."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cnn.models import count_parameters, create_model, list_models, model_args_for


def count_macs(model: nn.Module, side: int) -> int:
    """Multiply-accumulates of one image through every Conv2d and Linear layer."""
    total = 0

    def hook(module, _inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total += output[0].numel() * per_output
        else:
            total += module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, side, side))
    for h in handles:
        h.remove()
    return total


def test_basic_cnn_is_the_tutorial_network():
    model = create_model("basic_cnn", num_classes=10)
    assert count_parameters(model) == 2_230_170
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, 256, 256)).shape == (2, 10)
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 10


def test_basic_cnn_input_size_is_fixed_and_checked():
    assert count_parameters(create_model("basic_cnn", 10, image_size=160)) < 2_230_170
    with pytest.raises(ValueError, match="at least 156 px"):
        create_model("basic_cnn", 10, image_size=155)
    assert model_args_for("basic_cnn", 128) == {"image_size": 128}
    assert model_args_for("resnet_small", 128, {"widths": [8]}) == {"widths": [8]}


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(ValueError) as e:
        create_model("resnet9000", num_classes=3)
    assert "resnet9000" in str(e.value)
    assert all(name in str(e.value) for name in list_models())
    assert {"basic_cnn", "resnet_small"} <= set(list_models())


@pytest.mark.parametrize("side", [32, 64, 96, 129])
def test_resnet_small_takes_any_input_size(side):
    model = create_model("resnet_small", num_classes=7, widths=[8, 16, 32, 64])
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, 3, side, side)).shape == (2, 7)


def test_resnet_small_costs_less_than_basic_cnn():
    basic = count_macs(create_model("basic_cnn", 10), 256)
    small = count_macs(create_model("resnet_small", 10), 96)
    assert 700e6 < basic < 800e6           # about 0.77 GMACs per photo at 256×256
    assert small < basic / 4                # about 0.14 GMACs at 96×96
    assert count_parameters(create_model("resnet_small", 10)) < 2_230_170


def test_resnet_blocks_start_as_identity():
    model = create_model("resnet_small", num_classes=3, widths=[8, 8, 8, 8])
    block = model.features[1]
    x = torch.rand(1, 8, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(block.eval()(x), torch.relu(x))


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_architectures_build_from_scratch_and_round_trip(arch, tmp_path):
    from PIL import Image

    from cnn import hub
    from cnn.inference import Classifier

    assert arch in list_models()
    torch.manual_seed(0)
    model = create_model(arch, num_classes=4)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        model.train()(x)                                            # BatchNorm statistics off their defaults
        expected = model.eval()(x)
    assert expected.shape == (2, 4)
    config = hub.model_config(arch, model_args_for(arch, 64), ["a", "b", "c", "d"], 64, 0.875, (0.5,) * 3,
                              (0.25,) * 3, False, count_parameters(model))
    loaded, _ = hub.load_pretrained(hub.save_pretrained(model, tmp_path / arch, config))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected)
    photo = Image.effect_noise((80, 80), 40).convert("RGB")
    heat = Classifier.from_pretrained(tmp_path / arch).gradcam(photo)   # the last conv is found in either
    assert heat.shape == (80, 80) and heat.max() > 0
