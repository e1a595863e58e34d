"""All training hyperparameters in one place. The CLI only overrides these defaults.

`PRESETS["tutorial"]` is the tutorial's recipe, kept so results can be compared like for like.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class TrainConfig:
    data: list[str] = field(default_factory=list)   # sources: folders with one sub-folder per class, or
                                        # hf://datasets/user/name[@revision][/subfolder] (cnn.sources)
    val_data: str = ""                  # a separate folder of photos like the ones people will send: picks the
                                        # best epoch and calibrates (the in-split figure is still reported)
    holdout_sources: str = ""           # a JSON naming whole sources (repositories in the data's sources.csv)
                                        # never trained on: a second real-photo validation set (cnn.holdout)
    kind_fold: int = 0                  # the fold of that JSON's kinds of outlier photo never trained on: "none of
                                        # the ten" is measured on them (cnn.holdout)
    kinds_tune_only: bool = False       # the other named kinds fit the probe detector only, never outlier exposure
                                        # (all 64 px crops: exposure to them teaches "a small photo is none of these")
    outliers: str = ""                  # photos that are none of the classes (any layout): outlier exposure
    outlier_weight: float = 0.5         # weight of the loss that pushes their answers towards uniform
    outlier_fraction: float = 0.125     # outlier photos added to each batch, as a fraction of the batch
    synthetic_outliers: float = 0.0     # share of those outlier slots filled with photos made from the batch
                                        # itself (shuffled tiles, smooth noise: cnn.synthetic); all of them
                                        # when there is no outlier folder
    outlier_holdout: float = 0.4        # share of the outlier photos kept aside to measure "none of the ten"
    unknown_rate: float = 0.05          # share of real validation photos "none of the ten" may (wrongly) flag
    detector: str = "energy"            # "none of the ten": cnn.ood's scores (probability, energy, knn) joined by +
                                        # (energy alone did best on photos of unseen sources: docs/none-of-the-ten.md, bench/ood.py)
    knn_k: int = 10                     # the nearest-neighbour detector's k
    run_dir: str = ""                   # where the run is written ('' = runs/<time>)
    arch: str = "resnet_small"
    model_args: dict[str, Any] = field(default_factory=dict)
    image_size: int = 96                # side of the square the model sees
    progressive_from: int = 0           # progressive resizing: first epochs train at this side, growing to
                                        # image_size by 3/4 of the run (0 = off)
    crop_pct: float = 0.875             # eval: resize the short side to image_size / crop_pct, centre-crop
    epochs: int = 30
    batch_size: int = 128
    optimizer: str = "sgd"              # sgd (nesterov) | adam | adamw
    lr: float = 0.2                     # peak learning rate for batch_size (scaled linearly by world size)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "onecycle"          # onecycle (linear warm-up, cosine decay) | constant
    warmup_epochs: float = 2.0
    label_smoothing: float = 0.1
    mixup: float = 0.0                  # torchvision MixUp on whole batches: its Beta alpha (0 = off; cnn.mixing)
    cutmix: float = 0.0                 # torchvision CutMix likewise (both on: one of the two per batch)
    ema_decay: float = 0.0              # exponential moving average of weights; 0 disables
    teacher: str = ""                   # a model folder or Hub repo to distil from ('' = off; cnn.distill)
    distill_weight: float = 0.5         # share of the labelled photos' loss that follows the teacher
    distill_temperature: float = 2.0    # softens both answers before they are compared
    balanced_sampling: bool = True      # draw classes equally often (rare classes are not drowned out)
    # augmentation, applied to whole batches (on the GPU when there is one)
    scale: tuple[float, float] = (0.35, 1.0)   # random-resized-crop area range
    ratio: tuple[float, float] = (0.75, 1.333)  # and aspect-ratio range
    rotation: float = 0.0               # degrees, uniform in ±rotation
    flip_p: float = 0.5
    color_jitter: float = 0.3           # brightness/contrast/saturation strength
    grayscale: float = 0.0              # share of photos turned grey (colour varies between sources)
    erasing: float = 0.0                # share of photos with one random rectangle replaced by noise (occlusion)
    tta_flip: bool = True               # average predictions over the photo and its mirror
    blur_sigmas: tuple[float, ...] = (0.0, 0.5)  # test-time softening tried at export (Gaussian blur, σ in px:
                                        # cnn.data.eval_view); the one under which the worse real-photo set is most
                                        # accurate is kept (on the bundled recipe, 0.5 paid: docs/results.md)
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    val_fraction: float = 0.15
    seed: int = 0
    device: str = "auto"                # auto | cpu | cuda
    workers: int = 0                    # decoding processes for the cache (0 = all cores)
    amp: bool = True                    # train in bf16/fp16 autocast on CUDA, bf16 on CPUs that have it natively
    channels_last: bool = True          # NHWC memory layout: faster convs on CPU and GPU
    compile: bool = False               # torch.compile the model
    cache_dir: str = ""                 # '' = $XDG_CACHE_HOME/cnn-animals
    push_to_hub: str = ""               # USER/NAME to push the model to after training
    private: bool = False
    preset: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
        tuples = {f.name for f in dataclasses.fields(cls) if str(f.type).startswith("tuple")}
        values = {k: tuple(v) if k in tuples else v for k, v in values.items()}
        data = values.get("data")
        if data is not None:  # a single folder is one source (configs written before there were several)
            values["data"] = [str(d) for d in ([data] if isinstance(data, (str, os.PathLike)) else data) if str(d)]
        return cls(**values)


PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    # The tutorial: basic_cnn, Adam 1e-4, batch 16, 50 epochs, resize 300 / crop 256,
    # flip p=0.3, rotation 40°, ImageNet mean/std, no other tricks.
    "tutorial": dict(arch="basic_cnn", image_size=256, crop_pct=256 / 300, epochs=50, batch_size=16,
                     optimizer="adam", lr=1e-4, weight_decay=0.0, schedule="constant", warmup_epochs=0.0,
                     label_smoothing=0.0, ema_decay=0.0, balanced_sampling=False,
                     scale=((256 / 300) ** 2, (256 / 300) ** 2),  # a random 256 crop of the 300 resize
                     ratio=(1.0, 1.0), rotation=40.0, flip_p=0.3, color_jitter=0.0, tta_flip=False,
                     amp=False),
}


def make_config(preset: str = "default", **overrides: Any) -> TrainConfig:
    """Defaults, then the preset, then explicit overrides (e.g. from the command line)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}, "preset": preset}
    return TrainConfig.from_dict(values)


def lr_batch_warning(preset: str, overrides: dict[str, Any]) -> str:
    """Words for a batch size changed without the learning rate: the preset's rate is tuned for its own batch,
    and the peak rate scales linearly with the batch (Goyal et al. 2017); '' when nothing needs saying."""
    base = make_config(preset)
    batch = overrides.get("batch_size")
    if batch is None or batch == base.batch_size or overrides.get("lr") is not None:
        return ""
    return (f"--batch-size {batch} with the {preset} preset's --lr {base.lr:g}, which is tuned for batch "
            f"{base.batch_size}: the learning rate should scale with the batch; try --lr "
            f"{base.lr * batch / base.batch_size:.3g}")
