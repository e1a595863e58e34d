"""Where the training photos come from: local folders and files, and Hugging Face dataset repos, and a record of which.

    python -m train --data raw-img --data "hf://datasets/you/animals[@revision][/subfolder][?split=train]"

Every source ends as a folder-per-class tree; cnn.data.scan_folders merges them by class name. A source is
read as its format asks (cnn.formats): class folders in place; split folders (train/ + test/ or validation/) as
their train split, validated by the other; image folders with metadata.csv or metadata.jsonl, zip archives and
Parquet files with `datasets.load_dataset`, their photos written once as split folders in the cache. A Hub
source is fetched through the Hugging Face cache with snapshot_download (images, metadata files, zip archives,
and the Parquet files of the split and of those that may validate it), so a later run, or one with
HF_HUB_OFFLINE=1, reads the cached snapshot. The spec is huggingface_hub's HF URI (`parse_hf_uri`): a revision
holding '/' is written as is when it is one of the Hub's special refs (`@refs/convert/parquet`, `@refs/pr/3`)
or URL-encoded (`@my%2Fbranch`). `?split=` picks the split (default train): a split folder, or the Parquet files
named `<split>-*.parquet`, `<split>.parquet` or `<split>/*.parquet`; the subfolder picks the subset (`data/` or
`<subset>/`; `<subset>/` on refs/convert/parquet). `write_record` puts sources.json in the run folder: each
source with the exact commit it resolved to and how many photos it gave.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple
from urllib.parse import parse_qs

from . import formats
from .data import (IMAGE_SUFFIXES, OUTLIER_FOLDER, DataError, Listing, default_cache_dir, list_files, split_folders,
                   split_of)
from .hub import fetch_snapshot
from .io import atomic_write

log = logging.getLogger(__name__)

HUB_PREFIX = "hf://datasets/"
RECORD_NAME = "sources.json"
SPEC_FORM = 'hf://datasets/user/name[@revision][/subfolder][?split=train]'
DEFAULT_SPLIT = "train"
VALIDATION_SPLITS = ("validation", "test")   # the split that validates a source split in several, the first there is
DATASETS_FOLDER = "as-folders"     # under the cache folder: the photos of sources read with `datasets`


@dataclass
class Source:
    """One --data value, resolved to a local folder."""
    spec: str                       # as written on the command line
    folder: Path                    # the folder-per-class tree (in the cache, for a dataset in `datasets`' formats)
    repo_id: str | None = None      # Hub dataset sources only
    revision: str | None = None     # the revision asked for (None: the default branch)
    commit: str | None = None       # the commit it resolved to
    subfolder: str = ""
    split: str | None = None        # the split read, where the source has several (split folders, Parquet)
    format: str = "images"          # "images": class folders read in place; else cnn.formats.format_of's
    val_folder: Path | None = None  # its validation split, else its test split, as a folder-per-class tree

    def describe(self) -> str:
        details = ", ".join(([] if self.format == "images" else [formats.FORMATS[self.format]]) +
                            ([f"split {self.split}"] if self.split else []))
        details = f" ({details})" if details else ""
        if self.repo_id is None:   # a dataset written into the cache is named as it was given
            return f"folder {self.folder}{details}" if self.format == "images" else f"{self.spec}{details}"
        sub = f"/{self.subfolder}" if self.subfolder else ""
        return f"Hub dataset {self.repo_id}{sub} @ {self.commit}{details}"


class HubSpec(NamedTuple):
    repo_id: str
    revision: str | None            # None: the default branch
    subfolder: str
    split: str | None               # None: not named (DEFAULT_SPLIT is read where there are splits)


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


def suffix_patterns(subfolder: str, suffixes: tuple[str, ...]) -> list[str]:
    """allow_patterns for snapshot_download: the files under `subfolder` whose names end in one of `suffixes`,
    in any case (fnmatch's '*' also crosses '/')."""
    prefix = f"{subfolder}/" if subfolder else ""
    return [prefix + "*" + "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in suffix)
            for suffix in suffixes]


def image_patterns(subfolder: str = "") -> list[str]:
    """allow_patterns for snapshot_download: the image files (any case) under `subfolder`."""
    return suffix_patterns(subfolder, IMAGE_SUFFIXES)


def parquet_patterns(subfolder: str, split: str) -> list[str]:
    """allow_patterns for snapshot_download: the Parquet files of `split` under `subfolder`, in the layouts
    that `push_to_hub` (data/train-00000-of-00001.parquet) and refs/convert/parquet (default/train/0000.parquet)
    write. fnmatch's '*' also crosses '/'; `split_files` then keeps the exact matches."""
    prefix = f"{subfolder}/" if subfolder else ""
    return [f"{prefix}{split}-*.parquet", f"{prefix}*/{split}-*.parquet", f"{prefix}{split}.parquet",
            f"{prefix}*/{split}.parquet", f"{prefix}*{split}/*.parquet"]


def dataset_patterns(subfolder: str, split: str) -> list[str]:
    """Everything a source may be read from: its images, metadata files and zip archives (datasets' imagefolder),
    and the Parquet files of `split` and of the splits that may validate it."""
    return (image_patterns(subfolder) + suffix_patterns(subfolder, formats.METADATA_FILES + (".zip",)) +
            [p for name in dict.fromkeys((split,) + VALIDATION_SPLITS) for p in parquet_patterns(subfolder, name)])


def split_files(folder: Path, split: str) -> list[Path]:
    """The Parquet files below `folder` that hold `split` (by their name or their folder's)."""
    def holds(path: Path) -> bool:
        return path.stem == split or path.stem.startswith(f"{split}-") or path.parent.name in (split, f"partial-{split}")

    return sorted(p for p in folder.rglob("*.parquet") if holds(p.relative_to(folder)))


def parquet_splits(source: Source, split: str | None) -> dict[str, list[Path]]:
    """{split: its Parquet files} for `split` (default train) and the splits that may validate it; a folder
    whose files name no split at all is one train split, as is a single .parquet file."""
    wanted = split or DEFAULT_SPLIT
    if source.folder.is_file():
        return {DEFAULT_SPLIT: [source.folder]}
    found = {name: split_files(source.folder, name) for name in dict.fromkeys((wanted,) + VALIDATION_SPLITS)}
    found = {name: files for name, files in found.items() if files}
    if not found and not split:
        return {DEFAULT_SPLIT: sorted(source.folder.rglob("*.parquet"))}
    if wanted not in found:
        raise DataError(f"{source.spec} has no Parquet files of split {wanted!r} ("
                        f"{'check the split name' if split else 'name another with ?split=, or give the file itself'})")
    return found


def fetch_dataset(spec: str, commit: str | None = None, cache_dir: str | os.PathLike | None = None) -> Source:
    """Download (or find in the HF cache) what a Hub dataset repo is read from (dataset_patterns), at `commit` if
    given (a resumed run reads the commit it started with), else at the revision the spec names."""
    hub = parse_hub_spec(spec)
    split = hub.split or DEFAULT_SPLIT
    snapshot = fetch_snapshot(hub.repo_id, commit or hub.revision, dataset_patterns(hub.subfolder, split), DataError,
                              asked=spec, kind="dataset")
    folder = snapshot / hub.subfolder if hub.subfolder else snapshot
    if not folder.is_dir() or not any(folder.iterdir()):
        raise DataError(f"Hub dataset {hub.repo_id!r} at {snapshot.name} has neither class folders of images under "
                        f"{hub.subfolder or '(root)'!r} nor Parquet files of split {split!r} "
                        f"({'check the split name' if hub.split else 'name another split with ?split='})")
    source = Source(spec, folder, hub.repo_id, hub.revision, snapshot.name, hub.subfolder)
    return read_source(source, hub.split, lambda: Path(hub.repo_id.replace("/", "--"), snapshot.name,
                                                       hub.subfolder.replace("/", "--") or "-"), snapshot, cache_dir)


def local_key(path: Path) -> Path:
    """Where a local dataset's photos are written under DATASETS_FOLDER: a hash of its files' names, sizes and
    times, so that a changed dataset is written anew."""
    path = path.resolve()
    files = [path] if path.is_file() else [path / name for name in list_files(path, path)]
    h = hashlib.sha1(str(path).encode())
    for file in files:
        st = file.stat()
        h.update(f"\n{file}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return Path("local", f"{path.name}-{h.hexdigest()[:16]}")


def read_source(source: Source, split: str | None, key: Callable[[], Path], base: Path,
                cache_dir: str | os.PathLike | None) -> Source:
    """A source read as its format asks (cnn.formats): class folders in place, split or not; a dataset in
    `datasets`' formats written once as split folders under the cache folder, at `key()` below DATASETS_FOLDER
    (`base`: the folder its photos' relative paths start from, the only one besides datasets' cache they may name)."""
    kind = formats.format_of(source.folder)
    if kind == "images":
        return by_split(source, split)
    cache = Path(cache_dir or default_cache_dir())
    data_files = parquet_splits(source, split) if kind == "parquet" else None
    target = cache / DATASETS_FOLDER / key() / (split or DEFAULT_SPLIT)
    folders = formats.as_split_folders(kind, source.folder, source.spec, target, base, cache, data_files)
    return choose_split(replace(source, format=kind), {split_of(name) or name: path for name, path in folders.items()},
                        split)


def by_split(source: Source, split: str | None = None) -> Source:
    """A source split into train/, test/ ... folders (cnn.data.split_folders) read as its `split` (default train),
    validated by its validation split, else its test split; any other source as it is."""
    folders = split_folders(source.folder)
    if not folders and split:
        raise DataError(f"{source.spec}: ?split={split} names a split, but it has neither split folders (train/, "
                        "test/ ...) nor Parquet files")
    return choose_split(source, folders, split) if folders else source


def choose_split(source: Source, folders: dict[str, Path], split: str | None) -> Source:
    """`source` read from its `split` (default train) of `folders` ({split: folder}), validated by its validation
    split, else its test split."""
    wanted = split_of(split or DEFAULT_SPLIT) or split
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


def resolve(spec: str | os.PathLike, commit: str | None = None, cache_dir: str | os.PathLike | None = None) -> Source:
    """A local folder or file, or a Hub dataset fetched through the cache, read as its format asks."""
    spec = str(spec)
    if spec.startswith(HUB_PREFIX):
        return fetch_dataset(spec, commit, cache_dir)
    path = Path(spec)
    return read_source(Source(spec, path), None, lambda: local_key(path), path if path.is_dir() else path.parent,
                       cache_dir)


def resolve_all(specs: list[str], pinned: list[dict[str, Any]] | None = None,
                cache_dir: str | os.PathLike | None = None) -> list[Source]:
    """Every --data value resolved; `pinned` (a run's earlier record) fixes Hub sources to their commits.
    Sources in `datasets`' formats are written as folders under `cache_dir` (default: cnn.data's cache folder)."""
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
                               "path": str(source.folder.resolve()), "format": source.format}
        if source.repo_id is not None:
            row.update(repo_id=source.repo_id, revision=source.revision, commit=source.commit,
                       subfolder=source.subfolder)
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
