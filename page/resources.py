"""What a long-running app gives back: memory after a burst of big requests, and disk in its upload cache.

After a big decode is freed, glibc keeps the pages in its heaps (one per thread that allocated them), so the
app's resident memory stays at its peak for good: a plateau, not a leak. `return_memory` asks glibc to hand
free pages back (malloc_trim). Gradio deletes uploads only by age (`delete_cache`) and has no size cap, so one
client can fill the disk within the hour; `trim_folder` deletes the oldest files past a cap. `Sweeper` runs
both every few seconds in one daemon thread, so no request handler has to remember to.

    Sweeper(upload_folder, max_mb=2000).start()
"""
from __future__ import annotations

import ctypes
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 5.0        # how soon after a burst memory goes back, and how far past its cap the cache can get


def return_memory() -> bool:
    """Hand the heap's free pages back to the OS (glibc malloc_trim); False where there is no glibc."""
    try:
        trim = ctypes.CDLL(None).malloc_trim       # the process's own symbols: libc's, on Linux
    except (OSError, AttributeError, TypeError):   # not glibc (musl, macOS, Windows): nothing to do
        return False
    return bool(trim(0))


def trim_folder(folder: str | os.PathLike, max_bytes: int) -> int:
    """Delete the oldest files under `folder` (by modification time) until at most `max_bytes` remain;
    returns the bytes deleted. Files that vanish meanwhile (Gradio's own clean-up) are skipped."""
    files = []
    for path in Path(folder).rglob("*"):
        try:
            st = path.stat()
        except OSError:
            continue
        if path.is_file():
            files.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in files)
    freed = 0
    for _, size, path in sorted(files):
        if total - freed <= max_bytes:
            break
        try:
            path.unlink()
            freed += size
        except OSError:
            continue
    return freed


class Sweeper(threading.Thread):
    """Every `every` seconds: memory back to the OS, and `folder` trimmed to `max_mb`."""

    def __init__(self, folder: str | os.PathLike, max_mb: float, every: float = SWEEP_EVERY_S):
        super().__init__(name="resource-sweeper", daemon=True)
        self.folder, self.max_bytes, self.every = Path(folder), int(max_mb * 2**20), every
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            self.sweep()

    def sweep(self) -> None:
        return_memory()
        freed = trim_folder(self.folder, self.max_bytes) if self.folder.is_dir() else 0
        if freed:
            log.warning("upload cache over %.0f MB: deleted the oldest %.0f MB", self.max_bytes / 2**20, freed / 2**20)
