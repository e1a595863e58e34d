"""Many photos at once: loose photos and .zip files in, one table row per photo out.

A file that cannot be read becomes a row with its reason (whatever its decoder raised), never a failed
batch, and so does a zip that yields no photo; only a batch over MAX_PHOTOS photos or MAX_FILES_READ
files read is refused as a whole. The second cap counts work, not rows: every file opened and every zip
entry listed counts, whatever it turns out to be, and the same upload sent many times counts each time.
A zip is checked from its end record (its directory's declared size) before its directory is parsed,
then from its directory before anything is extracted (entry count, uncompressed size, no entry that
leaves the folder, no links, no passwords), and its photos are written, under names of our own, into a
temporary folder that is always removed. Photos are decoded one at a time into the model-sized uint8
tensor (a few tens of KB, whatever the photo's size) and classified BATCH_SIZE at a time: one forward
pass per batch, not per photo, and peak memory that does not depend on the photos' sizes.

    rows = classify_uploads(clf, [Upload("cat.jpg", Path("cat.jpg")), Upload("trip.zip", Path("trip.zip"))])
    write_csv(rows, "predictions.csv")
"""
from __future__ import annotations

import base64
import csv
import io
import os
import shutil
import stat
import struct
import tempfile
import unicodedata
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

import torch
from PIL import Image

from cnn.data import IMAGE_SUFFIXES, ImageError, ImageRefused
from cnn.inference import UNKNOWN, UNSURE, Classifier
from cnn.wording import none_of, whole_percent

MAX_PHOTOS = 500          # photos in one batch (a zip's photos count one by one)
MAX_UPLOAD_MB = 10        # one uploaded file, photo or zip (the app passes it to Gradio)
MAX_ZIP_ENTRIES = 2000    # entries in a zip's directory, folders and non-photos included
MAX_FILES_READ = 2000     # files opened plus zip entries listed, in one batch: one full zip's worth
MAX_ZIP_DIRECTORY_MB = 1  # a zip's central directory (2,000 entries with long names take ~0.4 MB)
MAX_UNZIPPED_MB = 100     # photos unzipped, in all the batch's zips together
BATCH_SIZE = 32           # photos per forward pass: enough to amortise the pass, little memory
THUMB_SIDE = 64           # the page's thumbnails: long side in px (a JPEG of ~2 KB, sent inline)
BATCHES_PER_MINUTE = int(os.environ.get("BATCH_PER_MINUTE", 6))           # batches one visitor (one network
BATCHES_PER_MINUTE_ALL = int(os.environ.get("BATCH_ALL_PER_MINUTE", 30))  # address) / all visitors may send
NOT_SURE = "not sure"
UNREADABLE = "not an image that can be read"
NO_PHOTO = "zip holds no photo (.jpg, .png, .webp, .bmp or .gif)"
CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")   # what a spreadsheet may run as a formula

Progress = Callable[[int, int], None]   # (photos done, photos in all)


class BatchError(ValueError):
    """The whole batch is refused (over a limit); the message says why and what to do."""


class ZipRefused(ValueError):
    """One zip fails its checks; the message says why (it becomes that zip's row)."""


class Work:
    """What one batch has read so far, against its caps: files opened and zip entries listed (BatchError
    past MAX_FILES_READ), and bytes unzipped (ZipRefused for the zip that would pass MAX_UNZIPPED_MB)."""

    def __init__(self) -> None:
        self.files = 0
        self.unzipped = 0

    def read(self, files: int) -> None:
        self.files += files
        if self.files > MAX_FILES_READ:
            raise BatchError(f"That batch asks to read more than {MAX_FILES_READ} files (each upload and each "
                             "entry of a zip counts, photo or not). Please send fewer at a time.")

    def unzip(self, size: int) -> None:
        if self.unzipped + size > MAX_UNZIPPED_MB * 2**20:
            raise ZipRefused(f"unpacks to {size / 2**20:.0f} MB; the batch's zips may unpack to at most "
                             f"{MAX_UNZIPPED_MB} MB in all")
        self.unzipped += size


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
    thumbnail: str = field(default="", repr=False)   # a data: URI for the page, never in the table's cells

    def cells(self) -> list:
        """The row as the table (API and CSV) has it: HEADERS' columns, no thumbnail."""
        return [self.file, self.label, self.probability, self.flag, self.error]


