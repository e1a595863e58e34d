"""Many photos at once: loose photos and .zip files in, one table row per photo out.

A file that cannot be read becomes a row with its reason, never a failed batch; only a batch over
MAX_PHOTOS is refused as a whole. A zip is checked from its directory before anything is extracted
(entry count, total uncompressed size, no entry that leaves the folder, no links, no passwords) and
its photos are written, under names of our own, into a temporary folder that is always removed.
Photos are decoded and classified BATCH_SIZE at a time: one forward pass per batch, not per photo.

    rows = classify_uploads(clf, [Upload("cat.jpg", Path("cat.jpg")), Upload("trip.zip", Path("trip.zip"))])
    write_csv(rows, "predictions.csv")
"""
from __future__ import annotations

import csv
import os
import shutil
import stat
import tempfile
import zipfile
import zlib
from collections import Counter
from dataclasses import astuple, dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable

from .data import IMAGE_SUFFIXES, ImageError, ImageTooLargeError, load_image
from .inference import UNKNOWN, UNSURE, Classifier
from .wording import none_of, percent

MAX_PHOTOS = 500          # photos in one batch (a zip's photos count one by one)
MAX_UPLOAD_MB = 10        # one uploaded file, photo or zip (the app passes it to Gradio)
MAX_ZIP_ENTRIES = 2000    # entries in a zip's directory, folders and non-photos included
MAX_UNZIPPED_MB = 100     # a zip's photos, uncompressed, in all
BATCH_SIZE = 32           # photos per forward pass: enough to amortise the pass, little memory
NOT_SURE = "not sure"
UNREADABLE = "not an image that can be read"
CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")   # what a spreadsheet may run as a formula

Progress = Callable[[int, int], None]   # (photos done, photos in all)


class BatchError(ValueError):
    """The whole batch is refused (over a limit); the message says why and what to do."""


class ZipRefused(ValueError):
    """One zip fails its checks; the message says why (it becomes that zip's row)."""


@dataclass(frozen=True)
class Upload:
    """One uploaded file: the name its owner gave it (shown, never trusted) and where it lies now."""
    name: str
    path: Path


@dataclass(frozen=True)
class Row:
    """One line of the result table: a photo's top label, or why it has none."""
    file: str
    label: str | None = None
    probability: float | None = None
    flag: str = ""            # NOT_SURE or wording.none_of(...), from the model's calibrated thresholds
    error: str = ""

    def cells(self) -> list:
        return list(astuple(self))


HEADERS = ["file", "top label", "probability", "flag", "error"]   # Row's fields, in words
PROBABILITY = HEADERS.index("probability")


# --- zips ------------------------------------------------------------------------------------------

def is_zip(upload: Upload) -> bool:
    return upload.name.lower().endswith(".zip")


def _leaves_folder(name: str) -> bool:
    """An entry name that would land outside the extraction folder (absolute, '..', a drive letter)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return bool(parts) and (parts[0] == "/" or ":" in parts[0] or ".." in parts)


def _wanted(entry: zipfile.ZipInfo) -> bool:
    """A photo worth classifying: not a folder, not hidden, not macOS resource-fork junk."""
    parts = PurePosixPath(entry.filename).parts
    return (not entry.is_dir() and entry.filename.lower().endswith(IMAGE_SUFFIXES)
            and not any(p.startswith((".", "__MACOSX")) for p in parts))


def check_zip(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """The photo entries of `archive`, after checking its whole directory; ZipRefused says why not."""
    entries = archive.infolist()
    if len(entries) > MAX_ZIP_ENTRIES:
        raise ZipRefused(f"holds {len(entries)} files; a zip may hold at most {MAX_ZIP_ENTRIES}")
    for entry in entries:
        if _leaves_folder(entry.filename):
            raise ZipRefused(f"has an entry that points outside its folder ({entry.filename})")
        if stat.S_ISLNK(entry.external_attr >> 16):
            raise ZipRefused(f"has a link ({entry.filename}); links are not extracted")
        if entry.flag_bits & 0x1:
            raise ZipRefused("is password-protected")
    photos = [e for e in entries if _wanted(e)]
    if len(photos) > MAX_PHOTOS:
        raise ZipRefused(f"holds {len(photos)} photos; a batch takes at most {MAX_PHOTOS}")
    unzipped = sum(e.file_size for e in photos)
    if unzipped > MAX_UNZIPPED_MB * 2**20:
        raise ZipRefused(f"unpacks to {unzipped / 2**20:.0f} MB; a zip may unpack to at most {MAX_UNZIPPED_MB} MB")
    return photos


def extract_photos(upload: Upload, folder: Path) -> list[Upload]:
    """The zip's photos, checked (check_zip) and then written into `folder` under numbered names of
    our own (never the entry's), so no entry name can choose where a file lands."""
    try:
        with zipfile.ZipFile(upload.path) as archive:
            photos = check_zip(archive)
            folder.mkdir(parents=True)
            extracted = []
            for n, entry in enumerate(photos):
                target = folder / f"{n:05d}{PurePosixPath(entry.filename).suffix.lower()}"
                with archive.open(entry) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)   # zipfile stops at the declared size and checks the CRC
                extracted.append(Upload(f"{upload.name}/{entry.filename}", target))
            return extracted
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, zlib.error) as e:
        raise ZipRefused(f"is not a zip file that can be read ({type(e).__name__})") from None


