"""Where the training photos come from: local folders and Hugging Face dataset repos, and a record of which.

    python -m train --data raw-img --data hf://datasets/you/animal-feedback[@revision][/subfolder]

Every source is a folder-per-class tree; cnn.data.scan_folders merges them by class name. A Hub source
is fetched through the Hugging Face cache with snapshot_download (image files only), so a later run,
or one with HF_HUB_OFFLINE=1, reads the cached snapshot. `write_record` puts sources.json in the run
folder: each source with the exact commit it resolved to and how many photos it gave.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .data import IMAGE_SUFFIXES, OUTLIER_FOLDER, DataError, Listing
from .hub import fetch_snapshot
from .io import atomic_write

log = logging.getLogger(__name__)

HUB_PREFIX = "hf://datasets/"
RECORD_NAME = "sources.json"


@dataclass
class Source:
    """One --data value, resolved to a local folder."""
    spec: str                       # as written on the command line
    folder: Path                    # the folder-per-class tree
    repo_id: str | None = None      # Hub dataset sources only
    revision: str | None = None     # the revision asked for (None: the default branch)
    commit: str | None = None       # the commit it resolved to
    subfolder: str = ""

    def describe(self) -> str:
        if self.repo_id is None:
            return f"folder {self.folder}"
        sub = f"/{self.subfolder}" if self.subfolder else ""
        return f"Hub dataset {self.repo_id}{sub} @ {self.commit}"


def parse_hub_spec(spec: str) -> tuple[str, str | None, str]:
    """'hf://datasets/user/name[@revision][/subfolder]' → (repo id, revision or None, subfolder)."""
    parts = spec[len(HUB_PREFIX):].strip("/").split("/")
    if len(parts) < 2 or not parts[0] or not parts[1]:
        raise DataError(f"{spec!r} is not a Hub dataset: write hf://datasets/user/name[@revision][/subfolder]")
    name, _, revision = parts[1].partition("@")
    return f"{parts[0]}/{name}", revision or None, "/".join(p for p in parts[2:] if p)


def image_patterns(subfolder: str = "") -> list[str]:
    """allow_patterns for snapshot_download: the image files (any case) under `subfolder`."""
    prefix = f"{subfolder}/" if subfolder else ""
    return [prefix + "*." + "".join(f"[{c}{c.upper()}]" for c in suffix[1:]) for suffix in IMAGE_SUFFIXES]


def fetch_dataset(spec: str, commit: str | None = None) -> Source:
    """Download (or find in the HF cache) the images of a Hub dataset repo, at `commit` if given
    (a resumed run reads the commit it started with), else at the revision the spec names."""
    repo_id, revision, subfolder = parse_hub_spec(spec)
    snapshot = fetch_snapshot(repo_id, commit or revision, image_patterns(subfolder), DataError, asked=spec,
                              kind="dataset")
    folder = snapshot / subfolder if subfolder else snapshot
    if not folder.is_dir():
        raise DataError(f"Hub dataset {repo_id!r} has no image folder {subfolder or '(root)'!r} at {snapshot.name}")
    return Source(spec, folder, repo_id, revision, snapshot.name, subfolder)


def resolve(spec: str | os.PathLike, commit: str | None = None) -> Source:
    """A local folder as it is, or a Hub dataset fetched through the cache."""
    spec = str(spec)
    if spec.startswith(HUB_PREFIX):
        return fetch_dataset(spec, commit)
    return Source(spec, Path(spec))


def resolve_all(specs: list[str], pinned: list[dict[str, Any]] | None = None) -> list[Source]:
    """Every --data value resolved; `pinned` (a run's earlier record) fixes Hub sources to their commits."""
    if not specs:
        raise DataError("no training data: give --data FOLDER or --data hf://datasets/user/name")
    commits = {row["spec"]: row.get("commit") for row in pinned or []}
    return [resolve(spec, commits.get(str(spec))) for spec in specs]


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
                       subfolder=source.subfolder)
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
