"""Photos in, uint8 tensors out: folder scanning, robust decoding, the decoded-image cache,
the stratified split, and augmentation on whole batches (airbench style).

Every photo is decoded once, resized so its short side is `cache_side` and centre-cropped to
a square, then kept as one N×3×S×S uint8 tensor. Training crops and flips batches of it on the
device; evaluation and inference take the same deterministic centre crop.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import os
import threading
import warnings
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path
from typing import BinaryIO, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from tqdm import tqdm

from .io import atomic_write

log = logging.getLogger(__name__)

# Animals-10 ships Italian folder names; we label in English.
ITALIAN_TO_ENGLISH = {
    "cane": "dog", "cavallo": "horse", "elefante": "elephant", "farfalla": "butterfly",
    "gallina": "chicken", "gatto": "cat", "mucca": "cow", "pecora": "sheep", "ragno": "spider",
    "scoiattolo": "squirrel",
}
CACHE_VERSION = 2         # 2: the centre square is resampled on its own (resize_short_side)
ImageSource = Union[str, os.PathLike, bytes, BinaryIO, Image.Image]
# What counts as a photo where a folder (or a zip, or a Hub repo's examples/) mixes photos with other files.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")


class DataError(ValueError):
    """The data folder cannot be trained on (missing, too few classes, an empty class)."""


class ImageError(ValueError):
    """One image cannot be read; the message says why in words a user understands."""


class ImageRefused(ImageError):
    """The pixel budget refuses the image; the message is safe to show after its name (it names no path):
    "<name> has too many pixels to open safely: ..."."""


class ImageTooLargeError(ImageRefused):
    """The image needs more memory to decode than the pixel budget allows (a decompression bomb, or just huge)."""


class ImageShapeError(ImageRefused):
    """The image is too long and thin to classify (a side ratio over MAX_SIDE_RATIO)."""


# --- decoding --------------------------------------------------------------------------------
#
# One pixel budget, checked from the header before a pixel is decoded, on every path (the page, /predict,
# /predict_batch, /feedback, Grad-CAM, the training cache): Pillow's `Image.open` reads only the header, so
# the size and mode (a GIF's whole "screen") are known before `load()`, and JPEG `draft` decodes at 1/2 to
# 1/8 scale. Pillow stays the decoder rather than torchvision.io: `decode_image` always decodes the whole
# file at full size, with no lazy header and no reduced-scale decoding, so it could not refuse a bomb first.

MAX_SIDE_RATIO = 20         # long side / short side; beyond it a photo is refused (a centre crop would be a sliver)
# Memory one decode may take, at full size and through every conversion to RGB: an RGB PNG of up to 22 MP, RGBA
# 11 MP, palette 12 MP, grayscale 44 MP (JPEGs decode at reduced scale first).
DECODE_BUDGET_MB = 256
# Decodes that need more than this take turns, one at a time in the whole process: however many big images
# arrive at once, together they hold at most DECODE_BUDGET_MB, and an ordinary photo (a few MB) never queues
# behind them. 32 MB is an RGB image of 2.8 MP (a phone JPEG decoded at reduced scale is far below it).
HEAVY_DECODE_MB = 32
HEAVY_DECODES = threading.Lock()
# Bytes per pixel as Pillow holds each mode in memory (8-bit single-band modes 1 byte, 16-bit 2, the rest 4:
# RGB is stored as 4 bytes a pixel); any mode not named here takes 4.
STORED_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def conversion_bytes(mode: str) -> int:
    """Bytes per pixel that `to_rgb` allocates on its way from `mode` to RGB (every intermediate, counted
    as if all were alive at once)."""
    if mode in HIGH_BIT_MODES:
        return 4 + 4 + 4 + 1 + 1 + 4        # float32 copy, scaled, clipped; uint8; L; RGB
    if mode == "P":
        return 4 + 4 + 4 + 4 + 4            # RGBA, its copy, the white background, the composite, RGB
    if mode in ALPHA_MODES:
        return 4 + 4 + 4 + 4                # RGBA, the background, the composite, RGB
    return 4                                # RGB


def decode_bytes(mode: str, size: tuple[int, int]) -> int:
    """Peak bytes to decode an image of `mode` and `size` into upright RGB: the decoded pixels, the EXIF
    transpose's copy of them, and the conversion to RGB."""
    w, h = size
    return w * h * (2 * STORED_BYTES.get(mode, 4) + conversion_bytes(mode))


