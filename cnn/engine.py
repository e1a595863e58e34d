"""The training loop: train, validate, checkpoint, repeat (the shape of pytorch/examples/imagenet).

`fit(cfg)` writes a run folder:
    train_config.json   the resolved configuration
    command.txt         the command that started the run (the model card shows it, also after --resume)
    sources.json        every --data source: its folder, and for a Hub dataset the exact commit (cnn.sources)
    split.json          the exact train/validation photos (reused by resume and evaluation)
    metrics.json        per-epoch history, best accuracy, per-class results, confusion matrix
    curves.png, confusion.png
    mistakes.png        the real photos' most confident wrong answers, per class (not copied into model/)
    checkpoints/last.pt, checkpoints/best.pt   written atomically
    model/              the best weights as a model folder (config.json, model.safetensors, README.md)

Each epoch draws its sample order, augmentation and dropout from RNGs seeded by (seed, epoch,
rank), so a resumed run replays exactly what an uninterrupted one would have done.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import card, distill, hub, metrics, ood, sources
from .config import TrainConfig
from .holdout import REAL_SETS, HoldoutSpec, held_out, kinds_of, split_by_source
from .data import (DataError, ImageSet, Listing, augment_batch, eval_view, hash_split, load_images, map_labels, normalize,
                   scan_folder, scan_folders, scan_photos, stratified_split)
from .io import atomic_write, check_writable

if TYPE_CHECKING:
    from .inference import Classifier
from .mixing import make_mixer, mix_batch
from .synthetic import synthetic_outliers
from .models import count_parameters, create_model, model_args_for

log = logging.getLogger(__name__)

MIN_STEPS = 50      # optimiser steps in all under which a run learns next to nothing (the CLI warns)
# How long the other ranks wait while rank 0 works alone (builds the photo cache, exports, pushes): NCCL gives up
# on a barrier after 10 minutes, less than decoding a large set takes, so these waits are on a gloo group of their own.
WAIT_TIMEOUT = timedelta(hours=6)
# GPU memory kept free beside the cached photos: the model, its optimiser state, activations and the allocator's
# cache (a resnet_small batch of 128 at 128 px in bf16 takes about 2 GiB; resnet18 at 224 px several).
GPU_HEADROOM = 4 * 2**30


@dataclass
class Runtime:
    """Where this process runs: its device and its place among DistributedDataParallel ranks."""
    device: torch.device
    rank: int = 0
    world: int = 1
    distributed: bool = False   # launched by torchrun: a process group (of one process too, so that
                                # `torchrun --nproc_per_node 1` runs the DDP path, NCCL included, on one GPU)
    waits: Any = None           # the gloo group that `barrier` waits on, with WAIT_TIMEOUT

    @property
    def main(self) -> bool:
        return self.rank == 0


def no_gpu_reason() -> str:
    """What to check when PyTorch sees no GPU: a CPU build, or a CUDA build without a driver or device."""
    if not torch.version.cuda:
        return f"this PyTorch ({torch.__version__}) is a CPU build: install a CUDA one (requirements-gpu*.txt, README)"
    return (f"this PyTorch is a CUDA {torch.version.cuda} build, but it finds no GPU: check `nvidia-smi` (a driver "
            f"for CUDA {torch.version.cuda.split('.')[0]}, else requirements-gpu-cu12.txt's build) and "
            "CUDA_VISIBLE_DEVICES")


def setup_runtime(device: str) -> Runtime:
    """Pick the device (saying loudly when a CUDA build falls back to the CPU); join the process group when
    launched by torchrun (it sets RANK), with the gloo group that `barrier` waits on."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu" and torch.version.cuda:
            log.warning("NO GPU: training on the CPU, many times slower; %s (--device cpu if the CPU is meant)",
                        no_gpu_reason())
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"--device cuda was asked for, but PyTorch sees no CUDA GPU: {no_gpu_reason()}")
    if "RANK" not in os.environ:
        return Runtime(torch.device(device))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device == "cuda" else "gloo")
    waits = dist.new_group(backend="gloo", timeout=WAIT_TIMEOUT)
    return Runtime(torch.device(device, local_rank) if device == "cuda" else torch.device("cpu"), rank, world, True,
                   waits)


def barrier(rt: Runtime) -> None:
    """Every rank waits here for rank 0's work alone (the photo cache, the split, the export and push), up to
    WAIT_TIMEOUT rather than the process group's own (NCCL's 10 minutes)."""
    if rt.distributed:
        dist.barrier(group=rt.waits)


def photos_device(nbytes: int, side: int, rt: Runtime) -> torch.device:
    """Where the `nbytes` of cached photos (`side` px) live while training: on the GPU when they fit there beside
    GPU_HEADROOM (no loader, no copies), else in CPU memory, each batch copied over: slower, said with the sizes,
    instead of a CUDA out-of-memory error."""
    if rt.device.type != "cuda":
        return rt.device
    free, total = torch.cuda.mem_get_info(rt.device)
    if nbytes + GPU_HEADROOM <= free:
        return rt.device
    log.warning("%s: the photos take %.1f GiB (uint8, %d px) and training about %.1f GiB more, but only %.1f of the "
                "GPU's %.1f GiB are free: the photos stay in CPU memory and each batch is copied over (slower); a "
                "smaller --image-size or fewer photos keeps them on the GPU", rt.device, nbytes / 2**30, side,
                GPU_HEADROOM / 2**30, free / 2**30, total / 2**30)
    return torch.device("cpu")


# --- one epoch -------------------------------------------------------------------------------------

def epoch_generator(cfg: TrainConfig, epoch: int, rank: int, device: torch.device) -> torch.Generator:
    """The RNG for one epoch's order and augmentation; also reseeds torch (dropout)."""
    seed = cfg.seed * 1_000_003 + epoch * 1_009 + rank
    torch.manual_seed(seed)
    return torch.Generator(device=device).manual_seed(seed)