# --- classifying -------------------------------------------------------------------------------------

def _decode(clf: Classifier, upload: Upload):
    """The photo decoded for `clf`, or the Row that says why it cannot be."""
    try:
        return load_image(upload.path, draft_side=clf.resize_side)
    except ImageTooLargeError:
        return Row(upload.name, error="too many pixels to open safely")
    except (ImageError, OSError):   # the message names the server's temporary path: not shown
        return Row(upload.name, error=UNREADABLE)


def classify(clf: Classifier, uploads: list[Upload | Row], progress: Progress | None = None) -> list[Row]:
    """One row per item, in order: photos classified BATCH_SIZE at a time (one forward pass each),
    Rows (zips that were refused) kept as they are."""
    rows: list[Row] = []
    unknown = none_of(len(clf.labels))
    for start in range(0, len(uploads), BATCH_SIZE):
        chunk = [u if isinstance(u, Row) else _decode(clf, u) for u in uploads[start:start + BATCH_SIZE]]
        photos = [(i, img) for i, img in enumerate(chunk) if not isinstance(img, Row)]
        probs = clf.probabilities_batch([img for _, img in photos]) if photos else []
        for (i, _), p in zip(photos, probs):
            top, index = float(p.max()), int(p.argmax())
            flag = {UNKNOWN: unknown, UNSURE: NOT_SURE, "": ""}[clf.warning(p)]
            chunk[i] = Row(uploads[start + i].name, clf.labels[index], round(top, 4), flag)
        rows += chunk
        if progress:
            progress(len(rows), len(uploads))
    return rows


def classify_uploads(clf: Classifier, uploads: list[Upload], progress: Progress | None = None) -> list[Row]:
    """Photos and zips in, one row per photo out (a zip's photos in its place, in its order).

    Raises BatchError, before any photo is classified, when there are more than MAX_PHOTOS."""
    with tempfile.TemporaryDirectory(prefix="cnn-batch-") as tmp:
        items: list[Upload | Row] = []
        for n, upload in enumerate(uploads):
            if is_zip(upload):
                try:
                    items += extract_photos(upload, Path(tmp, str(n)))
                except ZipRefused as e:
                    items.append(Row(upload.name, error=f"zip refused: it {e}"))
            else:
                items.append(upload)
            if len(items) > MAX_PHOTOS:
                raise BatchError(f"That is more than {MAX_PHOTOS} photos. Please send at most {MAX_PHOTOS} "
                                 "at a time (split the folder or the zip).")
        return classify(clf, items, progress)


# --- the table's summary and its CSV -------------------------------------------------------------------

def summary(rows: Iterable[Row]) -> Counter:
    """How many photos got each top label, then each flag, then how many had none ("unreadable")."""
    rows = list(rows)
    counts = Counter(r.label for r in rows if r.label)
    counts.update(r.flag for r in rows if r.flag)
    counts.update("unreadable" for r in rows if r.error)
    return counts


def table(rows: Iterable[Row]) -> dict[str, Any]:
    """The page's table (a gr.Dataframe value): the rows' values as they are (numbers sort as numbers; API
    clients and the CSV get them), each shown as the page shows it, a probability as a whole percent."""
    data = [row.cells() for row in rows]
    shown = [["" if v is None else percent(v) if i == PROBABILITY else str(v) for i, v in enumerate(cells)]
             for cells in data]
    return {"headers": HEADERS, "data": data, "metadata": {"display_value": shown}}


def safe_cell(value) -> str | float:
    """A cell a spreadsheet shows as text: one starting like a formula gets a leading quote."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_START):
        return "'" + value
    return value


def write_csv(rows: Iterable[Row], path: str | os.PathLike) -> Path:
    """The table as UTF-8 CSV (file names as plain text, quoted where needed, never a formula)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADERS)
        writer.writerows([safe_cell(v) for v in row.cells()] for row in rows)
    return Path(path)