def check_budget(img: Image.Image) -> None:
    """Refuse, from the header alone, an image whose shape or decoded size is out of bounds."""
    w, h = img.size
    if min(w, h) < 1:
        raise ImageError(f"not a readable image (it claims {w}×{h} pixels)")
    if max(w, h) > MAX_SIDE_RATIO * min(w, h):
        raise ImageShapeError(f"is too long and thin to classify: {w}×{h} pixels (at most {MAX_SIDE_RATIO}:1)")
    need = decode_bytes(img.mode, img.size)
    if need > DECODE_BUDGET_MB * 2**20:
        can = DECODE_BUDGET_MB * 2**20 // decode_bytes(img.mode, (1, 1))
        raise ImageTooLargeError(f"has too many pixels to open safely: {w}×{h} ({w * h / 1e6:.0f} MP) as "
                                 f"{img.format or 'this format'}, which may have at most {can / 1e6:.0f} MP "
                                 "(a JPEG may be larger)")


def decode_turn(img: Image.Image) -> contextlib.AbstractContextManager:
    """What to hold while `img` is decoded and converted: nothing for an ordinary photo, the one heavy turn
    for a big one (HEAVY_DECODE_MB)."""
    return HEAVY_DECODES if decode_bytes(img.mode, img.size) > HEAVY_DECODE_MB * 2**20 else contextlib.nullcontext()


def load_image(source: ImageSource, draft_side: int | None = None) -> Image.Image:
    """Open any common image as upright 8-bit RGB, within the pixel budget (check_budget).

    Handles EXIF orientation, palette and alpha (composited on white), CMYK, 16-bit and
    float modes, and the first frame of animations. `draft_side` lets JPEG decode at a reduced
    scale when only a small image is needed (much faster for big photos, and within the budget).
    """
    try:
        if isinstance(source, Image.Image):
            img = source
        else:
            if isinstance(source, bytes):
                source = io.BytesIO(source)
            img = Image.open(source)
            if draft_side and img.format in ("JPEG", "MPO"):   # MPO: many phones' JPEGs
                img.draft("RGB", (draft_side, draft_side))
            check_budget(img)
        with decode_turn(img):
            img.load()
            return to_rgb(ImageOps.exif_transpose(img))
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLargeError(f"has too many pixels to open safely: over {2 * Image.MAX_IMAGE_PIXELS / 1e6:.0f} MP "
                                 "in any format") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"not a readable image ({e})") from None
    except Exception as e:  # noqa: BLE001  Pillow's plugins raise what they like on malformed files (DDS:
        raise ImageError(f"not a readable image ({type(e).__name__})") from None  # NotImplementedError, ...)


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in HIGH_BIT_MODES:
        arr = np.asarray(img, dtype=np.float32)
        top = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray((arr * (255.0 / top)).clip(0, 255).astype(np.uint8))
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ALPHA_MODES:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def resize_short_side(img: Image.Image, side: int) -> Image.Image:
    """The centre square of the photo, resized to side×side: the same view as resizing the short side to
    `side` and centre-cropping, but only the square is ever resampled, so no shape of photo can make the
    intermediate image larger than side×side."""
    w, h = img.size
    crop = min(w, h)
    left, top = (w - crop) / 2, (h - crop) / 2
    return img.resize((side, side), Image.BICUBIC, box=(left, top, left + crop, top + crop), reducing_gap=3.0)


def image_to_uint8(img: Image.Image, side: int) -> np.ndarray:
    """The 3×side×side uint8 array that the cache and the inference path both use."""
    return np.asarray(resize_short_side(img, side), dtype=np.uint8).transpose(2, 0, 1).copy()