HEADERS = ["file", "top label", "probability", "flag", "error"]   # Row's fields, in words


# --- zips ------------------------------------------------------------------------------------------

def is_zip(upload: Upload) -> bool:
    return upload.name.lower().endswith(".zip")


def _leaves_folder(name: str) -> bool:
    """An entry name that would land outside the extraction folder (absolute, '..', a drive letter)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return bool(parts) and (parts[0] == "/" or ":" in parts[0] or ".." in parts)


def _wanted(entry: zipfile.ZipInfo) -> bool:
    """A photo worth classifying: not a folder, not hidden, not macOS resource-fork junk (nor nameless)."""
    parts = PurePosixPath(entry.filename).parts
    return (entry.filename.lower().endswith(IMAGE_SUFFIXES) and not entry.is_dir()
            and not any(p.startswith((".", "__MACOSX")) for p in parts))


END_RECORD, END_RECORD64, LOCATOR64 = b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"


def declared_directory(path: Path) -> tuple[int, int]:
    """(entries, bytes) of a zip's central directory as its end record declares them (zip64 too), read from
    the file's last 64 KB, before the directory is parsed; ZipRefused when there is no end record."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 22 - 0xFFFF))     # the end record, then a comment of up to 64 KB
        tail = f.read()
        at = tail.rfind(END_RECORD)
        if at < 0 or len(tail) - at < 22:
            raise ZipRefused("is not a zip file that can be read (no end record)")
        entries, directory = struct.unpack_from("<HL", tail, at + 10)
        if (entries == 0xFFFF or directory == 0xFFFFFFFF) and tail[at - 20:at - 16] == LOCATOR64:
            f.seek(struct.unpack_from("<Q", tail, at - 12)[0])
            record = f.read(56)
            if record[:4] != END_RECORD64:
                raise ZipRefused("is not a zip file that can be read (a broken zip64 end record)")
            entries, directory = struct.unpack_from("<QQ", record, 32)
    return entries, directory


def check_directory(path: Path) -> int:
    """The number of entries a zip declares, after refusing (ZipRefused) one whose directory is too big to
    parse: 118,000 empty entries are refused here, in microseconds, not after a second of parsing."""
    entries, directory = declared_directory(path)
    if entries > MAX_ZIP_ENTRIES:
        raise ZipRefused(f"holds {entries} files; a zip may hold at most {MAX_ZIP_ENTRIES}")
    if directory > MAX_ZIP_DIRECTORY_MB * 2**20:
        raise ZipRefused(f"has a directory of {directory / 2**20:.1f} MB; a zip's may be at most "
                         f"{MAX_ZIP_DIRECTORY_MB} MB")
    return entries


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


def extract_photos(upload: Upload, folder: Path, work: Work | None = None) -> list[Upload | Row]:
    """The zip's photos, checked (check_directory, check_zip) and then written into `folder` under numbered
    names of our own (never the entry's), so no entry name can choose where a file lands. An entry that
    cannot be read is its own row; the entries listed and bytes unzipped are charged to `work`."""
    work = work or Work()
    work.read(check_directory(upload.path))
    try:
        with zipfile.ZipFile(upload.path) as archive:
            photos = check_zip(archive)
            work.unzip(sum(e.file_size for e in photos))
            folder.mkdir(parents=True)
            return [_extract(archive, entry, folder / f"{n:05d}{PurePosixPath(entry.filename).suffix.lower()}",
                             f"{upload.name}/{entry.filename}") for n, entry in enumerate(photos)]
    except ZipRefused:
        raise
    except Exception as e:  # noqa: BLE001  zipfile raises many types on a malformed directory (IndexError, ...)
        raise ZipRefused(f"is not a zip file that can be read ({type(e).__name__})") from None


