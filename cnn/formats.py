"""Datasets in the formats of `datasets`: image folders described by metadata.csv or metadata.jsonl, zip
archives of photos, and Parquet files. They are read with `datasets.load_dataset` ("imagefolder", "parquet"), as
their users read them, and written once into the cache as split folders of class folders
(<split>/<label>/<n>.<suffix>), so that their photos are decoded like any other: by cnn.data, within its pixel
budget and through its decoded-image cache. `datasets` never decodes a photo here (`Image(decode=False)`).
"""
from __future__ import annotations

import io
import logging
import os
import re
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

from .data import DECODE_BUDGET_MB, IMAGE_SUFFIXES, DataError, list_files

log = logging.getLogger(__name__)

METADATA_FILES = ("metadata.csv", "metadata.jsonl")   # those of datasets' imagefolder that a folder may describe
LABEL_COLUMN = "label"      # without a ClassLabel column, the string column of this name labels the photos
INSTALL = "pip install 'cnn-animals[train]'"
ZIP_URL = "zip://"          # how datasets names a photo inside a zip archive: zip://<member>::<archive>
FORMATS = {"parquet": "Parquet", "imagefolder": "image folder with metadata or zip archives", "zip": "zip archive"}


def format_of(path: Path) -> str:
    """How a source is read: "images" (class folders, read in place by cnn.data), or with `datasets`: "zip" (a
    .zip file), "parquet" (a .parquet file, or a folder holding some), "imagefolder" (a folder with metadata
    files or zip archives)."""
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in (".zip", ".parquet"):
            return suffix[1:]
        raise DataError(f"{path} is a file, but not a .zip or .parquet dataset: give a folder of photos, a .zip or "
                        "a .parquet file")
    if not path.is_dir():
        return "images"                    # cnn.data says that it does not exist
    names = [Path(name) for name in list_files(path, path)]
    if any(name.suffix.lower() == ".parquet" for name in names):
        return "parquet"
    if any(name.name in METADATA_FILES or name.suffix.lower() == ".zip" for name in names):
        return "imagefolder"
    return "images"


def require_datasets(spec: str) -> Any:
    """The `datasets` module, or a message saying how to install it."""
    try:
        import datasets
    except ImportError:
        raise DataError(f"{spec} is a dataset in `datasets`' formats (zip, Parquet, metadata.csv), which needs the "
                        f"`datasets` library: {INSTALL}") from None
    return datasets


def load(kind: str, path: Path, spec: str, cache: Path, data_files: dict[str, list[Path]] | None = None) -> Any:
    """The DatasetDict of `path` as `datasets.load_dataset` reads it (its Arrow files under `cache`): splits
    by `data_files` for Parquet, else by datasets' own rules (train/, test/, train.zip ...). Image folders are
    read without datasets' inferred labels: it names a zip's photos after the folder of the archive, not their
    own (datasets 5.2), so `write_split` takes each photo's folder itself where no column labels it."""
    datasets = require_datasets(spec)
    if kind == "parquet":
        files = data_files or {"train": [path]}
        args: dict[str, Any] = {"path": "parquet", "data_files": {k: [str(f) for f in v] for k, v in files.items()}}
    elif kind == "zip":
        args = {"path": "imagefolder", "data_files": str(path), "drop_labels": True}
    else:
        args = {"path": "imagefolder", "data_dir": str(path), "drop_labels": True}
    try:
        return datasets.load_dataset(**args, cache_dir=str(cache))
    except Exception as e:  # noqa: BLE001  datasets raises what its builders raise (ValueError, ArrowInvalid, ...)
        raise DataError(f"{spec}: `datasets` cannot read it ({FORMATS[kind]}): {type(e).__name__}: {e}") from None


def columns(features: Any, spec: str, by_folder: bool) -> tuple[str, str | None]:
    """(image column, label column): the Image column (else a column named "image", of bytes), and the
    ClassLabel column (else the string column named LABEL_COLUMN; else, `by_folder`, None: each photo's folder)."""
    import datasets

    image = next((name for name, f in features.items() if isinstance(f, datasets.Image)),
                 "image" if "image" in features else None)
    label = next((name for name, f in features.items() if isinstance(f, datasets.ClassLabel)), None)
    if label is None and getattr(features.get(LABEL_COLUMN), "dtype", None) in ("string", "large_string"):
        label = LABEL_COLUMN
    if image is None or (label is None and not by_folder):
        raise DataError(f"{spec}: needs an Image column and a label column (a ClassLabel, or strings named "
                        f"{LABEL_COLUMN!r}) to tell its photos and their labels; its columns: {', '.join(features)}")
    return image, label


def label_names(values: list[Any], feature: Any, spec: str) -> list[str | None]:
    """Each row's label as a class name (None: no label): a ClassLabel's names, or the strings themselves."""
    names = getattr(feature, "names", None)
    found = [(names[v] if 0 <= v < len(names) else None) if names and isinstance(v, int) else v for v in values]
    bad = sorted({n for n in found if n is not None and (not re.fullmatch(r"[^/\\\x00]+", n) or n.startswith("."))})
    if bad:
        raise DataError(f"{spec}: the label names {bad} cannot be folder names")
    return [n or None for n in found]


