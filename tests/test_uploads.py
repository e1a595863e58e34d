"""Only files inside the upload folder are accepted, whatever the reference looks like; visitors' text is quoted safely."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from page.uploads import SHOWN_CHARS, NotUploaded, printable, uploaded_path
from imagegen import shape_image


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    """An upload folder holding one photo, and a photo on the same server outside it."""
    uploads, elsewhere = tmp_path / "gradio", tmp_path / "server"
    (uploads / "abc123").mkdir(parents=True)
    elsewhere.mkdir()
    shape_image("circle", 32, 1).save(uploads / "abc123" / "cat.png")
    shape_image("circle", 32, 1).save(elsewhere / "secret.png")
    return uploads, elsewhere


def test_an_uploaded_file_is_accepted_as_a_reference_or_a_path(folders):
    uploads, _ = folders
    photo = uploads / "abc123" / "cat.png"
    assert uploaded_path({"path": str(photo), "meta": {"_type": "gradio.FileData"}}, uploads) == photo
    assert uploaded_path({"path": str(photo)}, uploads) == photo
    assert uploaded_path(str(photo), uploads) == photo
    inner_link = uploads / "abc123" / "link.png"
    inner_link.symlink_to(photo)
    assert uploaded_path(str(inner_link), uploads) == photo           # the real path is what is opened


def test_the_upload_folder_may_itself_be_reached_through_a_link(folders, tmp_path):
    uploads, _ = folders
    linked = tmp_path / "linked-gradio"
    linked.symlink_to(uploads)
    assert uploaded_path(str(linked / "abc123" / "cat.png"), linked) == uploads / "abc123" / "cat.png"
    assert uploaded_path(str(uploads / "abc123" / "cat.png"), linked) == uploads / "abc123" / "cat.png"


def test_every_other_reference_gets_the_same_refusal(folders):
    uploads, elsewhere = folders
    link_out = uploads / "abc123" / "out.png"
    link_out.symlink_to(elsewhere / "secret.png")
    (elsewhere / "notes.txt").write_text("not an image")
    refused = [
        {"path": str(elsewhere / "secret.png")},                       # an image elsewhere on the server
        {"path": str(elsewhere / "notes.txt")},                        # a file that is not an image
        {"path": str(elsewhere / "missing.png")},                      # nothing there at all
        {"path": str(elsewhere)},                                      # a folder
        {"path": str(uploads)},                                        # the upload folder itself
        {"path": str(uploads / "abc123" / ".." / ".." / "server" / "secret.png")},
        {"path": str(link_out)},                                       # a link out of the folder
        {"path": f"{uploads}-evil/abc123/cat.png"},                    # a sibling that shares the prefix
        {"path": "abc123/cat.png"},                                    # relative: to the server's cwd
        {"path": str(uploads / "abc123" / "cat.png\0")},
        {"url": "https://example.com/cat.png"}, {"path": None}, {"path": 7}, {}, None,
    ]
    messages = set()
    for reference in refused:
        with pytest.raises(NotUploaded) as e:
            uploaded_path(reference, uploads)
        messages.add(str(e.value))
    assert messages == {"That file was not uploaded here. Please upload the photo itself."}


def test_a_refused_path_is_logged_short_and_on_one_line(folders, caplog):
    uploads, _ = folders
    forged = "/etc/passwd\n2026-01-01 00:00:00 INFO app: all is well" + "x" * 10_000
    with caplog.at_level(logging.WARNING, logger="page.uploads"), pytest.raises(NotUploaded):
        uploaded_path({"path": forged}, uploads)
    (record,) = caplog.records
    message = record.getMessage()
    assert "\n" not in message and len(message) < 200 and "/etc/passwd?2026" in message


def test_printable_cuts_and_replaces_what_could_forge_or_flood():
    assert printable("zebra") == "zebra"
    assert printable("a\nb\rc\u200bd\u202ee\x00f") == "a?b?c?d?e?f"
    long = printable("z" * 100_000)
    assert len(long) == SHOWN_CHARS and long.endswith("…")
    assert printable("z" * SHOWN_CHARS) == "z" * SHOWN_CHARS
    assert printable(None) == "None" and printable("caf\u00e9 \U0001f431", 10) == "caf\u00e9 \U0001f431"
    assert os.linesep not in printable("x" + os.linesep * 5)
