"""Many photos at once (cnn.batch): per-file errors, zip checks and clean-up, batched forward passes, the CSV."""
from __future__ import annotations

import csv
import stat
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch

from cnn import batch
from cnn.batch import BatchError, Row, Upload, classify_uploads
from cnn.inference import Classifier
from imagegen import SHAPES, io_bytes, shape_image

HTML_NAME = "<img src=x onerror=alert(1)>.jpg"


@pytest.fixture(scope="module")
def clf(model_dir) -> Classifier:
    return Classifier.from_pretrained(model_dir)


@pytest.fixture
def scratch(tmp_path, monkeypatch) -> Path:
    """Where tempfile puts the batch's extraction folders, so that the tests can see them go."""
    folder = tmp_path / "scratch"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def photo(folder: Path, name: str, kind: str = "circle", seed: int = 0) -> Upload:
    path = folder / f"upload{len(list(folder.iterdir()))}{Path(name).suffix}"  # stored name ≠ shown name
    shape_image(kind, 64, seed).save(path)
    return Upload(name, path)


def make_zip(path: Path, entries: dict[str, bytes], links: dict[str, str] = {}) -> Upload:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
        for name, target in links.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            z.writestr(info, target)
    return Upload(path.name, path)


def png(kind: str = "square", seed: int = 0) -> bytes:
    return io_bytes(shape_image(kind, 64, seed), "PNG")


def test_one_row_per_file_in_order_with_unreadable_files_as_rows(clf, tmp_path, scratch):
    uploads = [photo(tmp_path, "a.jpg", "circle"), photo(tmp_path, HTML_NAME, "triangle")]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo at all")
    uploads.insert(1, Upload("broken.jpg", broken))
    uploads.append(make_zip(tmp_path / "trip.zip", {"holiday/x.png": png(), "holiday/y.jpg": b"\xff\xd8 truncated",
                                                    "notes.txt": b"skipped", "__MACOSX/._x.png": b"junk"}))
    rows = classify_uploads(clf, uploads)
    assert [r.file for r in rows] == ["a.jpg", "broken.jpg", HTML_NAME, "trip.zip/holiday/x.png", "trip.zip/holiday/y.jpg"]
    assert [bool(r.error) for r in rows] == [False, True, False, False, True]
    assert rows[1] == Row("broken.jpg", error=batch.UNREADABLE)   # no server path in the reason
    for row, upload in ((rows[0], uploads[0]), (rows[2], uploads[2])):
        probs = clf.probabilities(upload.path)
        assert row.label == clf.labels[int(probs.argmax())] and row.probability == pytest.approx(float(probs.max()), abs=1e-4)
    assert rows[3].label in SHAPES and 0 < rows[3].probability <= 1
    assert list(scratch.iterdir()) == []                           # the extraction folder is gone


def test_photos_go_through_the_model_in_batches(clf, tmp_path, monkeypatch):
    sizes = []
    real = clf.probabilities_batch

    def counted(images):
        sizes.append(len(images))
        return real(images)

    monkeypatch.setattr(clf, "probabilities_batch", counted)
    uploads = [photo(tmp_path, f"{i}.png", SHAPES[i % 3], i) for i in range(batch.BATCH_SIZE * 2 + 6)]
    seen = []
    rows = classify_uploads(clf, uploads, progress=lambda done, total: seen.append((done, total)))
    assert sizes == [batch.BATCH_SIZE, batch.BATCH_SIZE, 6]
    assert seen == [(32, 70), (64, 70), (70, 70)]
    assert [r.file for r in rows] == [u.name for u in uploads]
    # batching changes nothing: each photo gets what it gets alone
    alone = clf.probabilities(uploads[40].path)
    assert rows[40].probability == pytest.approx(float(alone.max()), abs=1e-4)


