"""Where the training photos come from: local folders and Hugging Face dataset repos, and a record of which.

    python -m train --data raw-img --data "hf://datasets/you/animals[@revision][/subfolder][?split=train]"

Every source is a folder-per-class tree; cnn.data.scan_folders merges them by class name. A Hub source
is fetched through the Hugging Face cache with snapshot_download (image files and the split's Parquet files
only), so a later run, or one with HF_HUB_OFFLINE=1, reads the cached snapshot. The spec is huggingface_hub's
HF URI (`parse_hf_uri`): a revision holding '/' is written as is when it is one of the Hub's special refs
(`@refs/convert/parquet`, `@refs/pr/3`) or URL-encoded (`@my%2Fbranch`). A repo of Parquet files (the Hub's usual
format: an Image column and a ClassLabel column, named in the schema's `huggingface` metadata) is read with
pyarrow and its photos written once, per commit, as a folder-per-class tree in the cache; `?split=` picks the
split (default train) among files named `<split>-*.parquet`, `<split>.parquet` or `<split>/*.parquet`, and the
subfolder the subset (`data/` or `<subset>/`; `<subset>/` on refs/convert/parquet). `write_record` puts
sources.json in the run folder: each source with the exact commit it resolved to and how many photos it gave.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs

from .data import IMAGE_SUFFIXES, OUTLIER_FOLDER, DataError, Listing, default_cache_dir, split_folders, split_of
from .hub import fetch_snapshot
from .io import atomic_write

log = logging.getLogger(__name__)

HUB_PREFIX = "hf://datasets/"
RECORD_NAME = "sources.json"
SPEC_FORM = 'hf://datasets/user/name[@revision][/subfolder][?split=train]'
DEFAULT_SPLIT = "train"
VALIDATION_SPLITS = ("validation", "test")   # the split that validates a source split in several, the first there is
PARQUET_FOLDER = "hub-parquet"      # under the cache folder: the photos of Parquet sources, per commit


@dataclass
class Source:
    """One --data value, resolved to a local folder."""
    spec: str                       # as written on the command line
    folder: Path                    # the folder-per-class tree
    repo_id: str | None = None      # Hub dataset sources only
    revision: str | None = None     # the revision asked for (None: the default branch)
    commit: str | None = None       # the commit it resolved to
    subfolder: str = ""
    split: str | None = None        # the split read, where the source has several (split folders, Parquet)
    format: str = "images"          # "images": class folders read in place; "parquet"
    val_folder: Path | None = None  # its validation split, else its test split, as a folder-per-class tree

    def describe(self) -> str:
        details = ", ".join(([] if self.format == "images" else [self.format.capitalize()]) +
                            ([f"split {self.split}"] if self.split else []))
        details = f" ({details})" if details else ""
        if self.repo_id is None:
            return f"folder {self.folder}{details}"
        sub = f"/{self.subfolder}" if self.subfolder else ""
        return f"Hub dataset {self.repo_id}{sub} @ {self.commit}{details}"


class HubSpec(NamedTuple):
    repo_id: str
    revision: str | None            # None: the default branch
    subfolder: str
    split: str | None               # None: not named (a Parquet repo then reads DEFAULT_SPLIT)


def parse_hub_spec(spec: str) -> HubSpec:
    """'hf://datasets/user/name[@revision][/subfolder][?split=name]' → its parts (huggingface_hub's HF URI
    grammar, plus our ?split=)."""
    from huggingface_hub import parse_hf_uri
    from huggingface_hub.errors import HfUriError

    uri, _, query = spec.partition("?")
    options = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query)) if query else {}
    unknown = set(options) - {"split"}
    split = options.get("split", [None])[-1]
    if unknown or (split is not None and not re.fullmatch(r"[\w.-]+", split)):
        raise DataError(f"{spec!r}: after '?' only split=NAME is understood ({SPEC_FORM})")
    try:
        parsed = parse_hf_uri(uri.rstrip("/"))
    except HfUriError as e:
        raise DataError(f"{spec!r} is not a Hub dataset: write {SPEC_FORM} ({e})") from None
    if parsed.type != "dataset":
        raise DataError(f"{spec!r} is not a Hub dataset: write {SPEC_FORM}")
    return HubSpec(parsed.id, parsed.revision, parsed.path_in_repo.strip("/"), split)


def image_patterns(subfolder: str = "") -> list[str]:
    """allow_patterns for snapshot_download: the image files (any case) under `subfolder`."""
    prefix = f"{subfolder}/" if subfolder else ""
    return [prefix + "*." + "".join(f"[{c}{c.upper()}]" for c in suffix[1:]) for suffix in IMAGE_SUFFIXES]


def parquet_patterns(subfolder: str, split: str) -> list[str]:
    """allow_patterns for snapshot_download: the Parquet files of `split` under `subfolder`, in the layouts
    that `push_to_hub` (data/train-00000-of-00001.parquet) and refs/convert/parquet (default/train/0000.parquet)
    write. fnmatch's '*' also crosses '/'; `split_files` then keeps the exact matches."""
    prefix = f"{subfolder}/" if subfolder else ""
    return [f"{prefix}{split}-*.parquet", f"{prefix}*/{split}-*.parquet", f"{prefix}{split}.parquet",
            f"{prefix}*/{split}.parquet", f"{prefix}*{split}/*.parquet"]