def epoch_order(train_labels: torch.Tensor, cfg: TrainConfig, epoch: int) -> torch.Tensor:
    """Positions into the training set for one epoch, the same on every rank (and on CPU and GPU: drawn on
    the CPU, wherever the labels live)."""
    g = torch.Generator().manual_seed(cfg.seed * 7919 + epoch)
    train_labels = train_labels.cpu()
    n = len(train_labels)
    if not cfg.balanced_sampling:
        return torch.randperm(n, generator=g)
    counts = torch.bincount(train_labels).double()
    weights = (1.0 / counts)[train_labels]
    return torch.multinomial(weights, n, replacement=True, generator=g)


def epoch_image_size(cfg: TrainConfig, epoch: int) -> int:
    """Progressive resizing: small, fast epochs first, growing linearly to `image_size` by 3/4 of the run
    (in steps of 8 px), then the rest at full size, so the model ends on the size it is used at."""
    ramp = max(1, round(0.75 * cfg.epochs) - 1)
    if not cfg.progressive_from or epoch >= ramp:
        return cfg.image_size
    side = cfg.progressive_from + (cfg.image_size - cfg.progressive_from) * epoch / ramp
    return int(8 * round(side / 8))


def synthetic_share(cfg: TrainConfig, has_outliers: bool) -> float:
    """Share of each batch's outlier places that cnn.synthetic fills: `synthetic_outliers`, or all of them when
    there are no outlier photos to fill the rest (0 when synthetic outliers are off)."""
    return (cfg.synthetic_outliers if has_outliers else 1.0) if cfg.synthetic_outliers else 0.0


