"""Training throughput: our default recipe against the tutorial's, on this machine, in one run.

Why: the default recipe (resnet_small at 96 px, batch 128, batch augmentation on uint8 tensors)
is meant to train at least 5x more images per second than the tutorial's (basic_cnn at 256 px,
batch 16) on the same hardware; the ratio is only meaningful when both are measured together.
The default recipe trains in bf16 autocast where the CPU multiplies bf16 natively, so it is also
measured in fp32 (`--no-amp`): `bf16_speedup` is what that buys here (1.0 on CPUs without it).

How: both recipes go through the real training step, `cnn.engine.train_one_epoch` (sampling,
`augment_batch`, normalisation, channels-last, forward, backward, optimiser, scheduler) on the
same generated folder, decoded beforehand with `cnn.data.load_images` (the one-off decoding is
not timed, as in metrics.json's `images_per_s`). Each recipe first runs one warm-up batch, then
`--images` images per timed epoch (at least one full batch); the recipes alternate `--repeats` times and the median counts.

    python bench/train_speed.py                 # prints default_images_per_s, default_fp32_images_per_s,
                                                # tutorial_images_per_s, speedup, bf16_speedup
    python bench/train_speed.py --quick         # a few batches, for CI
    python bench/train_speed.py --data DIR --photos 600   # a sample of a real folder
    python bench/train_speed.py --profile       # also: where the default recipe's step time goes
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import busy_cores, emit, note

import torch  # noqa: E402

from cnn.config import make_config  # noqa: E402
from cnn.data import Listing, augment_batch, load_images, normalize, scan_folder  # noqa: E402
from cnn.engine import Runtime, autocast_dtype, make_optimizer, make_scheduler, train_one_epoch  # noqa: E402
from cnn.models import create_model, model_args_for  # noqa: E402


def sample_listing(listing: Listing, photos: int) -> Listing:
    """At most `photos` files, spread evenly over the classes."""
    per_class = max(1, photos // len(listing.classes))
    keep, taken = [], {}
    for i, label in enumerate(listing.labels):
        if taken.get(label, 0) < per_class:
            keep.append(i)
            taken[label] = taken.get(label, 0) + 1
    return Listing(listing.roots, [listing.paths[i] for i in keep], [listing.labels[i] for i in keep], listing.classes)


class Recipe:
    """One preset, ready to train: decoded images, model, optimiser and schedule, as `fit` builds them."""

    def __init__(self, name: str, preset: str, listing: Listing, cache_dir: str, images: int, **overrides):
        self.name = name
        self.cfg = make_config(preset, epochs=1000, device="cpu", workers=1, cache_dir=cache_dir, **overrides)
        self.rt = Runtime(torch.device("cpu"))
        side = round(self.cfg.image_size / self.cfg.crop_pct)
        self.data = load_images(listing, side, cache_dir, workers=1)   # decoded here, never timed
        torch.manual_seed(0)
        args = model_args_for(self.cfg.arch, self.cfg.image_size, self.cfg.model_args)
        self.net = create_model(self.cfg.arch, num_classes=len(listing.classes), **args)
        if self.cfg.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        steps = max(1, images // self.cfg.batch_size)
        self.optimizer = make_optimizer(self.net, self.cfg, 1)
        self.scheduler = make_scheduler(self.optimizer, self.cfg, steps)
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        n = len(self.data.labels)
        # train_one_epoch runs len(train_idx) // batch_size steps: repeat the photos to fill them
        self.timed_idx = torch.arange(steps * self.cfg.batch_size) % n
        self.warmup_idx = torch.arange(self.cfg.batch_size) % n
        self.epoch = 0

    def run(self, idx: torch.Tensor) -> dict[str, float]:
        stats = train_one_epoch(self.net, self.data, idx, self.cfg, self.rt, self.optimizer, self.scheduler,
                                self.scaler, None, self.epoch)
        self.epoch += 1
        return stats

    def profile(self, batches: int) -> dict[str, float]:
        """Milliseconds per batch spent in augmentation vs forward+backward+step (same ops as the loop)."""
        cfg, gen = self.cfg, torch.Generator().manual_seed(0)
        amp = autocast_dtype(self.rt, cfg)
        criterion = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        aug = step = 0.0
        for b in range(batches + 1):
            idx = self.timed_idx[:cfg.batch_size]
            t0 = time.perf_counter()
            x = augment_batch(self.data.images[idx], cfg.image_size, gen, scale=cfg.scale, ratio=cfg.ratio,
                              rotation=cfg.rotation, flip_p=cfg.flip_p, color_jitter=cfg.color_jitter,
                              grayscale=cfg.grayscale, erasing=cfg.erasing)
            x = normalize(x, cfg.mean, cfg.std)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            t1 = time.perf_counter()
            with torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None):
                loss = criterion(self.net(x), self.data.labels[idx])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            t2 = time.perf_counter()
            if b:  # the first batch is warm-up
                aug, step = aug + t1 - t0, step + t2 - t1
        return {"augment_ms": 1000 * aug / batches, "step_ms": 1000 * step / batches}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="a folder-per-class photo folder (default: generated shapes)")
    p.add_argument("--photos", type=int, default=240, help="photos decoded from the folder")
    p.add_argument("--images", type=int, default=1024, help="images trained per timed epoch and recipe (at least one batch)")
    p.add_argument("--repeats", type=int, default=3, help="timed epochs per recipe (alternating); median reported")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = PyTorch's default)")
    p.add_argument("--profile", action="store_true", help="also print augmentation vs step time per batch")
    p.add_argument("--quick", action="store_true", help="one or two batches per recipe, for CI (~30 s)")
    args = p.parse_args()
    if args.quick:
        args.photos, args.images, args.repeats = 48, 32, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    note(f"torch threads {torch.get_num_threads()}")
    emit("busy_cores_at_start", busy_cores())  # > 0.2: numbers taken under contention

    with tempfile.TemporaryDirectory() as tmp:
        if args.data:
            listing = sample_listing(scan_folder(args.data), args.photos)
        else:
            from imagegen import make_shapes_folder
            per_class = max(2, args.photos // 3)
            listing = scan_folder(make_shapes_folder(Path(tmp) / "photos", per_class=per_class, size=320))
        cache = str(Path(tmp) / "cache")
        recipes = [Recipe("default", "default", listing, cache, args.images),
                   Recipe("default_fp32", "default", listing, cache, args.images, amp=False),
                   Recipe("tutorial", "tutorial", listing, cache, args.images)]
        note(f"default recipe trains in {autocast_dtype(recipes[0].rt, recipes[0].cfg) or 'fp32'}")
        for r in recipes:
            r.run(r.warmup_idx)
        rates: dict[str, list[float]] = {r.name: [] for r in recipes}
        for rep in range(args.repeats):
            for r in recipes:
                stats = r.run(r.timed_idx)
                rates[r.name].append(stats["images_per_s"])
                note(f"repeat {rep + 1}: {r.name:12s} {stats['images_per_s']:7.1f} img/s "
                     f"(batch {r.cfg.batch_size}, {len(r.timed_idx)} images, {stats['train_seconds']:.1f} s)")
        default, fp32, tutorial = (statistics.median(rates[r.name]) for r in recipes)
        emit("default_images_per_s", default)
        emit("default_fp32_images_per_s", fp32)
        emit("tutorial_images_per_s", tutorial)
        emit("speedup", default / tutorial)
        emit("bf16_speedup", default / fp32)
        if args.profile:
            for r in recipes:
                for name, value in r.profile(batches=1 if args.quick else 3).items():
                    emit(f"{r.name}_{name}", value)


if __name__ == "__main__":
    main()