def split_files(folder: Path, split: str) -> list[Path]:
    """The Parquet files below `folder` that hold `split` (by their name or their folder's)."""
    def holds(path: Path) -> bool:
        return path.stem == split or path.stem.startswith(f"{split}-") or path.parent.name in (split, f"partial-{split}")

    return sorted(p for p in folder.rglob("*.parquet") if holds(p.relative_to(folder)))


def fetch_dataset(spec: str, commit: str | None = None, cache_dir: str | os.PathLike | None = None) -> Source:
    """Download (or find in the HF cache) the images, or the split's Parquet files, of a Hub dataset repo, at
    `commit` if given (a resumed run reads the commit it started with), else at the revision the spec names."""
    hub = parse_hub_spec(spec)
    split = hub.split or DEFAULT_SPLIT
    snapshot = fetch_snapshot(hub.repo_id, commit or hub.revision,
                              image_patterns(hub.subfolder) + parquet_patterns(hub.subfolder, split),
                              DataError, asked=spec, kind="dataset")
    folder = snapshot / hub.subfolder if hub.subfolder else snapshot
    tables = split_files(folder, split) if folder.is_dir() else []
    if tables:
        target = Path(cache_dir or default_cache_dir(), PARQUET_FOLDER, hub.repo_id.replace("/", "--"), snapshot.name,
                      hub.subfolder.replace("/", "--") or "-", split)
        return Source(spec, extract_parquet(tables, target, spec, snapshot), hub.repo_id, hub.revision,
                      snapshot.name, hub.subfolder, split, "parquet")
    if not folder.is_dir() or not any(folder.iterdir()) or (hub.split and not split_folders(folder)):
        hint = "it names split folders or Parquet files" if hub.split else "name another split with ?split="
        raise DataError(f"Hub dataset {hub.repo_id!r} at {snapshot.name} has neither class folders of images under "
                        f"{hub.subfolder or '(root)'!r} nor Parquet files of split {split!r} ({hint})")
    return by_split(Source(spec, folder, hub.repo_id, hub.revision, snapshot.name, hub.subfolder), hub.split)


def by_split(source: Source, split: str | None = None) -> Source:
    """A source split into train/, test/ ... folders (cnn.data.split_folders) read as its `split` (default train),
    validated by its validation split, else its test split; any other source as it is."""
    folders = split_folders(source.folder)
    if not folders:
        return source
    wanted = split_of(split or DEFAULT_SPLIT)
    if wanted not in folders:
        raise DataError(f"{source.spec} has no {split or DEFAULT_SPLIT!r} split, only "
                        f"{', '.join(f'{path.name}/' for path in folders.values())}: name the one to train on "
                        "(--data FOLDER/SPLIT, or ?split=SPLIT for a Hub dataset)")
    val = next((folders[name] for name in VALIDATION_SPLITS if name in folders and name != wanted), None)
    return replace(source, folder=folders[wanted], split=folders[wanted].name, val_folder=val)


def validation_split(used: list[Source]) -> Path | None:
    """The validation split that the sources bring with them (None without one): it validates when --val-data is
    not given. Two sources with one each are refused: which photos should validate is the user's choice."""
    found = [source for source in used if source.val_folder]
    if len(found) > 1:
        raise DataError(f"{found[0].spec} and {found[1].spec} each have their own validation split: give "
                        "--val-data FOLDER to say which photos validate")
    return found[0].val_folder if found else None


def parquet_features(path: Path, spec: str) -> tuple[str, str, list[str]]:
    """(image column, label column, label names) from the schema's `huggingface` metadata, which `datasets`
    writes into every Parquet file it makes (and the Hub's conversion keeps)."""
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    try:
        features = json.loads(metadata[b"huggingface"])["info"]["features"]
    except (KeyError, ValueError, TypeError):
        features = {}
    image = next((name for name, f in features.items() if isinstance(f, dict) and f.get("_type") == "Image"), None)
    label = next((name for name, f in features.items() if isinstance(f, dict) and f.get("_type") == "ClassLabel"), None)
    names = features[label].get("names") if label else None
    if image is None or not names:
        raise DataError(f"{spec}: {path.name} has no Image column and ClassLabel column with names in its "
                        "'huggingface' schema metadata (as `datasets` writes them), so its photos and labels "
                        "cannot be told apart")
    bad = [n for n in names if not re.fullmatch(r"[^/\\\x00]+", n) or n.startswith(".")]
    if bad:
        raise DataError(f"{spec}: the label names {bad} cannot be folder names")
    return image, label, list(names)


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


