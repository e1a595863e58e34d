"""Files that are either complete or absent: a crash mid-write never leaves a half file behind; and the path a
mistyped one probably meant."""
from __future__ import annotations

import contextlib
import difflib
import os
import shutil
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed onto `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def check_writable(folder: str | os.PathLike, need_bytes: int = 50 * 2**20) -> None:
    """Fail early, with a clear message, if `folder` cannot take the run's files."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise OSError(f"cannot write to run folder {str(folder)!r}: {e.strerror or e}") from None
    free = shutil.disk_usage(folder).free
    if free < need_bytes:
        raise OSError(f"only {free / 2**20:.0f} MiB free under {folder}; "
                      f"training needs at least {need_bytes / 2**20:.0f} MiB")


def closest_path(path: str | os.PathLike) -> str:
    """The existing path nearest to a missing one, corrected part by part (difflib's closest name at each level),
    so that a typo is answered with what was meant; '' when a part has no close match."""
    path = Path(path).expanduser()
    found = Path(path.anchor) if path.anchor else Path()
    for part in path.parts[1 if path.anchor else 0:]:
        if not (found / part).exists():
            try:
                names = [child.name for child in found.iterdir()]
            except OSError:   # not a folder, or not readable
                names = []
            match = difflib.get_close_matches(part, names, n=1)
            if not match:
                return ""
            part = match[0]
        found = found / part
    return str(found)
