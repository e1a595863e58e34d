"""Model zoo: every architecture is registered by name and built with `create_model`.

`basic_cnn` is the tutorial's network, kept exactly as the baseline. `resnet_small` is our
default: a BatchNorm residual CNN with global pooling, so any input size works and it costs
a fraction of the tutorial's FLOPs. `resnet18` and `mobilenet_v3_small` are torchvision's, built
with `weights=None` (trained from scratch like the others), for a well-known point of comparison.
"""
from __future__ import annotations

import inspect
from types import ModuleType
from typing import Callable

import torch
from torch import nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build a registered architecture by name, as `timm.create_model` does."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(list_models())}")
    accepted = set(inspect.signature(_REGISTRY[name]).parameters) - {"num_classes"}
    if set(kwargs) - accepted:
        raise ValueError(f"{name} takes no argument {', '.join(sorted(set(kwargs) - accepted))}; "
                         f"it takes: {', '.join(sorted(accepted)) or 'none'}")
    return _REGISTRY[name](num_classes=num_classes, **kwargs)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- the tutorial's network -------------------------------------------------------------------

@register
def basic_cnn(num_classes: int, image_size: int = 256) -> nn.Module:
    """Ten unpadded 3×3 convs in pairs (16, 32, 64, 128, 256) with ReLU and 2×2 max-pool, then
    Dropout 0.25, Linear → 256, ReLU, Dropout 0.5, Linear. At 256×256 the map ends at 4×4×256
    (Linear 4096→256): 2,230,170 parameters for 10 classes. The Linear layer fixes the input size."""
    layers: list[nn.Module] = []
    c_in, side = 3, image_size
    for c_out in (16, 32, 64, 128, 256):
        layers += [nn.Conv2d(c_in, c_out, 3), nn.ReLU(inplace=True),
                   nn.Conv2d(c_out, c_out, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        c_in, side = c_out, (side - 4) // 2
    if side < 1:
        raise ValueError(f"basic_cnn needs an input of at least 156 px, got {image_size}")
    return nn.Sequential(*layers, nn.Flatten(), nn.Dropout(0.25), nn.Linear(256 * side * side, 256),
                         nn.ReLU(inplace=True), nn.Dropout(0.5), nn.Linear(256, num_classes))


# --- our default: a small BatchNorm residual network --------------------------------------------

def conv_bn(c_in: int, c_out: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3×3 conv-BN layers with an identity (or 1×1 strided) shortcut, as in ResNet-18."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn(c_in, c_out, stride), conv_bn(c_out, c_out, relu=False))
        nn.init.zeros_(self.body[-1][1].weight)  # each block starts as the identity: stable from step 1
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class ResNetSmall(nn.Module):
    """Strided stem, four residual stages that halve the map and double the width, global
    average pooling and one Linear layer. `features` ends at the last conv map (used by Grad-CAM)."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = (32, 64, 128, 256),
                 depths: tuple[int, ...] = (1, 1, 1, 1), dropout: float = 0.2):
        super().__init__()
        layers: list[nn.Module] = [conv_bn(3, widths[0], stride=2)]
        c_in = widths[0]
        for i, (width, depth) in enumerate(zip(widths, depths)):
            for j in range(depth):
                layers.append(BasicBlock(c_in, width, stride=2 if i > 0 and j == 0 else 1))
                c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout),
                                  nn.Linear(c_in, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register
def resnet_small(num_classes: int, widths: tuple[int, ...] = (32, 64, 128, 256),
                 depths: tuple[int, ...] = (1, 1, 1, 1), dropout: float = 0.2) -> nn.Module:
    return ResNetSmall(num_classes, tuple(widths), tuple(depths), dropout)


# --- well-known architectures from torchvision, from scratch --------------------------------------

def torchvision_models(arch: str) -> ModuleType:
    """torchvision.models, imported only for the architectures that are torchvision's. Without torchvision (an
    install with --no-deps, a trimmed environment) the error names the architecture and the fix, and cnn.hub turns
    it into a ModelLoadError, so that the app falls back to its bundled model instead of crashing."""
    try:
        import torchvision.models
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError(f"the {arch} architecture is torchvision's, and torchvision cannot be imported "
                                  f"({e}): pip install torchvision", name="torchvision") from None
    return torchvision.models

@register
def resnet18(num_classes: int) -> nn.Module:
    """torchvision's ResNet-18 (11.2 M parameters for 10 classes), random weights."""
    return torchvision_models("resnet18").resnet18(weights=None, num_classes=num_classes)


@register
def mobilenet_v3_small(num_classes: int, dropout: float = 0.2) -> nn.Module:
    """torchvision's MobileNetV3-Small (1.5 M parameters for 10 classes), random weights: cheap on a CPU."""
    return torchvision_models("mobilenet_v3_small").mobilenet_v3_small(weights=None, num_classes=num_classes,
                                                                       dropout=dropout)


def model_args_for(name: str, image_size: int, extra: dict | None = None) -> dict:
    """The keyword arguments that rebuild `name` later: `image_size` is included for the
    architectures whose shape depends on it (basic_cnn's Linear layer)."""
    args = dict(extra or {})
    if "image_size" in inspect.signature(_REGISTRY[name]).parameters:
        args.setdefault("image_size", image_size)
    return args