def photo_files(folder: str | os.PathLike) -> list[Path]:
    """The photos directly in `folder` (by suffix, any case), sorted; none when it does not exist."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# --- the folder --------------------------------------------------------------------------------

# Photos a visitor marked "none of these" (page.feedback) live in a folder of this name. It is never a
# class: its photos are listed apart, as `Listing.outliers`, for outlier-exposure training.
OUTLIER_FOLDER = "none"
# The corrections log (page.feedback) sits beside the photos in a folder of this name: never a class either.
LOG_FOLDER = "logs"
# Folders named so hold a split, not a class (the layout of `datasets`' imagefolder and of most downloads:
# train/<class>/..., test/<class>/...): the names `datasets` itself reads as splits (datasets.data_files).
SPLIT_KEYWORDS = {"train": ("train", "training"), "validation": ("validation", "valid", "dev", "val"),
                  "test": ("test", "testing", "eval", "evaluation")}


@dataclass
class Listing:
    roots: list[Path]
    paths: list[str]          # relative to the root; with several roots, "<root index>:<relative path>"
    labels: list[int]
    classes: list[str]        # English names where the folder name is Italian
    outliers: list[str] = field(default_factory=list)   # files under each root's none/, same form as paths

    @property
    def root(self) -> Path:
        return self.roots[0]

    def locate(self, path: str) -> tuple[int, str]:
        """(root index, path relative to that root) of an entry of `paths` or `outliers`."""
        if len(self.roots) == 1:
            return 0, path
        index, _, rel = path.partition(":")
        return int(index), rel

    def file(self, path: str) -> Path:
        """The file that an entry of `paths` or `outliers` names."""
        index, rel = self.locate(path)
        return self.roots[index] / rel


def _visible(name: str) -> bool:
    return not name.startswith((".", "__"))


def list_files(root: Path, folder: Path) -> list[str]:
    """Every visible file below `folder` (hidden files and folders skipped), relative to root."""
    found = []
    for dirpath, dirnames, names in os.walk(folder):
        dirnames[:] = [d for d in dirnames if _visible(d)]
        found += [str(Path(dirpath, name).relative_to(root)) for name in names if _visible(name)]
    return sorted(found)


def _subfolders(root: Path) -> list[str]:
    """The names of the folders of `root` that may be classes or splits (none/ and logs/ are neither), sorted."""
    if not root.is_dir():
        raise DataError(f"data folder {str(root)!r} does not exist or is not a folder")
    return sorted(d.name for d in root.iterdir()
                  if d.is_dir() and _visible(d.name) and d.name not in (OUTLIER_FOLDER, LOG_FOLDER))


def split_of(name: str) -> str | None:
    """The split ('train', 'validation', 'test') that a folder's name stands for, or None for any other name."""
    return next((split for split, names in SPLIT_KEYWORDS.items() if name.lower() in names), None)


def split_folders(root: str | os.PathLike) -> dict[str, Path]:
    """{split: its folder} of a root laid out as train/, test/ ... folders (each a folder-per-class tree); empty
    for a folder-per-class root. A root that mixes split folders with class folders, or names one split twice
    (val/ and validation/), is refused: no reading of it could be the one meant."""
    root = Path(root)
    folders = _subfolders(root)
    splits = {name: split_of(name) for name in folders if split_of(name)}
    if not splits:
        return {}
    others = [name for name in folders if name not in splits]
    if others:
        raise DataError(f"{root} holds split folders ({', '.join(splits)}) beside class folders "
                        f"({', '.join(others)}): put every class folder inside the split it belongs to")
    if len(set(splits.values())) < len(splits):
        raise DataError(f"{root}: the folders {', '.join(splits)} name the same split twice; keep one of each")
    return {split: root / name for name, split in splits.items()}


def _class_folders(root: Path) -> dict[str, str]:
    """{folder name: class name} for one root, in folder-name order (none/ and logs/ are not classes). A root of
    split folders is refused here: only a --data source is read by its splits (cnn.sources.resolve)."""
    splits = split_folders(root)
    if splits:
        names = ", ".join(f"{path.name}/" for path in splits.values())
        raise DataError(f"{root} is split into {names} rather than one folder per class: name the split to read "
                        f"(e.g. {next(iter(splits.values()))})")
    folders = _subfolders(root)
    classes = [ITALIAN_TO_ENGLISH.get(f.lower(), f) for f in folders]
    if len(set(classes)) != len(classes):
        raise DataError(f"two folders in {root} name the same class: {folders}")
    return dict(zip(folders, classes))


def scan_folder(root: str | os.PathLike) -> Listing:
    """List the photos of a folder-per-class tree (files in nested sub-folders included)."""
    return scan_folders([root])