def photo_suffix(data: bytes, path: str | None) -> str:
    """The file suffix a photo is written with: its original one, else its format's."""
    from PIL import Image, UnidentifiedImageError

    if path and Path(path).suffix.lower() in IMAGE_SUFFIXES:
        return Path(path).suffix.lower()
    try:
        with Image.open(io.BytesIO(data)) as image:
            return {"JPEG": ".jpg"}.get(image.format, f".{(image.format or 'img').lower()}")
    except (UnidentifiedImageError, OSError):
        return ".img"                  # written anyway: decoding drops it with the usual warning


def inside(path: str, roots: list[Path]) -> bool:
    """Whether `path` lies inside one of `roots` (".." undone, links kept: a snapshot's files are links to blobs)."""
    return any(Path(os.path.normpath(path)).is_relative_to(os.path.normpath(root.absolute())) for root in roots)


def photo_bytes(photo: dict | None, roots: list[Path], archives: dict[str, zipfile.ZipFile] | None) -> bytes | None:
    """An Image cell's bytes, else those of the file its path names (relative: to the first root) inside `roots`
    (the dataset's folder, and datasets' cache), or, given `archives` (those opened so far, by path), of a member
    of a zip archive inside them ("zip://<member>::<archive>", as datasets' imagefolder names them); else None: a
    cell's path must not make us read any other file of this machine."""
    if not isinstance(photo, dict):
        return None
    if photo.get("bytes") is not None:
        return photo["bytes"]
    path = photo.get("path") or ""
    if archives is not None and path.startswith(ZIP_URL) and "::" in path:
        member, archive = path[len(ZIP_URL):].split("::", 1)
        if archive not in archives:
            if not inside(archive, roots) or not Path(archive).is_file():
                return None
            archives[archive] = zipfile.ZipFile(archive)
        info = archives[archive].NameToInfo.get(member)   # a member bigger than the decode budget is no photo
        return archives[archive].read(info) if info and info.file_size <= DECODE_BUDGET_MB * 2**20 else None
    if not path or "://" in path:
        return None
    path = str(roots[0] / path)
    return Path(path).read_bytes() if inside(path, roots) and Path(path).is_file() else None


def photo_folder(path: str | None) -> str | None:
    """The name of the folder a photo is in (of a zip member, in its archive): its label without a label column."""
    if not path:
        return None
    member = path[len(ZIP_URL):].split("::", 1)[0] if path.startswith(ZIP_URL) else path
    return PurePosixPath(member).parent.name or None


def write_split(dataset: Any, target: Path, spec: str, roots: list[Path], by_folder: bool) -> tuple[int, int]:
    """Write one split's photos as target/<label>/<n>.<suffix>; (written, skipped: rows without a label or a
    photo). Without a label column, `by_folder`, a photo's label is the name of its folder (imagefolder's rule)."""
    import datasets

    image, label = columns(dataset.features, spec, by_folder)
    feature = dataset.features[label] if label else None
    dataset = dataset.cast_column(image, datasets.Image(decode=False)).select_columns([image] + [label] * bool(label))
    written = skipped = row = 0
    archives: dict[str, zipfile.ZipFile] = {}
    try:
        for batch in dataset.iter(batch_size=256):
            labels = batch[label] if label else [photo_folder(photo.get("path")) for photo in batch[image]]
            for photo, name in zip(batch[image], label_names(labels, feature, spec)):
                data = photo_bytes(photo, roots, archives if by_folder else None)
                if data is None or name is None:
                    skipped += 1
                else:
                    out = target / name / f"{row:06d}{photo_suffix(data, photo.get('path'))}"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(data)
                    written += 1
                row += 1
    finally:
        for archive in archives.values():
            archive.close()
    return written, skipped


def as_split_folders(kind: str, path: Path, spec: str, target: Path, base: Path, cache: Path,
                     data_files: dict[str, list[Path]] | None = None) -> dict[str, Path]:
    """{split name: its folder-per-class tree} of a dataset in `datasets`' formats, written once under `target`
    (a finished tree is reused: its key names the content it was written from). Photos named by a path are read
    from `base` and datasets' cache only (photo_bytes)."""
    if not target.is_dir():
        dataset = load(kind, path, spec, cache / "datasets", data_files)
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        roots = [base, cache / "datasets"]
        counts = {split: write_split(rows, partial / split, spec, roots, kind != "parquet")
                  for split, rows in dataset.items()}
        skipped = sum(s for _, s in counts.values())
        if skipped:
            log.warning("%s: %d rows skipped (no label, or no image bytes and no such file beside it)", spec, skipped)
        if not any(w for w, _ in counts.values()):
            raise DataError(f"{spec}: no photo with a label in it")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            partial.rename(target)
        except OSError:                # another process (a DDP rank) finished first: its tree is the same
            shutil.rmtree(partial, ignore_errors=True)
    return {folder.name: folder for folder in sorted(target.iterdir()) if folder.is_dir()}
