"""page.resources: memory handed back after a burst, the upload cache trimmed to a size, one sweeper for both."""
from __future__ import annotations

import os
import sys

import pytest

from page import resources


def test_trim_folder_deletes_the_oldest_files_past_the_cap(tmp_path):
    for age, name in enumerate(["new", "mid", "old"]):
        path = tmp_path / name / "upload.bin"
        path.parent.mkdir()
        path.write_bytes(b"x" * 1000)
        os.utime(path, (1_000_000 - age * 100, 1_000_000 - age * 100))
    assert resources.trim_folder(tmp_path, 2500) == 1000
    assert sorted(p.parent.name for p in tmp_path.rglob("*.bin")) == ["mid", "new"]
    assert resources.trim_folder(tmp_path, 2500) == 0                      # under the cap: nothing goes


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_return_memory_gives_back_what_a_burst_left_in_the_heap():
    """200 MB in 100 KB blocks (under glibc's mmap threshold, so they live in a thread's heap), freed: glibc
    keeps those pages until asked, and malloc_trim says it released some."""
    import threading

    import numpy as np

    def burst() -> None:
        blocks = [np.ones(100_000, dtype=np.uint8) for _ in range(2000)]
        del blocks

    thread = threading.Thread(target=burst)
    thread.start()
    thread.join()
    assert resources.return_memory() is True


def test_the_sweeper_returns_memory_and_trims_the_cache(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(resources, "return_memory", lambda: calls.append("memory"))
    (tmp_path / "a.bin").write_bytes(b"x" * 3 * 2**20)
    sweeper = resources.Sweeper(tmp_path, max_mb=1, every=0.01)
    sweeper.start()
    try:
        for _ in range(500):
            if calls and not (tmp_path / "a.bin").exists():
                break
            sweeper.stopped.wait(0.01)
    finally:
        sweeper.stopped.set()
        sweeper.join(5)
    assert calls and not (tmp_path / "a.bin").exists() and not sweeper.is_alive()
    resources.Sweeper(tmp_path / "missing", max_mb=1).sweep()              # no cache folder yet: no error