def scan_folders(roots: Sequence[str | os.PathLike]) -> Listing:
    """List the photos of several folder-per-class trees, merged by class name.

    Classes keep the order in which they first appear (the first root's folder order, then the new
    classes of the next roots), so one root gives the same labels as it always did. A root may hold a
    single class (a folder of corrections); the merged set needs at least two.
    """
    roots = [Path(r) for r in roots]
    per_root = [_class_folders(root) for root in roots]
    classes = list(dict.fromkeys(c for folders in per_root for c in folders.values()))
    if len(classes) < 2:
        where = roots[0] if len(roots) == 1 else ", ".join(map(str, roots))
        raise DataError(f"{where} needs one sub-folder per class and at least two classes; "
                        f"found {len(classes)} ({', '.join(classes) or 'none'})")

    def named(i: int, rel: str) -> str:
        return rel if len(roots) == 1 else f"{i}:{rel}"

    paths, labels, outliers = [], [], []
    for i, (root, folders) in enumerate(zip(roots, per_root)):
        for folder, name in folders.items():
            found = list_files(root, root / folder)
            if not found:
                raise DataError(f"class folder {str(root / folder)!r} is empty")
            paths += [named(i, rel) for rel in found]
            labels += [classes.index(name)] * len(found)
        if (root / OUTLIER_FOLDER).is_dir():
            outliers += [named(i, rel) for rel in list_files(root, root / OUTLIER_FOLDER)]
    order = sorted(range(len(paths)), key=lambda i: (labels[i], paths[i]))
    return Listing(roots, [paths[i] for i in order], [labels[i] for i in order], classes, outliers)


def scan_photos(root: str | os.PathLike, name: str = "photos") -> Listing:
    """Every photo below `root`, whatever its layout, as one class `name`: for folders of photos that
    are none of the classes (outlier exposure), where sub-folders are only groups."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"photo folder {str(root)!r} does not exist or is not a folder")
    paths = list_files(root, root)
    if not paths:
        raise DataError(f"photo folder {str(root)!r} holds no files")
    return Listing([root], paths, [0] * len(paths), [name])


def map_labels(listing: Listing, labels: Sequence[str]) -> list[int]:
    """For each class of `listing`, its index among `labels` (case-insensitive): a validation or test
    folder may hold only some of a model's classes, in any order."""
    index = {name.lower(): i for i, name in enumerate(labels)}
    unknown = [c for c in listing.classes if c.lower() not in index]
    if unknown:
        raise DataError(f"class(es) {', '.join(unknown)} in {listing.root} are not labels of this model "
                        f"(it knows: {', '.join(labels)}); remove or rename those folders")
    return [index[c.lower()] for c in listing.classes]


def hash_split(paths: Sequence[str], fraction: float) -> tuple[list[int], list[int]]:
    """Positions of (kept, held out) photos: `fraction` held out by a hash of each path, so the same photo
    lands on the same side whatever else the folder holds."""
    def score(path: str) -> float:
        return int(hashlib.sha1(path.encode()).hexdigest()[:8], 16) / 16 ** 8
    held = [i for i, p in enumerate(paths) if score(p) < fraction]
    return [i for i, p in enumerate(paths) if score(p) >= fraction], held


# --- the cache -----------------------------------------------------------------------------------

@dataclass
class ImageSet:
    """Decoded photos: `images` N×3×S×S uint8, `labels` N int64, `paths` as in the Listing (see Listing.file)."""
    images: torch.Tensor
    labels: torch.Tensor
    paths: list[str]
    classes: list[str]


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cnn-animals"


