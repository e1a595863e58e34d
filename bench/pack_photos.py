"""Pack the photos a GPU check needs into one small zip that travels with the working tree.

A lent GPU machine sees only the repository (at most 64 MiB, counted on disk, where 20,000 small files
take far more room than their bytes), never ../shared. This re-encodes every photo of SRC/animals,
SRC/animals-val and SRC/other as a small JPEG (short side `--side` for training photos, `--val-side` for
validation ones; by default the side the default recipe caches photos at, so training on the pack sees
the same pixels) and stores them, same layout, in one uncompressed zip. It stops with a clear message
when the pack would exceed `--max-mib`.

    python bench/pack_photos.py ../shared/data packed/photos.zip    # then: python bench/gpu_train.py packed/photos.zip
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import zipfile
from multiprocessing import Pool
from pathlib import Path

from common import emit, note

from cnn.data import ImageError, list_files, load_image  # noqa: E402

PARTS = {"animals": "side", "animals-val": "val_side", "other": "side"}


def shrink(job: tuple[str, int, int]) -> bytes:
    """One photo re-encoded as JPEG with its short side at most `side` (b"" if it cannot be read)."""
    src, side, quality = job
    try:
        img = load_image(src, draft_side=side)
    except ImageError:
        return b""
    scale = side / min(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample=3)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


def jpeg_name(rel: str) -> str:
    """`a/b.jpg` stays; `a/b.png` becomes `a/b.png.jpg`, so that b.png and b.jpg never collide."""
    return rel if rel.lower().endswith((".jpg", ".jpeg")) else rel + ".jpg"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", type=Path, help="folder holding animals/, animals-val/ and other/")
    p.add_argument("out", type=Path, help="the zip to write (replaced)")
    p.add_argument("--side", type=int, default=110,
                   help="short side of training photos (default 110: the default recipe's cache side, 96 / 0.875)")
    p.add_argument("--val-side", type=int, default=110, help="short side of validation photos (default 110)")
    p.add_argument("--quality", type=int, default=50, help="JPEG quality (default 50)")
    p.add_argument("--max-mib", type=float, default=57.0,
                   help="refuse a larger pack (default 57: with the ~5 MiB tree it fits the 64 MiB a GPU run carries)")
    args = p.parse_args(argv)
    missing = [part for part in PARTS if not (args.src / part).is_dir()]
    if missing:
        note(f"{args.src} has no {', '.join(missing)} folder: it must hold animals/, animals-val/ and other/")
        return 1
    names, jobs = [], []
    for part, size in PARTS.items():
        for rel in list_files(args.src / part, args.src / part):
            names.append(f"{part}/{jpeg_name(rel)}")
            jobs.append((str(args.src / part / rel), getattr(args, size), args.quality))
    with Pool(os.cpu_count() or 1) as pool:
        photos = pool.map(shrink, jobs, chunksize=64)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as pack:  # JPEGs do not compress further
        for name, photo in zip(names, photos):
            if photo:
                pack.writestr(name, photo)
    mib = partial.stat().st_size / 2**20
    emit("packed_photos", sum(1 for photo in photos if photo))
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