def _extract(archive: zipfile.ZipFile, entry: zipfile.ZipInfo, target: Path, name: str) -> Upload | Row:
    """One entry written to `target`, or the row that says it could not be read (a negative header offset,
    a bad CRC, an unknown compression, ...)."""
    try:
        with archive.open(entry) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)   # zipfile stops at the declared size and checks the CRC
    except Exception as e:  # noqa: BLE001  one broken entry is that entry's row, never the batch's failure
        return Row(name, error=f"could not be read from the zip ({type(e).__name__})")
    return Upload(name, target)


# --- classifying -------------------------------------------------------------------------------------

def _prepare(clf: Classifier, upload: Upload) -> torch.Tensor | Row:
    """The photo as the model's small uint8 input (the decoded photo is gone when this returns), or the Row
    that says why it cannot be."""
    try:
        return clf.prepare(upload.path)
    except ImageRefused as e:       # the budget's reason names no path: shown
        return Row(upload.name, error=str(e))
    except (ImageError, OSError):   # the message names the server's temporary path: not shown
        return Row(upload.name, error=UNREADABLE)


def thumbnail(image: Image.Image | torch.Tensor, side: int = THUMB_SIDE) -> str:
    """A small JPEG of `image` (or of the model's 3×R×R uint8 input, what a batch keeps of a photo) as a data:
    URI: the page shows it inline, so no file outlives the batch (a zip's photos are deleted as soon as they
    are classified)."""
    small = Image.fromarray(image.permute(1, 2, 0).numpy()) if isinstance(image, torch.Tensor) else image.convert("RGB")
    small.thumbnail((side, side))
    out = io.BytesIO()
    small.save(out, format="JPEG", quality=75)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def classify(clf: Classifier, uploads: list[Upload | Row], progress: Progress | None = None,
             thumbnails: bool = False) -> list[Row]:
    """One row per item, in order: photos classified BATCH_SIZE at a time (one forward pass each),
    Rows (zips that were refused) kept as they are; with `thumbnails`, each photo's row carries one."""
    rows: list[Row] = []
    unknown = none_of(len(clf.labels))
    for start in range(0, len(uploads), BATCH_SIZE):
        chunk = [u if isinstance(u, Row) else _prepare(clf, u) for u in uploads[start:start + BATCH_SIZE]]
        photos = [(i, img) for i, img in enumerate(chunk) if not isinstance(img, Row)]
        probs, looks_unknown = clf.analyse_batch([img for _, img in photos]) if photos else ([], [])
        for (i, img), p, u in zip(photos, probs, looks_unknown):
            top, index = float(p.max()), int(p.argmax())
            flag = {UNKNOWN: unknown, UNSURE: NOT_SURE, "": ""}[clf.warning(p, bool(u))]
            chunk[i] = Row(uploads[start + i].name, clf.labels[index], round(top, 4), flag,
                           thumbnail=thumbnail(img) if thumbnails else "")
        rows += chunk
        if progress:
            progress(len(rows), len(uploads))
    return rows


def classify_uploads(clf: Classifier, uploads: list[Upload], progress: Progress | None = None,
                     thumbnails: bool = False) -> list[Row]:
    """Photos and zips in, one row per photo out (a zip's photos in its place, in its order).

    Raises BatchError, before any photo is classified, when there are more than MAX_PHOTOS, or more than
    MAX_FILES_READ files and zip entries to read."""
    work = Work()
    with tempfile.TemporaryDirectory(prefix="cnn-batch-") as tmp:
        items: list[Upload | Row] = []
        for n, upload in enumerate(uploads):
            work.read(1)
            if is_zip(upload):
                try:
                    items += extract_photos(upload, Path(tmp, str(n)), work) or [Row(upload.name, error=NO_PHOTO)]
                except ZipRefused as e:
                    items.append(Row(upload.name, error=f"zip refused: it {e}"))
            else:
                items.append(upload)
            if len(items) > MAX_PHOTOS:
                raise BatchError(f"That is more than {MAX_PHOTOS} photos. Please send at most {MAX_PHOTOS} "
                                 "at a time (split the folder or the zip).")
        return classify(clf, items, progress, thumbnails)


