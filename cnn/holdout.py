"""Whole sources held out from training, so that a figure of ours predicts photos from elsewhere.

A random split shares sources (photographers, cameras, datasets) with the training photos and overstates what
visitors will see. A `sources.csv` beside the data (columns `file` and `repo`; `file` relative to the CSV's
folder) names the repository every photo came from; a small JSON (e.g. train/held_out_sources.json) names
the repositories that are never trained on:

    {"about": "why these", "sources_csv": "sources.csv", "held_out": ["user/repo", ...],
     "kinds": {"lion": "n02129165", ...}, "kind_folds": [["lion", ...], ...]}

`split_by_source` takes a scanned folder apart into the photos to train on and the held-out ones (a
labelled validation set); it serves the outlier photos too ("none of the ten" measured on unseen sources).

Unseen sources are not enough for "none of the ten": a detector taught on photos of lions is not tested by
other photos of lions. `kinds` names kinds of outlier photo by a folder of their `path_in_repo` in sources.csv,
and `kind_folds` splits them into folds; a run (TrainConfig.kind_fold) never trains on the kinds of its fold
and measures "none of the ten" on them, so that rotating the fold measures every kind once as never seen.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .data import DataError, Listing

# The real-photo validation sets a run may measure, in report order: the `val_data` folder, and the photos of
# the held-out sources (both like the photos people send, both never trained on).
REAL_SETS = ("real_val", "heldout_val")


@dataclass
class HoldoutSpec:
    """Which sources are held out, and where the photo → source table is looked for."""
    held_out: list[str]
    sources_csv: str = "sources.csv"
    about: str = ""
    path: str = ""                  # the JSON it was read from
    kinds: dict[str, str] = field(default_factory=dict)   # kind of outlier photo → its folder in path_in_repo
    kind_folds: list[list[str]] = field(default_factory=list)
    kind_fold: int = 0              # the fold whose kinds are never trained on

    @classmethod
    def read(cls, path: str | os.PathLike, kind_fold: int = 0) -> "HoldoutSpec":
        """The spec in a JSON file, holding out the kinds of fold `kind_fold` (when it names kinds)."""
        try:
            raw = json.loads(Path(path).read_text())
            spec = cls(held_out=[str(r) for r in raw["held_out"]], sources_csv=str(raw.get("sources_csv", "sources.csv")),
                       about=str(raw.get("about", "")), path=str(path),
                       kinds={str(k): str(v) for k, v in raw.get("kinds", {}).items()},
                       kind_folds=[[str(k) for k in fold] for fold in raw.get("kind_folds", [])], kind_fold=kind_fold)
        except FileNotFoundError:
            raise DataError(f"held-out sources file {str(path)!r} does not exist") from None
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise DataError(f"held-out sources file {str(path)!r} is not valid: it needs a JSON object with a "
                            f"'held_out' list of repository names, and optionally 'kinds' (an object: kind → "
                            f"folder) and 'kind_folds' (a list of lists of kinds) ({type(e).__name__}: {e})") from None
        if not spec.held_out:
            raise DataError(f"held-out sources file {str(path)!r} names no source")
        unknown = sorted({k for fold in spec.kind_folds for k in fold} - spec.kinds.keys())
        if unknown:
            raise DataError(f"held-out sources file {str(path)!r}: 'kind_folds' names kinds that 'kinds' does not "
                            f"define: {', '.join(unknown)}")
        if spec.kind_folds and not 0 <= kind_fold < len(spec.kind_folds):
            raise DataError(f"kind fold {kind_fold} does not exist: {str(path)!r} has folds 0 to {len(spec.kind_folds) - 1}")
        return spec

    @property
    def held_out_kinds(self) -> list[str]:
        """The kinds never trained on in this run (none when the file names no folds)."""
        return self.kind_folds[self.kind_fold] if self.kind_folds else []


def find_sources_csv(roots: Sequence[Path], name: str) -> Path:
    """The photo → source table: `name` in a data folder or in the folder above it (where it names the
    photos of several sibling folders, as ../shared/data/sources.csv does)."""
    for root in roots:
        for folder in (root, root.resolve().parent):
            if (folder / name).is_file():
                return folder / name
    raise DataError(f"no {name} found in {', '.join(str(r) for r in roots)} or the folder above: it is needed "
                    "to hold out whole sources (columns 'file' and 'repo', file relative to its folder)")


def read_sources(csv_path: Path, column: str = "repo") -> dict[Path, str]:
    """{resolved photo path: its `column`} from a sources.csv (by default the source repository)."""
    base = csv_path.resolve().parent
    with open(csv_path, newline="") as f:
        rows = csv.DictReader(f)
        if not rows.fieldnames or not {"file", column} <= set(rows.fieldnames):
            raise DataError(f"{csv_path} needs the columns 'file' and {column!r} (found: {rows.fieldnames})")
        return {(base / row["file"]).resolve(): row[column] for row in rows}


def sources_of(listing: Listing, paths: Sequence[str], table: dict[Path, str]) -> list[str]:
    """The source repository of each entry of `paths` (entries of listing.paths or .outliers); '' when the
    table does not name the photo (it then stays on the training side)."""
    return [table.get(listing.file(p).resolve(), "") for p in paths]


def held_out(listing: Listing, paths: Sequence[str], spec: HoldoutSpec,
             table: dict[Path, str] | None = None) -> list[bool]:
    """For each entry of `paths` (of listing.paths or .outliers): does it come from a held-out source?
    `table` is the listing's sources.csv when the caller has read it already."""
    table = table if table is not None else read_sources(find_sources_csv(listing.roots, spec.sources_csv))
    names = set(spec.held_out)
    return [source in names for source in sources_of(listing, paths, table)]


def kinds_of(listing: Listing, paths: Sequence[str], spec: HoldoutSpec) -> list[str]:
    """The kind (a key of spec.kinds) of each entry of `paths`: the one whose folder is a folder of the photo's
    path_in_repo in sources.csv; '' for a photo of no named kind."""
    if not spec.kinds:
        return [""] * len(paths)
    table = read_sources(find_sources_csv(listing.roots, spec.sources_csv), "path_in_repo")
    by_folder = {folder: kind for kind, folder in spec.kinds.items()}
    found = []
    for p in paths:
        folders = table.get(listing.file(p).resolve(), "").split("/")[:-1]
        found.append(next((by_folder[f] for f in folders if f in by_folder), ""))
    return found


def split_by_source(listing: Listing, spec: HoldoutSpec) -> tuple[Listing, Listing]:
    """(the photos to train on, the held-out photos as a labelled validation set). Outliers (none/) of a
    held-out source leave the training side too."""
    table = read_sources(find_sources_csv(listing.roots, spec.sources_csv))
    where = held_out(listing, listing.paths, spec, table)
    keep = [i for i, held in enumerate(where) if not held]
    out = [i for i, held in enumerate(where) if held]
    if not out:
        raise DataError(f"none of the photos comes from a source named in {spec.path or 'the held-out list'} "
                        f"({', '.join(spec.held_out)}): check the names against sources.csv")
    kept_outliers = [p for p, held in zip(listing.outliers, held_out(listing, listing.outliers, spec, table))
                      if not held]
    train = Listing(listing.roots, [listing.paths[i] for i in keep], [listing.labels[i] for i in keep],
                    listing.classes, kept_outliers)
    val = Listing(listing.roots, [listing.paths[i] for i in out], [listing.labels[i] for i in out], listing.classes)
    return train, val