def uniform_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy to the uniform distribution: outlier exposure teaches "none of these looks right"."""
    return -logits.float().log_softmax(1).mean()


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX): there bf16 autocast trains about twice
    as fast as fp32; elsewhere bf16 is emulated and slower, so training stays in fp32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def autocast_dtype(rt: Runtime, cfg: TrainConfig) -> torch.dtype | None:
    """The mixed-precision type training runs in (None: fp32). Per-epoch validation runs in it too (it only picks
    the epoch, and costs a quarter of a CPU run in fp32); the exported model is measured in fp32, as it serves."""
    if not cfg.amp:
        return None
    if rt.device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None


def train_one_epoch(model: nn.Module, data: ImageSet, train_idx: torch.Tensor, cfg: TrainConfig, rt: Runtime,
                    optimizer: torch.optim.Optimizer, scheduler, scaler, ema, epoch: int,
                    outliers: torch.Tensor | None = None, teacher: distill.Teacher | None = None) -> dict[str, float]:
    """One pass over the training photos; `outliers` (uint8 photos of none of the classes), when given, and
    outliers made from the batch itself (`cfg.synthetic_outliers`, cnn.synthetic) are mixed into every batch and
    trained towards a uniform answer (outlier exposure). A `teacher` (cnn.distill) answers each batch's labelled
    photos too, and the loss on them follows its answers by `cfg.distill_weight`."""
    model.train()
    gen = epoch_generator(cfg, epoch, rt.rank, rt.device)
    order = train_idx[epoch_order(data.labels[train_idx], cfg, epoch)]
    order = order[rt.rank::rt.world]
    steps = max(1, len(train_idx) // (cfg.batch_size * rt.world))  # equal on every rank (DDP syncs each step)
    amp = autocast_dtype(rt, cfg)
    size = epoch_image_size(cfg, epoch)
    has_real = outliers is not None and len(outliers) > 0
    made = synthetic_share(cfg, has_real)
    n_out = round(cfg.batch_size * cfg.outlier_fraction) if has_real or made else 0
    n_made = round(n_out * made)   # slots for cnn.synthetic's outliers
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)   # takes indices or probabilities
    mixer = make_mixer(cfg.mixup, cfg.cutmix, len(data.classes))
    loss_sum = torch.zeros((), device=rt.device)
    correct = torch.zeros((), device=rt.device)
    seen, start = 0, time.perf_counter()
    bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False,
               disable=None if rt.main else True, dynamic_ncols=True)   # None: only on a terminal, not in a log file
    for step in bar:
        idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size]
        x = data.images[idx.to(data.images.device)].to(rt.device, non_blocking=True)
        y = data.labels[idx.to(data.labels.device)].to(rt.device, non_blocking=True)
        n = len(y)
        if n_out > n_made:
            pick = torch.randint(len(outliers), (n_out - n_made,), generator=gen, device=gen.device)
            x = torch.cat([x, outliers[pick.to(outliers.device)].to(rt.device, non_blocking=True)])
        x = augment_batch(x, size, gen, scale=cfg.scale, ratio=cfg.ratio, rotation=cfg.rotation,
                          flip_p=cfg.flip_p, color_jitter=cfg.color_jitter,
                          grayscale=cfg.grayscale, erasing=cfg.erasing)
        if n_made:
            x = torch.cat([x, synthetic_outliers(x[:n], n_made, gen)])
        target = y
        if mixer is not None:   # the labelled photos only: outliers keep their own (uniform) target
            mixed, target = mix_batch(mixer, x[:n], y, gen)
            x = torch.cat([mixed, x[n:]])
        labelled = x[:n]   # as the teacher reads them: the student's augmented (and mixed) photos, in [0, 1]
        x = normalize(x, cfg.mean, cfg.std)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(rt.device.type, dtype=amp or torch.float32, enabled=amp is not None):
            out = model(x)
            logits = out[:n]
            loss = criterion(logits, target)
            if teacher is not None:
                soft = distill.distillation_loss(logits, teacher.logits(labelled, cfg.channels_last),
                                                 cfg.distill_temperature)
                loss = (1 - cfg.distill_weight) * loss + cfg.distill_weight * soft
            if n_out:
                loss = loss + cfg.outlier_weight * uniform_loss(out[n:])
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update_parameters(model)
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == (target.argmax(1) if target.ndim == 2 else y)).sum()   # a mix: its larger part
        seen += len(y)
        if rt.main and (step % 10 == 0 or step == steps - 1):
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.1%}",
                            img_s=f"{seen * rt.world / (time.perf_counter() - start):.0f}", px=size)
    totals = torch.stack([loss_sum, correct, torch.tensor(float(seen), device=rt.device)])
    if rt.distributed:
        dist.all_reduce(totals)
    elapsed = time.perf_counter() - start
    return {"train_loss": totals[0].item() / totals[2].item(), "train_accuracy": totals[1].item() / totals[2].item(),
            "images_per_s": totals[2].item() / elapsed, "train_seconds": elapsed}


def predict_probs(model: nn.Module, images: torch.Tensor, size: int, mean, std, tta_flip: bool,
                  device: torch.device, batch_size: int = 256, channels_last: bool = False,
                  amp: torch.dtype | None = None) -> torch.Tensor:
    """Class probabilities for a uint8 batch of cached photos: centre crop, normalise, optional flip TTA."""
    return predict_outputs(model, images, size, mean, std, tta_flip, device, batch_size, channels_last, amp).probs


@torch.inference_mode()
def predict_outputs(model: nn.Module, images: torch.Tensor, size: int, mean, std, tta_flip: bool,
                    device: torch.device, batch_size: int = 256, channels_last: bool = False,
                    amp: torch.dtype | None = None, blur_sigma: float = 0.0) -> ood.Outputs:
    """Raw class probabilities, logits and penultimate features for cached photos, as the Classifier computes
    them (in fp32, or under `amp` autocast; the outputs are fp32 either way: forward_views and feature_tap
    return fp32). `blur_sigma`: the test-time softening (cnn.data.eval_view)."""
    model.eval()
    parts = []
    for start in range(0, len(images), batch_size):
        x = eval_view(images[start:start + batch_size].to(device), size, mean, std, blur_sigma)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with ood.feature_tap(model) as features, \
                torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
            probs, logits = ood.forward_views(model, x, tta_flip)
        parts.append(ood.Outputs(probs.cpu(), logits.cpu(), (sum(features) / len(features)).cpu()))
    if not parts:
        return ood.Outputs(torch.zeros(0, 1), torch.zeros(0, 1), torch.zeros(0, 1))
    return ood.Outputs(*(torch.cat(column) for column in zip(*parts)))


def classifier_outputs(clf: "Classifier", images: torch.Tensor, device: torch.device = torch.device("cpu"),
                       batch_size: int = 256) -> ood.Outputs:
    """`predict_outputs` with everything a Classifier reads photos with (its size, normalisation, flip TTA and
    softening), the probabilities calibrated by its temperature: what it would answer for each cached photo."""
    raw, logits, features = predict_outputs(clf.model.to(device), images, clf.image_size, clf.mean, clf.std,
                                            clf.tta_flip, device, batch_size=batch_size,
                                            channels_last=clf.channels_last, blur_sigma=clf.blur_sigma)
    return ood.Outputs(metrics.calibrate(raw, clf.temperature), logits, features)


def validate(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, classes: list[str], cfg: TrainConfig,
             rt: Runtime) -> tuple[float, dict[str, Any]]:
    """Loss and metrics on validation photos (sharded across ranks, then gathered)."""
    probs = predict_probs(model, images[rt.rank::rt.world], cfg.image_size, cfg.mean, cfg.std, cfg.tta_flip,
                          rt.device, channels_last=cfg.channels_last, amp=autocast_dtype(rt, cfg))
    targets = targets[rt.rank::rt.world].cpu()
    if rt.distributed:
        gathered: list[Any] = [None] * rt.world
        dist.all_gather_object(gathered, (probs, targets))
        probs = torch.cat([p for p, _ in gathered])
        targets = torch.cat([t for _, t in gathered])
    loss = F.nll_loss(probs.clamp_min(1e-8).log(), targets).item()
    return loss, metrics.summarize(probs, targets, classes)


# --- optimisation ----------------------------------------------------------------------------------

def make_optimizer(model: nn.Module, cfg: TrainConfig, world: int) -> torch.optim.Optimizer:
    """No weight decay on BatchNorm and biases; the learning rate scales with the global batch."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    lr = cfg.lr * world
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=True)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use sgd, adam or adamw")


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """Per-step learning-rate factor: linear warm-up then cosine decay to zero, or constant."""
    total = cfg.epochs * steps_per_epoch
    warmup = max(1, round(cfg.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if cfg.schedule == "constant":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

    if cfg.schedule not in ("onecycle", "constant"):
        raise ValueError(f"unknown schedule {cfg.schedule!r}; use onecycle or constant")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --- checkpoints -------------------------------------------------------------------------------------

def save_checkpoint(state: dict[str, Any], run_dir: Path, is_best: bool) -> None:
    folder = run_dir / "checkpoints"
    folder.mkdir(exist_ok=True)
    with atomic_write(folder / "last.pt") as tmp:
        torch.save(state, tmp)
    if is_best:
        with atomic_write(folder / "best.pt") as tmp:
            shutil.copyfile(folder / "last.pt", tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Our own checkpoint, loaded with weights_only=True: tensors and plain data, no code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint at {path}: the run stopped before its first epoch ended; "
                                "start it again without --resume") from None
    except Exception as e:  # a damaged zip raises several types
        raise RuntimeError(f"checkpoint {path} is damaged or incomplete ({type(e).__name__}: {e}); "
                           "it was not loaded") from None


# --- the run -------------------------------------------------------------------------------------------

def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{cfg.arch}"


def load_split(run_dir: Path, data: ImageSet, cfg: TrainConfig, rt: Runtime) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's train/validation photos: read from split.json, or drawn once and written there."""
    path = run_dir / "split.json"
    if rt.main and not path.exists():
        train, val = stratified_split(data.labels.tolist(), cfg.val_fraction, cfg.seed)
        with atomic_write(path) as tmp:
            tmp.write_text(json.dumps({"train": [data.paths[i] for i in train],
                                       "val": [data.paths[i] for i in val]}, indent=0))
    barrier(rt)  # every rank, always: a rank that saw rank 0's file already must not skip it
    split = json.loads(path.read_text())
    where = {p: i for i, p in enumerate(data.paths)}
    missing = [p for p in split["train"] + split["val"] if p not in where]
    if missing:
        raise RuntimeError(f"{len(missing)} photo(s) of this run's split are no longer readable in "
                           f"{', '.join(cfg.data)} (e.g. {missing[0]}); the run cannot continue on changed data")
    return (torch.tensor([where[p] for p in split["train"]]), torch.tensor([where[p] for p in split["val"]]))


def few_steps_warning(train_photos: int, cfg: TrainConfig, world: int = 1) -> str:
    """Words for a run too short to learn anything (under MIN_STEPS optimiser steps in all), saying what to
    change; '' for a run long enough."""
    per_epoch = max(1, train_photos // (cfg.batch_size * world))
    if per_epoch * cfg.epochs >= MIN_STEPS:
        return ""
    epochs = math.ceil(MIN_STEPS / per_epoch)
    batch = train_photos * cfg.epochs // (MIN_STEPS * world)
    fixes = [f"--epochs {epochs}"] + ([f"--batch-size {batch}"] if batch >= 8 else []) + ["more photos"]
    return (f"this run takes only {per_epoch * cfg.epochs} optimiser steps in all ({train_photos} training photos / "
            f"batch {cfg.batch_size * world} = {per_epoch} per epoch, x {cfg.epochs} epochs); a model needs about "
            f"{MIN_STEPS} or more to learn anything. Try {' or '.join(fixes)}.")


def fit(cfg: TrainConfig, resume: str | os.PathLike | None = None, command: str = "") -> Path:
    """Train `cfg` (or continue the run in `resume`) and return the run folder.

    A requested push is checked (token, write access, repo) before anything else, and a push that fails at
    the end raises HubError after the run is saved. A new run that stops before its first checkpoint leaves
    no run folder behind: there is nothing in it to resume."""
    rt = setup_runtime(cfg.device)
    if rt.main and cfg.push_to_hub:
        try:
            hub.prepare_repo(cfg.push_to_hub, cfg.private)
        except hub.HubError as e:
            raise hub.HubError(f"--push-to-hub {cfg.push_to_hub}: {e} (nothing was trained)") from None
    run_dir = Path(resume) if resume else Path(cfg.run_dir or default_run_dir(cfg))
    if rt.distributed:  # the default name holds the time: every rank must use rank 0's
        shared = [str(run_dir)]
        dist.broadcast_object_list(shared, src=0)
        run_dir = Path(shared[0])
    new = rt.main and not resume and not run_dir.exists()
    try:
        return _train(cfg, rt, run_dir, resume, command)
    except BaseException:
        if new and not (run_dir / "checkpoints").exists():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def _train(cfg: TrainConfig, rt: Runtime, run_dir: Path, resume: str | os.PathLike | None, command: str) -> Path:
    """fit's body: prepare the data and the model, run the epochs, export (and push) the best one."""
    command = command or " ".join([os.path.basename(sys.executable), "-m", "train"] + sys.argv[1:])
    if resume and (run_dir / "command.txt").exists():  # the model card shows how the run began, not "--resume"
        command = (run_dir / "command.txt").read_text().strip()
    if rt.main:
        check_writable(run_dir)
        (run_dir / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")
        (run_dir / "command.txt").write_text(command + "\n")

    used = sources.resolve_all(cfg.data, sources.read_record(run_dir) if resume else None, cfg.cache_dir or None)
    split_val = None if cfg.val_data else sources.validation_split(used)
    if split_val:   # train/ + test/: the data's own other split validates, as --val-data would
        cfg = replace(cfg, val_data=str(split_val))
        if rt.main:
            log.info("validating on the data's own %s split (%s); --val-data FOLDER would replace it", split_val.name,
                     split_val)
    listing = scan_folders([source.folder for source in used])
    teacher = load_teacher(cfg, listing.classes, rt)   # a teacher that cannot serve stops the run before the photos load
    holdout = HoldoutSpec.read(cfg.holdout_sources, cfg.kind_fold) if cfg.holdout_sources else None
    held_listing = None
    if holdout:
        listing, held_listing = split_by_source(listing, holdout)
    if rt.main:
        sources.write_record(run_dir, used, listing)
    side = round(cfg.image_size / cfg.crop_pct)
    data = load_cached(listing, side, cfg, rt)
    train_idx, val_idx = load_split(run_dir, data, cfg, rt)
    real = load_real_sets(cfg, held_listing, side, data.classes, rt)
    outliers = load_outliers(cfg, listing, side, rt, holdout)
    photo_bytes = data.images[0].nbytes if len(data.images) else 0   # on a GPU: the set, its validation copy, outliers
    where = photos_device(photo_bytes * (len(data.images) + len(val_idx) + (len(outliers.train) if outliers else 0)),
                          side, rt)
    data = ImageSet(data.images.to(where), data.labels.to(where), data.paths, data.classes)
    split_images, split_targets = data.images[val_idx.to(data.images.device)], data.labels[val_idx.to(data.labels.device)]
    train_outliers = outliers.images[outliers.train].to(where) if outliers else None

    model_args = model_args_for(cfg.arch, cfg.image_size, cfg.model_args)
    torch.manual_seed(cfg.seed)  # the initial weights too: the same seed gives the same run
    net = create_model(cfg.arch, num_classes=len(data.classes), **model_args).to(rt.device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last)
    steps_per_epoch = max(1, len(train_idx) // (cfg.batch_size * rt.world))
    if rt.main and few_steps_warning(len(train_idx), cfg, rt.world):
        log.warning("%s", few_steps_warning(len(train_idx), cfg, rt.world))
    optimizer = make_optimizer(net, cfg, rt.world)
    scheduler = make_scheduler(optimizer, cfg, steps_per_epoch)
    amp = autocast_dtype(rt, cfg)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=amp == torch.float16)
    ema = (torch.optim.swa_utils.AveragedModel(net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema_decay),
                                               use_buffers=True) if cfg.ema_decay > 0 else None)
    start_epoch, best_score, best_epoch, history, best = 0, [-1.0, 0.0], 0, [], {}
    if resume:
        ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        net.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        if ema is not None:
            ema.load_state_dict(ckpt["ema"])
        start_epoch, best_score, best_epoch = ckpt["epoch"], ckpt["best_score"], ckpt["best_epoch"]
        history, best = ckpt["history"], ckpt["best"]
        if rt.main:
            log.info("resuming %s after epoch %d (best validation accuracy %.1f%%)", run_dir, start_epoch, 100 * best_score[0])
    model = torch.nn.parallel.DistributedDataParallel(net) if rt.distributed else net
    if cfg.compile:
        model = torch.compile(model)
    eval_net = ema.module if ema is not None else net
    if rt.main:
        log.info("%s: %s photos in %d classes (%d train / %d validation), %s, %s parameters, device %s x%d%s, %s",
                 run_dir, len(data.paths), len(data.classes), len(train_idx), len(val_idx), cfg.arch,
                 f"{count_parameters(net):,}", rt.device.type, rt.world,
                 f" (DistributedDataParallel, {dist.get_backend()})" if rt.distributed else "",
                 f"{str(amp).removeprefix('torch.')} autocast" if amp else "fp32")
        if real:
            log.info("the best epoch is picked by the worse accuracy of: %s",
                     ", ".join(f"{real_set_name(cfg, key)} ({len(photos.paths)} photos)" for key, photos in real.items()))
        if outliers:
            log.info("outlier exposure: %d photos of none of the classes (%s)", len(outliers.train),
                     f"{len(outliers.held)} more held out to measure it" if len(outliers.held) else "none held out")
        if outliers and len(outliers.tune) > len(outliers.train):
            log.info("%d outlier photos of the named kinds only fit the probe detector (--kinds-tune-only)",
                     len(outliers.tune) - len(outliers.train))
        if outliers and len(outliers.unseen_kinds):
            log.info("never trained on: %d outlier photos of the kinds %s (fold %d), to measure 'none of the ten' "
                     "on kinds never seen", len(outliers.unseen_kinds), ", ".join(holdout.held_out_kinds), cfg.kind_fold)
        if cfg.synthetic_outliers:
            log.info("synthetic outliers (cnn.synthetic) fill %.0f%% of the outlier places",
                     100 * synthetic_share(cfg, bool(outliers)))
        if teacher:
            log.info("distilling from %s (%s parameters, %d px): weight %.2f, temperature %.1f", teacher.source,
                     f"{count_parameters(teacher.model):,}", teacher.size, cfg.distill_weight, cfg.distill_temperature)

    for epoch in range(start_epoch, cfg.epochs):
        stats = train_one_epoch(model, data, train_idx, cfg, rt, optimizer, scheduler, scaler, ema, epoch,
                                train_outliers, teacher)
        val_loss, summary = validate(eval_net, split_images, split_targets, data.classes, cfg, rt)
        row = {"epoch": epoch + 1, "train_loss": round(stats["train_loss"], 4),
               "train_accuracy": round(stats["train_accuracy"], 4), "val_loss": round(val_loss, 4),
               "val_accuracy": summary["accuracy"], "lr": optimizer.param_groups[0]["lr"],
               "image_size": epoch_image_size(cfg, epoch),
               "images_per_s": round(stats["images_per_s"], 1), "seconds": round(stats["train_seconds"], 1)}
        scores = {"split": summary}
        for key, photos in real.items():
            real_loss, scores[key] = validate(eval_net, photos.images, photos.labels, data.classes, cfg, rt)
            row.update({f"{key}_loss": round(real_loss, 4), f"{key}_accuracy": scores[key]["accuracy"]})
        history.append(row)
        # the best epoch: the most accurate on the real photos (the worse of the real-photo sets, so that no kind
        # of photo from elsewhere is sacrificed), and of equally accurate ones the one with the lowest loss
        keys = list(real) or ["val"]
        score = [min(scores[k if real else "split"]["accuracy"] for k in keys), -max(row[f"{k}_loss"] for k in keys)]
        is_best = score > best_score
        if is_best:
            best_score, best_epoch, best = score, epoch + 1, scores
        if rt.main:
            log.info("epoch %d/%d  train loss %.3f acc %.1f%%  val loss %.3f acc %.1f%%%s%s  %d px  %.0f img/s  %.0fs",
                     epoch + 1, cfg.epochs, row["train_loss"], 100 * row["train_accuracy"], val_loss,
                     100 * summary["accuracy"], "".join(f"  {real_set_name(cfg, k)} acc {100 * row[f'{k}_accuracy']:.1f}%" for k in real),
                     " (best)" if is_best else "", row["image_size"], row["images_per_s"], row["seconds"])
            save_checkpoint({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                             "ema": ema.state_dict() if ema is not None else None, "epoch": epoch + 1,
                             "best_score": best_score, "best_epoch": best_epoch, "history": history,
                             "best": best}, run_dir, is_best)
            write_metrics(run_dir, history, best_epoch, best, data.classes)
        barrier(rt)

    if rt.main:
        export_model(run_dir, cfg, data, train_idx, real or {"split": ImageSet(split_images, split_targets, [], data.classes)},
                     outliers, rt.device, model_args, command)
    pushed = push_model(run_dir, cfg) if rt.main and cfg.push_to_hub else ""
    barrier(rt)
    if pushed:
        raise hub.HubError(pushed)
    return run_dir


def push_model(run_dir: Path, cfg: TrainConfig) -> str:
    """Push the run's model to cfg.push_to_hub: '' when it went, else why not and how to push it later."""
    try:
        log.info("pushed the model to %s", hub.push_to_hub(run_dir / "model", cfg.push_to_hub, private=cfg.private))
        return ""
    except hub.HubError as e:
        return (f"{e}. The model was NOT pushed; the run is kept in {run_dir}: push it with: "
                f"python -m train.push {run_dir} {cfg.push_to_hub}")


# --- the photos beside the training set ------------------------------------------------------------------

def load_teacher(cfg: TrainConfig, classes: list[str], rt: Runtime) -> distill.Teacher | None:
    """`cfg.teacher` loaded for this run's classes (None without one); its settings are checked first."""
    if not cfg.teacher:
        return None
    distill.check(cfg.distill_weight, cfg.distill_temperature)
    return distill.load_teacher(cfg.teacher, classes, rt.device, cfg.channels_last)


def load_cached(listing: Listing, side: int, cfg: TrainConfig, rt: Runtime) -> ImageSet:
    """`load_images`, with rank 0 building the cache first so the other ranks only read it."""
    if rt.main:
        photos = load_images(listing, side, cfg.cache_dir or None, cfg.workers)
    barrier(rt)
    if not rt.main:
        photos = load_images(listing, side, cfg.cache_dir or None, cfg.workers)
    return photos


def load_real_sets(cfg: TrainConfig, held: Listing | None, side: int, classes: list[str], rt: Runtime) -> dict[str, ImageSet]:
    """The --val-data folder and the photos of the held-out sources, as far as the run has them."""
    found = {}
    if cfg.val_data:
        found["real_val"] = load_val_set(cfg.val_data, side, classes, cfg, rt)
    if held is not None:
        found["heldout_val"] = load_cached(held, side, cfg, rt)
    return found


def load_val_set(folder: str, side: int, classes: list[str], cfg: TrainConfig, rt: Runtime) -> ImageSet:
    """A labelled folder of validation photos (it may hold only some classes), labelled as the training set is."""
    listing = scan_folder(folder)
    to_train = torch.tensor(map_labels(listing, classes))
    photos = load_cached(listing, side, cfg, rt)
    return ImageSet(photos.images, to_train[photos.labels], photos.paths, list(classes))


@dataclass
class Outliers:
    """Photos of none of the classes: `train` positions teach the model, `tune` ones fit the probe detector (those
    and, with kinds_tune_only, the named kinds that do not teach), `held` ones measure it (`unseen`: those of
    held-out sources, never trained on nor from a source trained on; `unseen_kinds`: those of the kinds held out,
    cnn.holdout, never trained on nor any photo of their kind)."""
    images: torch.Tensor
    train: torch.Tensor
    tune: torch.Tensor
    held: torch.Tensor
    unseen: torch.Tensor
    unseen_kinds: torch.Tensor
    groups: list[str]           # each photo's group (cnn.ood.group_of; "none" for visitors' none/ corrections)
    kinds: list[str]            # each photo's kind (cnn.holdout.kinds_of; '' for one of no named kind)


def load_outliers(cfg: TrainConfig, listing: Listing, side: int, rt: Runtime,
                  holdout: HoldoutSpec | None = None) -> Outliers | None:
    """Photos of none of the classes: the --outliers folder and every source's none/ folder (visitors'
    "none of these" corrections). Those of held-out sources or held-out kinds only measure; the others are
    split by a hash of their paths into the part that trains and the part held out."""
    parts = [scan_photos(cfg.outliers, "none")] if cfg.outliers else []
    if listing.outliers:
        parts.append(Listing(listing.roots, listing.outliers, [0] * len(listing.outliers), ["none"]))
    if not parts:
        return None
    found = [load_cached(part, side, cfg, rt) for part in parts]
    unseen = [held for part, photos in zip(parts, found)
              for held in (held_out(part, photos.paths, holdout) if holdout else [False] * len(photos.paths))]
    kinds = [kind for part, photos in zip(parts, found)
             for kind in (kinds_of(part, photos.paths, holdout) if holdout else [""] * len(photos.paths))]
    unseen_kinds = set(holdout.held_out_kinds) if holdout else set()
    missing = sorted(unseen_kinds - set(kinds))
    if missing:
        raise DataError(f"no outlier photo is of the held-out kinds {', '.join(missing)} (fold {cfg.kind_fold} of "
                        f"{cfg.holdout_sources}): check their folders against path_in_repo in sources.csv")
    paths = [path for photos in found for path in photos.paths]
    seen = [i for i, (u, kind) in enumerate(zip(unseen, kinds)) if not u and kind not in unseen_kinds]
    train, held = hash_split([paths[i] for i in seen], cfg.outlier_holdout)
    teach = [seen[i] for i in train if not (cfg.kinds_tune_only and kinds[seen[i]])]
    if not teach:
        raise DataError("every outlier photo comes from a held-out source or kind: none is left to teach the model")
    return Outliers(torch.cat([photos.images for photos in found]), torch.tensor(teach),
                    torch.tensor([seen[i] for i in train]),
                    torch.tensor([seen[i] for i in held], dtype=torch.long),
                    torch.tensor([i for i, u in enumerate(unseen) if u], dtype=torch.long),
                    torch.tensor([i for i, kind in enumerate(kinds) if kind in unseen_kinds], dtype=torch.long),
                    [ood.group_of(path) if part is parts[0] and cfg.outliers else "none"
                     for part, photos in zip(parts, found) for path in photos.paths], kinds)


# --- the run's results -------------------------------------------------------------------------------------

def write_metrics(run_dir: Path, history: list[dict], best_epoch: int, best: dict[str, Any], classes: list[str]) -> None:
    """metrics.json and the plots; the confusion matrix is the real photos' (all real-photo sets together)
    when the run has them."""
    split = best["split"]
    payload = {"epochs": len(history), "best_epoch": best_epoch, "best_val_accuracy": split["accuracy"],
               "classes": classes, "val_ece": split["ece"], "unsure_below": split["unsure_below"],
               "per_class": split["per_class"], "confusion_matrix": split["confusion_matrix"]}
    real = [key for key in REAL_SETS if key in best]
    for key in real:
        payload[key] = {k: best[key][k] for k in ("accuracy", "ece", "per_class", "confusion_matrix")}
    with atomic_write(run_dir / "metrics.json") as tmp:
        tmp.write_text(json.dumps({**payload, "history": history}, indent=2) + "\n")
    metrics.plot_curves(history, run_dir / "curves.png")
    cm = torch.tensor(split["confusion_matrix"]) if not real else sum(torch.tensor(best[k]["confusion_matrix"]) for k in real)
    metrics.plot_confusion(cm.tolist(), classes, run_dir / "confusion.png")


def export_model(run_dir: Path, cfg: TrainConfig, data: ImageSet, train_idx: torch.Tensor, real: dict[str, ImageSet],
                 outliers: Outliers | None, device: torch.device, model_args: dict[str, Any], command: str) -> Path:
    """Turn the best checkpoint into a model folder: safetensors, config.json, detector, card and plots.

    Everything is measured here, on the best weights: each real-photo set's accuracy (`real`: the real-photo
    sets, or the split when there are none); the probabilities are calibrated on all of them together (temperature
    scaling), then the "not sure" threshold; then the "none of the ten" rule (cnn.ood), set where `unknown_rate`
    of those photos is flagged, measured on the held-out outliers and on those of held-out sources.
    """
    ckpt = load_checkpoint(run_dir / "checkpoints" / "best.pt")
    classes = data.classes
    net = create_model(cfg.arch, num_classes=len(classes), **model_args)
    if ckpt["ema"] is not None:
        net.load_state_dict({k.removeprefix("module."): v for k, v in ckpt["ema"].items() if k.startswith("module.")})
    else:
        net.load_state_dict(ckpt["model"])
    net.to(device)

    def outputs_of(images: torch.Tensor, blur: float) -> ood.Outputs:
        return predict_outputs(net, images, cfg.image_size, cfg.mean, cfg.std, cfg.tta_flip, device, blur_sigma=blur)

    real_images = torch.cat([photos.images for photos in real.values()])
    targets = torch.cat([photos.labels.cpu() for photos in real.values()])
    sizes = [len(photos.labels) for photos in real.values()]
    blur_sigma, tried = pick_blur_sigma(cfg.blur_sigmas, sizes, targets, lambda blur: outputs_of(real_images, blur))
    raw, logits, features = tried[blur_sigma]
    temperature = metrics.fit_temperature(raw, targets)
    probs = metrics.calibrate(raw, temperature)
    # in the run folder only: it shows the user's own photos, which a model folder pushed to the Hub must not carry
    metrics.plot_mistakes(real_images, probs, targets, classes, run_dir / "mistakes.png")
    unsure_below = metrics.unsure_threshold(probs, targets)
    names = ood.parse_detector(cfg.detector)
    knn = probe = None
    if {"knn", "probe"} & set(names):   # both read the features of a class-balanced sample of training photos
        bank = train_idx[ood.bank_sample(data.labels[train_idx.to(data.labels.device)].cpu(), seed=cfg.seed)]
        bank_features = outputs_of(data.images[bank.to(data.images.device)], blur_sigma).features
        knn = fit_knn(cfg, bank_features) if "knn" in names else None
        if "probe" in names:
            probe = fit_probe(bank_features, outliers, lambda images: outputs_of(images, blur_sigma).features)
    scores = ood.compute_scores(names, probs, logits, features, knn, probe)
    thresholds = ood.fit_thresholds(scores, cfg.unknown_rate) if scores else {}
    if not all(math.isfinite(t) for t in thresholds.values()):   # too few real photos to share the budget
        thresholds = {name: t for name, t in thresholds.items() if math.isfinite(t)}
    knn = knn if "knn" in thresholds else None
    probe = probe if "probe" in thresholds else None

    def flagged(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw_out, logits_out, features_out = outputs_of(images, blur_sigma)
        probs_out = metrics.calibrate(raw_out, temperature)
        return probs_out, ood.unknown_mask(ood.compute_scores(names, probs_out, logits_out, features_out, knn, probe),
                                           thresholds)

    run_metrics = json.loads((run_dir / "metrics.json").read_text())
    summary: dict[str, Any] = {
        "val_accuracy": run_metrics["best_val_accuracy"],
        "val_data": f"a random {cfg.val_fraction:.0%} of the training photos, never trained on",
        "calibrated_on": " + ".join(real_set_name(cfg, key) for key in real) if real.keys() - {"split"} else "the validation split",
        "val_ece_before_calibration": metrics.expected_calibration_error(raw, targets),
        "val_ece": metrics.expected_calibration_error(probs, targets),
        "detector": "+".join(thresholds) or "none",
        # the worse real-photo set's accuracy (before calibration, which leaves the answers as they are) per softening
        "accuracy_by_blur_sigma": {f"{blur:g}": worst_accuracy(outputs.probs, targets, sizes)
                                   for blur, outputs in tried.items()},
        **metrics.flag_rates(probs, targets, unsure_below, ood.unknown_mask(scores, thresholds),
                             *(flagged(outliers.images[outliers.held]) if outliers is not None and len(outliers.held) else ())),
        **ood.thresholds_to_config(thresholds), "best_epoch": ckpt["best_epoch"], "epochs": run_metrics["epochs"],   # all of them, not best.pt's
        "train_photos": len(train_idx)}   # what it learnt from: its folders' photos less those held back to measure it
    # what the rule flags of the outliers never trained on: those of held-out sources (per group) and of held-out
    # kinds (per kind)
    for positions, labels, key, by in ((outliers.unseen, outliers.groups, "unseen_outliers", "group"),
                                       (outliers.unseen_kinds, outliers.kinds, "unseen_kinds", "kind")) if outliers else ():
        if len(positions):
            _, unseen = flagged(outliers.images[positions])
            summary[f"{key}_flagged"] = unseen.double().mean().item()
            summary[f"{key}_by_{by}"] = ood.flagged_by(unseen, [labels[i] for i in positions.tolist()])
    start = 0
    for key, photos in real.items():
        part = slice(start, start + len(photos.labels))
        start = part.stop
        if key == "split":
            continue
        found = metrics.summarize(probs[part], targets[part], classes)
        summary.update({f"{key}_accuracy": found["accuracy"], f"{key}_data": real_set_name(cfg, key),
                        f"{key}_ece": found["ece"], f"{key}_per_class": found["per_class"]})
    if real.keys() - {"split"}:
        summary["worst_real_accuracy"] = min(summary[f"{key}_accuracy"] for key in real)
    summary = {k: round(v, 4) if isinstance(v, float) else v for k, v in summary.items()}
    net.cpu()
    config = hub.model_config(cfg.arch, model_args, classes, cfg.image_size, cfg.crop_pct, cfg.mean, cfg.std,
                              cfg.tta_flip, count_parameters(net), summary, temperature, blur_sigma)
    folder = hub.save_pretrained(net, run_dir / "model", config)
    for name, detector in ((ood.DETECTOR_FILE, knn), (ood.PROBE_FILE, probe)):
        (folder / name).unlink(missing_ok=True)
        if detector:
            detector.save(folder)
    for plot in ("curves.png", "confusion.png"):
        shutil.copyfile(run_dir / plot, folder / plot)
    card.write_model_card(folder, config, run_metrics, cfg.to_dict(), command, repo_hint=cfg.push_to_hub or card.REPO_PLACEHOLDER,
                          sources=sources.read_record(run_dir))
    log.info("model folder written to %s (validation accuracy %.1f%%%s)", folder, 100 * summary["val_accuracy"],
             "".join(f", {summary[f'{k}_data']} {100 * summary[f'{k}_accuracy']:.1f}%" for k in real if k != "split"))
    return folder


def pick_blur_sigma(blur_sigmas: tuple[float, ...], sizes: list[int], targets: torch.Tensor,
                    outputs_at) -> tuple[float, dict[float, ood.Outputs]]:
    """The test-time softening (cnn.data.eval_view) under which the worse of the real-photo sets (`sizes`: their
    lengths, in the order of `targets`) is most accurate, the least blur of equally good ones; and the outputs at
    each softening tried (`outputs_at(blur)`)."""
    tried = {blur: outputs_at(blur) for blur in sorted(set(blur_sigmas) or {0.0})}
    return max(tried, key=lambda blur: worst_accuracy(tried[blur].probs, targets, sizes)), tried


def worst_accuracy(probs: torch.Tensor, targets: torch.Tensor, sizes: list[int]) -> float:
    """The accuracy of the worse of consecutive sets of photos (`sizes`: their lengths)."""
    right = (probs.argmax(1) == targets).double()
    return round(min(part.mean().item() for part in right.split(sizes)), 4)


def real_set_name(cfg: TrainConfig, key: str) -> str:
    """How the card and the reports name a real-photo set."""
    if key == "real_val":
        return Path(cfg.val_data).name
    return f"held-out sources ({Path(cfg.holdout_sources).name})"


def fit_probe(bank_features: torch.Tensor, outliers: Outliers | None,
              features_of: Callable[[torch.Tensor], torch.Tensor]) -> ood.ProbeDetector | None:
    """The "none of the ten" probe: the training photos' features against those of the outlier photos that
    taught the model or may tune it (never the held-out ones it is measured on); None, with a log line, without them."""
    if outliers is None or not len(outliers.tune):
        log.warning("no probe detector: it learns from the outlier photos (--outliers), and this run has none")
        return None
    try:
        return ood.ProbeDetector.fit(bank_features, features_of(outliers.images[outliers.tune]))
    except ood.DetectorError as e:
        log.warning("no probe detector: %s", e)
        return None


def fit_knn(cfg: TrainConfig, bank_features: torch.Tensor) -> ood.KnnDetector | None:
    """The nearest-neighbour "none of the ten" detector on its bank of training photos' features (None, with a
    log line, when there are too few photos)."""
    try:
        return ood.KnnDetector.fit(bank_features, k=cfg.knn_k)
    except ood.DetectorError as e:
        log.warning("no nearest-neighbour detector: %s", e)
        return None