# --- the table's summary and its CSV -------------------------------------------------------------------

def answer(row: Row) -> str:
    """What a classified photo counts as, once: "none of the N" when it looks like none of the labels, else its
    top label (a "not sure" photo still has one: the flag doubts it, it is no answer of its own)."""
    return row.flag if row.flag and row.flag != NOT_SURE else row.label or ""


def summary(rows: Iterable[Row]) -> Counter:
    """How many photos got each answer: every classified photo counted once (rows with an error are files that
    were not classified, not photos), so the counts add up to the photos."""
    return Counter(answer(r) for r in rows if not r.error)


def counts_text(rows: list[Row]) -> str:
    """The line over the table: how many photos and each answer's count (most first), how many of them are
    marked not sure, and how many files could not be classified (not photos: never in the photos' count)."""
    photos = [r for r in rows if not r.error]
    unsure, failed = sum(r.flag == NOT_SURE for r in photos), len(rows) - len(photos)
    sentences = []
    if photos:
        answers = " · ".join(f"{name} ×{n}" for name, n in summary(photos).most_common())
        sentences.append(f"**{plural(len(photos), 'photo')}:** {answers}.")
    if unsure:
        sentences.append(f"{unsure} of these {'is' if unsure == 1 else 'are'} marked not sure.")
    if failed:
        sentences.append(f"{plural(failed, 'more file' if photos else 'file')} could not be classified.")
    return " ".join(sentences)


def plural(count: int, noun: str) -> str:
    """'1 photo', '2 photos'."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


PAGE_HEADERS = ["photo", "label", "%", "flag", "file"]   # label and probability (%) apart, so either sorts;
PAGE_TYPES = ["markdown", "str", "number", "str", "str"]  # the flag before the long file name


def page_cells(row: Row) -> list[str | int | None]:
    """The row as the page shows it, narrow enough for a phone: thumbnail, top label, its probability in whole
    percent (as the One photo tab rounds it), the flag (or why the file has no answer), then the file's name."""
    photo = f"![]({row.thumbnail})" if row.thumbnail else ""
    probability = whole_percent(row.probability) if row.probability is not None else None
    return [photo, row.label or "", probability, row.error or row.flag, row.file]


def looks_like_formula(text: str) -> bool:
    """Whether a spreadsheet may read `text` as a formula: it starts with one of CSV_FORMULA_START once
    compatibility forms are folded (NFKC: a full-width '＝' or a small '﹦' is '=') and the leading
    whitespace, line breaks and invisible characters (zero-width space, BOM, bidi marks) are skipped."""
    if text.startswith(CSV_FORMULA_START):
        return True
    folded = unicodedata.normalize("NFKC", text)
    start = next((ch for ch in folded if not (ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf"))), "")
    return start in CSV_FORMULA_START


def safe_cell(value) -> str | float:
    """A cell a spreadsheet shows as text: one that may be read as a formula gets a leading quote."""
    if value is None:
        return ""
    if isinstance(value, str) and looks_like_formula(value):
        return "'" + value
    return value


def write_csv(rows: Iterable[Row], path: str | os.PathLike) -> Path:
    """The table as UTF-8 CSV (file names as plain text, quoted where needed, never a formula)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADERS)
        writer.writerows([safe_cell(v) for v in row.cells()] for row in rows)
    return Path(path)
