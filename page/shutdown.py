"""Stopping the app the way a Space (or Docker, or systemd) stops it: with SIGTERM, whose default action ends
Python at once, skipping `finally` blocks and atexit callbacks, the corrections' last push among them."""
from __future__ import annotations

import signal
import sys
from types import FrameType


def exit_on_sigterm() -> None:
    """Make SIGTERM an ordinary exit: the handler installed before (if any) runs, then SystemExit(0) is raised in
    the main thread, as Ctrl-C raises KeyboardInterrupt. Call it from the main thread."""
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: FrameType | None) -> None:
        if callable(previous):
            previous(signum, frame)
        sys.exit(0)

    signal.signal(signal.SIGTERM, handler)