def test_flags_follow_the_models_thresholds(clf, tmp_path, monkeypatch):
    uploads = [photo(tmp_path, "a.png")]
    top = float(clf.probabilities(uploads[0].path).max())
    monkeypatch.setattr(clf, "unsure_below", top + 0.01)
    assert classify_uploads(clf, uploads)[0].flag == batch.NOT_SURE
    monkeypatch.setattr(clf, "unknown_below", top + 0.005)
    assert classify_uploads(clf, uploads)[0].flag == f"none of the {len(clf.labels)}"
    monkeypatch.setattr(clf, "unsure_below", top - 0.01)
    monkeypatch.setattr(clf, "unknown_below", top - 0.02)
    assert classify_uploads(clf, uploads)[0].flag == ""


@pytest.mark.parametrize("entries, links, reason", [
    ({"../evil.png": png()}, {}, "has an entry that points outside its folder (../evil.png)"),
    ({"ok/../../evil.png": png()}, {}, "points outside its folder"),
    ({"/etc/evil.png": png()}, {}, "points outside its folder"),
    ({"C:/evil.png": png()}, {}, "points outside its folder"),
    ({"a.png": png()}, {"link.png": "/etc/passwd"}, "has a link (link.png)"),
])
def test_unsafe_zips_are_refused_before_anything_is_extracted(clf, tmp_path, scratch, entries, links, reason):
    uploads = [photo(tmp_path, "first.png"), make_zip(tmp_path / "bad.zip", entries, links)]
    rows = classify_uploads(clf, uploads)
    assert rows[0].label in SHAPES                                 # the rest of the batch is answered
    assert rows[1].file == "bad.zip" and rows[1].label is None
    assert rows[1].error.startswith("zip refused: it ") and reason in rows[1].error
    assert not list(tmp_path.rglob("evil.png")) and list(scratch.iterdir()) == []


def test_zips_over_the_limits_are_refused(clf, tmp_path, monkeypatch):
    bomb = make_zip(tmp_path / "bomb.zip", {"zeros.bmp": b"\0" * (2 * 2**20)})   # 2 MB that deflate to 2 KB
    assert bomb.path.stat().st_size < 10_000
    monkeypatch.setattr(batch, "MAX_UNZIPPED_MB", 1)
    assert "unpacks to 2 MB; a zip may unpack to at most 1 MB" in classify_uploads(clf, [bomb])[0].error
    many = make_zip(tmp_path / "many.zip", {f"{i}.txt": b"" for i in range(6)})
    monkeypatch.setattr(batch, "MAX_ZIP_ENTRIES", 5)
    assert "holds 6 files; a zip may hold at most 5" in classify_uploads(clf, [many])[0].error


def test_a_password_protected_or_damaged_zip_is_a_row(clf, tmp_path):
    locked = tmp_path / "locked.zip"
    make_zip(locked, {"a.png": png()})
    data = bytearray(locked.read_bytes())
    for header in (b"PK\x03\x04", b"PK\x01\x02"):                   # set the "encrypted" bit everywhere
        at = data.find(header)
        flags_at = at + (6 if header == b"PK\x03\x04" else 8)
        data[flags_at] |= 0x1
    locked.write_bytes(bytes(data))
    not_zip = tmp_path / "fake.zip"
    not_zip.write_bytes(b"just text")
    rows = classify_uploads(clf, [Upload("locked.zip", locked), Upload("fake.zip", not_zip)])
    assert rows[0].error == "zip refused: it is password-protected"
    assert rows[1].error == "zip refused: it is not a zip file that can be read (BadZipFile)"


def test_too_many_photos_refuse_the_batch_and_leave_nothing_behind(clf, tmp_path, scratch, monkeypatch):
    monkeypatch.setattr(batch, "MAX_PHOTOS", 3)
    uploads = [photo(tmp_path, "a.png"), make_zip(tmp_path / "z.zip", {"1.png": png(), "2.png": png("circle")}),
               photo(tmp_path, "b.png")]
    with pytest.raises(BatchError, match="more than 3 photos"):
        classify_uploads(clf, uploads)
    assert list(scratch.iterdir()) == []
    assert len(classify_uploads(clf, uploads[:2])) == 3
    with pytest.raises(BatchError):
        classify_uploads(clf, [photo(tmp_path, f"{i}.png") for i in range(4)])
    # one zip over the limit is refused from its directory, and its row says so
    big_zip = make_zip(tmp_path / "big.zip", {f"{i}.png": png() for i in range(4)})
    assert "holds 4 photos; a batch takes at most 3" in classify_uploads(clf, [big_zip])[0].error


