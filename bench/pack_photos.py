"""Pack the photos a GPU check needs into one small folder that travels with the working tree.

A lent GPU machine sees only the repository (at most 64 MiB of ignored files), never ../shared. This
re-encodes every photo of SRC/animals, SRC/animals-val and SRC/other as a small JPEG (short side `--side`,
or `--val-side` for the validation photos, which the model sees larger) under OUT with the same layout,
and stops with a clear message when the pack would exceed `--max-mib`.

    python bench/pack_photos.py ../shared/data packed          # then: python bench/gpu_train.py packed
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from multiprocessing import Pool
from pathlib import Path

from common import emit, note

from cnn.data import ImageError, list_files, load_image  # noqa: E402

PARTS = {"animals": "side", "animals-val": "val_side", "other": "side"}


def shrink(job: tuple[str, str, int, int]) -> int:
    """Re-encode one photo with its short side at most `side`; returns the bytes written (0 if unreadable)."""
    src, dst, side, quality = job
    try:
        img = load_image(src, draft_side=side)
    except ImageError:
        return 0
    scale = side / min(img.size)
    if scale < 1:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), resample=3)
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    img.save(dst, "JPEG", quality=quality)
    return os.path.getsize(dst)


def jpeg_name(rel: str) -> str:
    """`a/b.jpg` stays; `a/b.png` becomes `a/b.png.jpg`, so that b.png and b.jpg never collide."""
    return rel if rel.lower().endswith((".jpg", ".jpeg")) else rel + ".jpg"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("src", type=Path, help="folder holding animals/, animals-val/ and other/")
    p.add_argument("out", type=Path, help="the pack to write (replaced)")
    p.add_argument("--side", type=int, default=72, help="short side of training photos (default 72)")
    p.add_argument("--val-side", type=int, default=128, help="short side of validation photos (default 128)")
    p.add_argument("--quality", type=int, default=80, help="JPEG quality (default 80)")
    p.add_argument("--max-mib", type=float, default=60.0, help="refuse a larger pack (default 60)")
    args = p.parse_args(argv)
    missing = [part for part in PARTS if not (args.src / part).is_dir()]
    if missing:
        note(f"{args.src} has no {', '.join(missing)} folder: it must hold animals/, animals-val/ and other/")
        return 1
    shutil.rmtree(args.out, ignore_errors=True)
    jobs = [(str(args.src / part / rel), str(args.out / part / jpeg_name(rel)),
             getattr(args, size), args.quality)
            for part, size in PARTS.items() for rel in list_files(args.src / part, args.src / part)]
    with Pool(os.cpu_count() or 1) as pool:
        sizes = pool.map(shrink, jobs, chunksize=64)
    mib = sum(sizes) / 2**20
    emit("packed_photos", sum(1 for s in sizes if s))
    emit("packed_mib", round(mib, 1))
    if mib > args.max_mib:
        shutil.rmtree(args.out)
        note(f"the pack would take {mib:.1f} MiB, over --max-mib {args.max_mib}: lower --side or --quality")
        return 1
    note(f"packed {args.src} into {args.out} ({mib:.1f} MiB; {sizes.count(0)} unreadable photos skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
