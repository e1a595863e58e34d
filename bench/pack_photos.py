"""Pack the photos a GPU check needs into one small file that travels with the working tree.

A lent GPU machine sees only the repository (at most 64 MiB with the ~12 MiB tree, counted on disk, where
20,000 small files take far more room than their bytes), never ../shared. This stores every photo of
SRC/animals, SRC/animals-val and SRC/other as its centre square (the only part the training cache keeps),
at most `--side` pixels (default 146: the bundled recipe's cache side, 128 / 0.875, so training on the pack
sees nearly the same pixels), as a WebP (quality 40: the 23,773 photos of ../shared/data take 50.9 MiB; a
JPEG at quality 50 of the same squares about 1.35 times that), in one uncompressed zip of the same layout.
SRC's sources.csv goes in too, pointed at the packed names, so that `--holdout-sources` holds out the same
photos there. It stops with a clear message when
the pack would exceed `--max-mib`.

    python bench/pack_photos.py ../shared/data packed/photos.zip    # then: python bench/gpu_train.py packed/photos.zip
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import sys
import zipfile
from multiprocessing import Pool
from pathlib import Path

from common import emit, note

from PIL import Image  # noqa: E402

from cnn.data import ImageError, list_files, load_image  # noqa: E402

PARTS = ("animals", "animals-val", "other")


def shrink(job: tuple[str, int, int]) -> bytes:
    """One photo's centre square, at most side×side, as WebP (b"" if it cannot be read). A smaller photo
    keeps its own size: the cache enlarges it on the GPU machine exactly as it would here."""
    src, side, quality = job
    try:
        img = load_image(src, draft_side=side)
    except ImageError:
        return b""
    w, h = img.size
    crop = min(w, h)
    left, top = (w - crop) / 2, (h - crop) / 2
    out_side = min(side, crop)
    square = img.resize((out_side, out_side), Image.BICUBIC, box=(left, top, left + crop, top + crop), reducing_gap=3.0)
    out = io.BytesIO()
    square.save(out, "WEBP", quality=quality, method=6)   # method 6: the smallest files
    return out.getvalue()


def packed_name(rel: str) -> str:
    """`a/b.jpg` becomes `a/b.jpg.webp` (so that b.png and b.jpg never collide); `a/b.webp` stays."""
    return rel if rel.lower().endswith(".webp") else rel + ".webp"


def packed_sources(csv_path: Path, names: dict[str, str]) -> str:
    """SRC's sources.csv, its `file` column renamed to the packed names (rows of unpacked photos dropped)."""
    with open(csv_path, newline="") as f:
        rows = csv.DictReader(f)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=rows.fieldnames or [])
        writer.writeheader()
        for row in rows:
            if row["file"] in names:
                writer.writerow({**row, "file": names[row["file"]]})
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", type=Path, help="folder holding animals/, animals-val/ and other/ (and sources.csv)")
    p.add_argument("out", type=Path, help="the zip to write (replaced)")
    p.add_argument("--side", type=int, default=146,
                   help="longest side of the packed squares (default 146: the bundled recipe's cache side)")
    p.add_argument("--quality", type=int, default=40, help="WebP quality (default 40)")
    p.add_argument("--max-mib", type=float, default=51.0,
                   help="refuse a larger pack (default 51: with the ~12 MiB tree it fits the 64 MiB a GPU run carries)")
    args = p.parse_args(argv)
    missing = [part for part in PARTS if not (args.src / part).is_dir()]
    if missing:
        note(f"{args.src} has no {', '.join(missing)} folder: it must hold animals/, animals-val/ and other/")
        return 1
    names, jobs = {}, []
    for part in PARTS:
        for rel in list_files(args.src / part, args.src / part):
            names[f"{part}/{rel}"] = f"{part}/{packed_name(rel)}"
            jobs.append((str(args.src / part / rel), args.side, args.quality))
    with Pool(os.cpu_count() or 1) as pool:
        photos = pool.map(shrink, jobs, chunksize=64)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    packed = {original: name for (original, name), photo in zip(names.items(), photos) if photo}
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as pack:  # WebPs do not compress further
        for name, photo in zip(names.values(), photos):
            if photo:
                pack.writestr(name, photo)
        if (args.src / "sources.csv").is_file():
            pack.writestr("sources.csv", packed_sources(args.src / "sources.csv", packed))
    mib = partial.stat().st_size / 2**20
    emit("packed_photos", len(packed))
    emit("packed_mib", round(mib, 1))
    if mib > args.max_mib:
        partial.unlink()
        note(f"the pack would take {mib:.1f} MiB, over --max-mib {args.max_mib}: lower --side or --quality")
        return 1
    partial.replace(args.out)
    note(f"packed {args.src} into {args.out} ({mib:.1f} MiB; {photos.count(b'')} unreadable photos skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