def test_the_extraction_folder_goes_even_when_classifying_fails(clf, tmp_path, scratch, monkeypatch):
    def broken(images):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(clf, "probabilities_batch", broken)
    with pytest.raises(RuntimeError):
        classify_uploads(clf, [make_zip(tmp_path / "z.zip", {"1.png": png()})])
    assert list(scratch.iterdir()) == []


def test_csv_holds_names_as_plain_text_and_never_a_formula(tmp_path):
    rows = [Row(HTML_NAME, "cat", 0.9312, "", ""),
            Row('a, "quoted"\nname.jpg', "dog", 0.41, batch.NOT_SURE, ""),
            Row("=HYPERLINK(\"http://x\").jpg", None, None, "", batch.UNREADABLE),
            Row("+1.jpg", "cow", 0.2, "none of the 10", ""), Row("-x.png", "cow", 0.9), Row("@x.png", "cow", 0.9)]
    path = batch.write_csv(rows, tmp_path / "out.csv")
    with open(path, newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    assert table[0] == batch.HEADERS == ["file", "top label", "probability", "flag", "error"]
    assert table[1] == [HTML_NAME, "cat", "0.9312", "", ""]
    assert table[2] == ['a, "quoted"\nname.jpg', "dog", "0.41", "not sure", ""]
    assert table[3] == ["'=HYPERLINK(\"http://x\").jpg", "", "", "", batch.UNREADABLE]
    assert [r[0] for r in table[4:]] == ["'+1.jpg", "'-x.png", "'@x.png"]
    assert len(batch.HEADERS) == len(rows[0].cells())


def test_summary_counts_labels_flags_and_unreadable():
    rows = [Row("a", "cat", 0.9), Row("b", "cat", 0.3, batch.NOT_SURE), Row("c", "dog", 0.1, "none of the 10"),
            Row("d", error=batch.UNREADABLE)]
    assert batch.summary(rows) == {"cat": 2, "dog": 1, "not sure": 1, "none of the 10": 1, "unreadable": 1}


def test_probabilities_batch_is_one_forward_pass(clf, tmp_path, monkeypatch):
    """The premise of the batching: n photos cost one (or, with flip TTA, two) model calls, not n."""
    calls = []
    real = clf.model.forward
    monkeypatch.setattr(clf.model, "forward", lambda x: calls.append(len(x)) or real(x))
    images = [shape_image(SHAPES[i % 3], 64, i) for i in range(5)]
    probs = clf.probabilities_batch(images)
    assert probs.shape == (5, len(clf.labels)) and torch.allclose(probs.sum(1), torch.ones(5), atol=1e-5)
    assert calls == [5] * (2 if clf.tta_flip else 1)


def test_the_table_shows_probabilities_as_the_page_does_and_keeps_the_numbers():
    """Issue 14 item 15: 0.5345 is shown as 53% (as the One photo tab's Label shows it), sorted and exported as
    the number."""
    rows = [Row("a.jpg", "cat", 0.5345, batch.NOT_SURE), Row("b.jpg", "dog", 0.995), Row("c.jpg", error="broken")]
    value = batch.table(rows)
    assert value["headers"] == batch.HEADERS and value["data"] == [r.cells() for r in rows]
    assert value["metadata"]["display_value"] == [["a.jpg", "cat", "53%", "not sure", ""],
                                                  ["b.jpg", "dog", "100%", "", ""],
                                                  ["c.jpg", "", "", "", "broken"]]