def photo_bytes(photo: dict | None, snapshot: Path) -> bytes | None:
    """An Image cell's bytes, else the repo file its relative path names (image files are fetched with the
    Parquet files), else None."""
    if not isinstance(photo, dict):
        return None
    if photo.get("bytes") is not None:
        return photo["bytes"]
    path = photo.get("path")
    if path and not Path(path).is_absolute() and ".." not in Path(path).parts and (snapshot / path).is_file():
        return (snapshot / path).read_bytes()
    return None


def extract_parquet(tables: list[Path], target: Path, spec: str, snapshot: Path) -> Path:
    """Write the photos of `tables` once as target/<label>/<file>-<row>.<suffix>: an image's bytes, or the
    snapshot's file that its path names (rows with neither, or without a label, are skipped and counted).
    A finished tree is reused: it depends only on the commit."""
    import pyarrow.parquet as pq

    if target.is_dir():
        return target
    columns = [parquet_features(path, spec) for path in tables]
    if len({(image, label, tuple(names)) for image, label, names in columns}) > 1:
        raise DataError(f"{spec}: its Parquet files disagree on their columns or label names")
    image, label, names = columns[0]
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    written = skipped = 0
    for i, path in enumerate(tables):
        row = 0
        for batch in pq.ParquetFile(path).iter_batches(columns=[image, label], batch_size=256):
            for photo, index in zip(batch.column(image).to_pylist(), batch.column(label).to_pylist()):
                data = photo_bytes(photo, snapshot)
                if data is None or index is None or not 0 <= index < len(names):
                    skipped += 1
                else:
                    out = partial / names[index] / f"{i:03d}-{row:06d}{photo_suffix(data, photo.get('path'))}"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(data)
                    written += 1
                row += 1
    if skipped:
        log.warning("%s: %d rows skipped (no label, or no image bytes and no such file in the repo)", spec, skipped)
    if not written:
        raise DataError(f"{spec}: no photo with a label in {', '.join(p.name for p in tables)}")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        partial.rename(target)
    except OSError:                    # another process (a DDP rank) finished first: its tree is the same
        shutil.rmtree(partial, ignore_errors=True)
    return target


def resolve(spec: str | os.PathLike, commit: str | None = None, cache_dir: str | os.PathLike | None = None) -> Source:
    """A local folder as it is, or a Hub dataset fetched through the cache."""
    spec = str(spec)
    if spec.startswith(HUB_PREFIX):
        return fetch_dataset(spec, commit, cache_dir)
    return by_split(Source(spec, Path(spec)))


def resolve_all(specs: list[str], pinned: list[dict[str, Any]] | None = None,
                cache_dir: str | os.PathLike | None = None) -> list[Source]:
    """Every --data value resolved; `pinned` (a run's earlier record) fixes Hub sources to their commits.
    Parquet sources are written as folders under `cache_dir` (default: cnn.data's cache folder)."""
    if not specs:
        raise DataError("no training data: give --data FOLDER or --data hf://datasets/user/name")
    commits = {row["spec"]: row.get("commit") for row in pinned or []}
    return [resolve(spec, commits.get(str(spec)), cache_dir) for spec in specs]


def record(sources: list[Source], listing: Listing) -> list[dict[str, Any]]:
    """What sources.json holds: each source, where it was read from and how many photos it gave."""
    counts = [0] * len(sources)
    outliers = [0] * len(sources)
    for path in listing.paths:
        counts[listing.locate(path)[0]] += 1
    for path in listing.outliers:
        outliers[listing.locate(path)[0]] += 1
    rows = []
    for source, photos, none in zip(sources, counts, outliers):
        row: dict[str, Any] = {"spec": source.spec, "type": "folder" if source.repo_id is None else "hub_dataset",
                               "path": str(source.folder.resolve())}
        if source.repo_id is not None:
            row.update(repo_id=source.repo_id, revision=source.revision, commit=source.commit,
                       subfolder=source.subfolder, format=source.format)
        if source.split:
            row["split"] = source.split
        rows.append({**row, "photos": photos, "outliers": none})
    return rows


def write_record(run_dir: str | os.PathLike, sources: list[Source], listing: Listing) -> Path:
    """Write sources.json into the run folder, and say in the log what each source gave."""
    path = Path(run_dir) / RECORD_NAME
    for source, row in zip(sources, record(sources, listing)):
        log.info("data: %s, %d photos%s", source.describe(), row["photos"],
                 f" (+{row['outliers']} in {OUTLIER_FOLDER}/, not a class)" if row["outliers"] else "")
    with atomic_write(path) as tmp:
        tmp.write_text(json.dumps({"sources": record(sources, listing)}, indent=2) + "\n")
    return path


def read_record(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The sources a run recorded (empty for runs from before sources.json)."""
    path = Path(run_dir) / RECORD_NAME
    return json.loads(path.read_text())["sources"] if path.exists() else []