def _cache_key(listing: Listing, side: int) -> str:
    roots = " ".join(str(root.resolve()) for root in listing.roots)
    h = hashlib.sha1(f"v{CACHE_VERSION} side={side} root={roots}".encode())
    for rel in listing.paths:
        st = listing.file(rel).stat()
        h.update(f"\n{rel}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _decode(job: tuple[str, int]) -> np.ndarray | str:
    path, side = job
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return image_to_uint8(load_image(path, draft_side=side), side)
    except ImageError as e:
        return str(e)


def load_images(listing: Listing, side: int, cache_dir: str | os.PathLike | None = None,
                workers: int = 0) -> ImageSet:
    """Decode every photo once into a uint8 cache at `side`, reused until the files change.

    Unreadable files are dropped with one warning. A cache file that fails to load (a crash
    during its write, disk trouble) is rebuilt, never trusted.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save_file

    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_file = cache_dir / f"{_cache_key(listing, side)}.safetensors"
    index_file = cache_file.with_suffix(".json")
    if cache_file.exists() and index_file.exists():
        try:
            tensors = load_file(cache_file)
            kept = json.loads(index_file.read_text())["paths"]
            if tensors["images"].shape[0] == len(kept) == tensors["labels"].shape[0]:
                log.info("using decoded-image cache %s", cache_file)
                return ImageSet(tensors["images"], tensors["labels"], kept, listing.classes)
            log.warning("cache %s does not match its index; rebuilding it", cache_file)
        except (SafetensorError, OSError, ValueError, KeyError) as e:
            log.warning("ignoring damaged cache %s (%s); rebuilding it", cache_file, e)

    jobs = [(str(listing.file(rel)), side) for rel in listing.paths]
    workers = workers or os.cpu_count() or 1
    with Pool(workers) if workers > 1 else _InlinePool() as pool:
        results = list(tqdm(pool.imap(_decode, jobs, chunksize=32), total=len(jobs),
                            desc=f"decoding photos at {side}px", unit="img", leave=False,
                            disable=None))   # only on a terminal: a log file gets the summary lines
    ok = [i for i, r in enumerate(results) if isinstance(r, np.ndarray)]
    bad = [(listing.paths[i], r) for i, r in enumerate(results) if isinstance(r, str)]
    if bad:
        shown = "; ".join(f"{p}: {why}" for p, why in bad[:3])
        log.warning("skipped %d unreadable file(s) of %d, e.g. %s", len(bad), len(jobs), shown)
    labels = torch.tensor([listing.labels[i] for i in ok], dtype=torch.int64)
    empty = [c for k, c in enumerate(listing.classes) if not (labels == k).any()]
    if empty:
        raise DataError(f"no readable image in class(es): {', '.join(empty)}")
    images = torch.from_numpy(np.stack([results[i] for i in ok]))
    kept = [listing.paths[i] for i in ok]

    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_write(cache_file) as tmp:
        save_file({"images": images, "labels": labels}, str(tmp))
    with atomic_write(index_file) as tmp:
        tmp.write_text(json.dumps({"roots": [str(r.resolve()) for r in listing.roots], "paths": kept}))
    return ImageSet(images, labels, kept, listing.classes)


class _InlinePool:
    """`Pool`'s imap without processes, for one worker (and simpler tracebacks)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap(fn, jobs, chunksize=1):
        return map(fn, jobs)


# --- the split -------------------------------------------------------------------------------

def stratified_split(labels: Sequence[int], val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Hold out `val_fraction` of every class (at least one photo each), reproducibly."""
    g = torch.Generator().manual_seed(seed)
    labels_t = torch.as_tensor(labels)
    train, val = [], []
    for k in labels_t.unique().tolist():
        idx = torch.nonzero(labels_t == k).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)].tolist()
        n_val = max(1, round(len(idx) * val_fraction)) if len(idx) > 1 else 0
        val += idx[:n_val]
        train += idx[n_val:]
    return sorted(train), sorted(val)


# --- batch transforms --------------------------------------------------------------------------

def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (or [0,1] float) batch → float batch normalised with mean/std."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    mean_t = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    return x[..., top:top + size, left:left + size]


def eval_view(x: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float],
              blur_sigma: float = 0.0) -> torch.Tensor:
    """What the model judges of cached uint8 photos: the centre size×size, normalised, then softened by a Gaussian
    blur of `blur_sigma` px (0: none). The softening is there because training sees softer photos than people send
    (small photos enlarged, random crops zoomed in), so a sharp photo shows the network textures it never learnt
    to read; the export picks it on the real photos (TrainConfig.blur_sigmas)."""
    x = normalize(center_crop(x, size), mean, std)
    return gaussian_blur(x, blur_sigma) if blur_sigma else x


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """An N×C×H×W float batch blurred by a Gaussian of `sigma` px (kernel radius 3σ, edges reflected), as
    torchvision's `gaussian_blur` computes it. Ours because importing torchvision's transforms would add about
    1.5 s to the app's cold start, for one convolution."""
    radius = math.ceil(3 * sigma)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device) / sigma) ** 2)
    taps = taps / taps.sum()
    n, c, h, w = x.shape
    # every channel as a one-channel photo: one kernel for all is 3-4× faster on a CPU than a grouped convolution
    planes = F.pad(x, (radius,) * 4, mode="reflect").reshape(n * c, 1, h + 2 * radius, w + 2 * radius)
    return F.conv2d(planes, (taps[:, None] * taps[None])[None, None]).reshape(n, c, h, w)


