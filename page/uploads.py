"""Only files the visitor uploaded are ever opened, and what a visitor sends is shown or logged only in a safe form.

The app's events take Gradio's file references as they come (`preprocess=False`, so that decoding stays ours,
under the pixel budget). Gradio 6 checks that a reference names an uploaded file only when it carries
`"meta": {"_type": "gradio.FileData"}`; `{"path": "/any/server/file"}` without it reaches the handler unchecked
(and `gr.Image`'s own preprocessing would open it with Pillow just the same, so turning it on would not help).
So every file input goes through `uploaded_path`: the real path, symlinks resolved, must lie inside Gradio's
upload folder (`gradio.utils.get_upload_folder()`: $GRADIO_TEMP_DIR, else <temp dir>/gradio). Anything else
gets one message, the same whether the path exists, is a folder or is an image.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SHOWN_CHARS = 60            # at most this much of a visitor's text is quoted back or logged


class NotUploaded(ValueError):
    """A file reference that does not name a file this server received as an upload."""

    def __init__(self) -> None:
        super().__init__("That file was not uploaded here. Please upload the photo itself.")


def printable(text: object, limit: int = SHOWN_CHARS) -> str:
    """`text` cut to `limit` characters, each control or invisible character (line feed, zero-width space,
    bidi override) replaced by '?', so that quoting it can neither forge a log line nor flood a message."""
    text = "".join(ch if ch.isprintable() else "?" for ch in str(text)[:limit + 1])
    return text if len(text) <= limit else text[:limit - 1] + "…"


def uploaded_path(upload: dict[str, Any] | str | os.PathLike, folder: str | os.PathLike) -> Path:
    """The real path of `upload` (a Gradio file reference, or a path) when it lies inside the upload `folder`;
    NotUploaded otherwise. Nothing is opened before the check passes."""
    path = upload.get("path") if isinstance(upload, dict) else upload
    try:
        real = Path(os.path.realpath(os.fspath(path)))
        root = Path(os.path.realpath(folder))
        inside = real != root and real.is_relative_to(root)
    except (TypeError, ValueError):       # not a path at all, or one with a NUL byte
        inside = False
    if not inside:
        log.warning("refused a file reference outside the upload folder: %r", printable(path))
        raise NotUploaded()
    return real