def augment_batch(x: torch.Tensor, size: int, generator: torch.Generator, *, scale: Sequence[float],
                  ratio: Sequence[float], rotation: float, flip_p: float, color_jitter: float,
                  grayscale: float = 0.0, erasing: float = 0.0) -> torch.Tensor:
    """Random resized crop + rotation + flip (one affine resample per image), colour jitter, then a `grayscale`
    share of the photos turned grey and an `erasing` share with one rectangle replaced by noise, for a whole
    uint8 batch at once, every photo with its own draws. Returns floats in [0, 1] of size×size."""
    n, dev = x.shape[0], x.device

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return draw(n, lo, hi, generator)

    def chosen(share: float) -> torch.Tensor:
        return (uniform(0, 1) < share).view(n, 1, 1, 1)

    area = uniform(*scale)
    log_r = uniform(math.log(ratio[0]), math.log(ratio[1]))
    w = torch.sqrt(area * torch.exp(log_r)).clamp(max=1.0)   # crop size as a fraction of the side
    h = torch.sqrt(area / torch.exp(log_r)).clamp(max=1.0)
    cx, cy = uniform(-1, 1) * (1 - w), uniform(-1, 1) * (1 - h)
    angle = uniform(-rotation, rotation) * (math.pi / 180)
    flip = torch.where(uniform(0, 1) < flip_p, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([w * cos * flip, -h * sin, cx], 1),
                         torch.stack([w * sin * flip, h * cos, cy], 1)], 1)
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)
    out = F.grid_sample(x.float().div_(255), grid, mode="bilinear", padding_mode="reflection",
                        align_corners=False)
    luma = torch.tensor([0.299, 0.587, 0.114], device=dev).view(1, 3, 1, 1)
    if color_jitter > 0:
        def factor() -> torch.Tensor:
            return uniform(1 - color_jitter, 1 + color_jitter).view(n, 1, 1, 1)
        out = out * factor()                                             # brightness
        gray = (out * luma).sum(1, keepdim=True)
        out = (out - gray.mean((2, 3), keepdim=True)) * factor() + gray.mean((2, 3), keepdim=True)  # contrast
        out = gray + (out - gray) * factor()                             # saturation
    if grayscale > 0:
        out = torch.where(chosen(grayscale), (out * luma).sum(1, keepdim=True).expand_as(out), out)
    if erasing > 0:
        out = torch.where(chosen(erasing) & erased_boxes(n, size, generator),
                          torch.rand(out.shape, generator=generator, device=dev), out)
    return out.clamp_(0, 1)


def draw(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    """n numbers uniform in [lo, hi), on the generator's device."""
    return torch.rand(n, generator=generator, device=generator.device) * (hi - lo) + lo


def erased_boxes(n: int, size: int, generator: torch.Generator,
                 area: Sequence[float] = (0.02, 1 / 3), ratio: Sequence[float] = (0.3, 3.3)) -> torch.Tensor:
    """One random rectangle per photo (random erasing's ranges: 2–33 % of the area, aspect 0.3–3.3), as an
    n×1×size×size mask. Ours because torchvision's RandomErasing draws one rectangle for a whole batch tensor."""
    a = draw(n, *area, generator)
    r = torch.exp(draw(n, math.log(ratio[0]), math.log(ratio[1]), generator))
    h, w = torch.sqrt(a * r).clamp(max=1.0), torch.sqrt(a / r).clamp(max=1.0)   # fractions of the side
    top, left = draw(n, 0, 1, generator) * (1 - h), draw(n, 0, 1, generator) * (1 - w)
    at = (torch.arange(size, device=generator.device) + 0.5) / size                     # pixel centres
    rows = (at >= top[:, None]) & (at < (top + h)[:, None])
    cols = (at >= left[:, None]) & (at < (left + w)[:, None])
    return (rows[:, :, None] & cols[:, None, :])[:, None]
