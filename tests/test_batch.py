"""Many photos at once (page.batch): per-file errors, zip checks and clean-up, batched forward passes, the CSV."""
from __future__ import annotations

import csv
import stat
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch

from page import batch
from page.batch import BatchError, Row, Upload, classify_uploads
from cnn.inference import Classifier
from imagegen import SHAPES, dds_of_unknown_format, io_bytes, shape_image

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
    real = clf.analyse_batch

    def counted(images):
        sizes.append(len(images))
        return real(images)

    monkeypatch.setattr(clf, "analyse_batch", counted)
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
    monkeypatch.setattr(clf, "unknown_thresholds", {})              # the top-probability rule alone
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
    assert rows[1].error == "zip refused: it is not a zip file that can be read (no end record)"


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

    monkeypatch.setattr(clf, "analyse_batch", broken)
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


@pytest.mark.parametrize("name", [" =1+1.jpg", "\n=1+1.jpg", "\r\n\t @x.jpg", "\uff1d1+1.jpg", "\ufe661+1.jpg",
                                  "\u200b=1+1.jpg", "\ufeff=1.jpg", "\u200e\u2060+1.jpg", "\u00a0-1.jpg",
                                  "\uff0b1.jpg", "\uff201.jpg", "\u3000\ufe63x.jpg"])
def test_csv_neutralises_formulas_behind_whitespace_invisible_and_wide_characters(tmp_path, name):
    path = batch.write_csv([Row(name, "cat", 0.9)], tmp_path / "out.csv")
    with open(path, newline="", encoding="utf-8") as f:
        assert list(csv.reader(f))[1][0] == "'" + name


@pytest.mark.parametrize("name", ["cat.jpg", " cat.jpg", "\u200bcat.jpg", "\uff43at.jpg", "1=1.jpg", ""])
def test_csv_leaves_other_names_as_they_are(name):
    assert batch.safe_cell(name) == name and not batch.looks_like_formula(name)


def test_summary_counts_each_photo_once():
    """A photo of none of the labels counts as that, not also as its top label; a "not sure" photo counts under
    its label (issue 35 item 6: "not sure" is no label); a file that could not be read is no photo."""
    rows = [Row("a", "cat", 0.9), Row("b", "cat", 0.3, batch.NOT_SURE), Row("c", "dog", 0.1, "none of the 10"),
            Row("d", error=batch.UNREADABLE), Row("e", "cat", 0.8)]
    counts = batch.summary(rows)
    assert counts == {"cat": 3, "none of the 10": 1}
    assert sum(counts.values()) == len(rows) - 1


def test_the_counts_line_counts_photos_and_says_apart_what_is_not_sure_and_what_could_not_be_read():
    """Issue 35 item 6: "5 photos: ... not sure 1 · unreadable 1" counted a broken file as a photo and listed
    "not sure" as if it were a label."""
    rows = [Row("a", "cat", 0.9), Row("b", "cat", 0.3, batch.NOT_SURE), Row("c", "dog", 0.1, "none of the 10"),
            Row("d", error=batch.UNREADABLE), Row("e", "cat", 0.8), Row("f.zip", error="zip refused: it is odd")]
    assert batch.counts_text(rows) == ("**4 photos:** cat ×3 · none of the 10 ×1. 1 of these is marked not sure. "
                                       "2 more files could not be classified.")
    assert batch.counts_text(rows[:1]) == "**1 photo:** cat ×1."
    assert batch.counts_text(rows[3:4]) == "1 file could not be classified."


def test_rows_carry_thumbnails_for_the_page_but_not_in_the_table(clf, tmp_path):
    import base64
    import io

    from PIL import Image

    shape_image("circle", 200, 1).save(tmp_path / "big.png")
    (tmp_path / "broken.jpg").write_bytes(b"not a photo")
    uploads = [Upload("big.png", tmp_path / "big.png"), Upload("broken.jpg", tmp_path / "broken.jpg")]
    photo, broken = batch.classify_uploads(clf, uploads, thumbnails=True)
    assert photo.thumbnail.startswith("data:image/jpeg;base64,") and broken.thumbnail == ""
    small = Image.open(io.BytesIO(base64.b64decode(photo.thumbnail.split(",", 1)[1])))
    # made from what the batch keeps of a photo (the model's input, never the decoded photo): at most its side
    assert max(small.size) == min(batch.THUMB_SIDE, clf.resize_side) and len(photo.thumbnail) < 8000
    assert photo.cells() == ["big.png", photo.label, photo.probability, photo.flag, ""]   # HEADERS only
    assert batch.classify_uploads(clf, uploads)[0].thumbnail == ""                       # only when asked


def test_page_cells_put_the_flag_before_the_file_name_and_the_probability_in_a_column_of_its_own():
    """Issue 35 item 6: "cat 43%" in one text column sorted by label only; the probability is a number column
    of its own, so the table sorts by confidence."""
    row = Row("a-long-name.jpg", "cat", 0.4312, batch.NOT_SURE, thumbnail="data:image/jpeg;base64,AAAA")
    assert batch.PAGE_HEADERS.index("flag") < batch.PAGE_HEADERS.index("file")
    assert batch.page_cells(row) == ["![](data:image/jpeg;base64,AAAA)", "cat", 43, "not sure", "a-long-name.jpg"]
    assert batch.page_cells(Row("x.jpg", error=batch.UNREADABLE)) == ["", "", None, batch.UNREADABLE, "x.jpg"]
    assert len(batch.PAGE_TYPES) == len(batch.PAGE_HEADERS)
    assert batch.PAGE_TYPES[batch.PAGE_HEADERS.index("label") + 1] == "number"


def test_probabilities_batch_is_one_forward_pass(clf, tmp_path, monkeypatch):
    """The premise of the batching: n photos cost one (or, with flip TTA, two) model calls, not n."""
    calls = []
    real = clf.model.forward
    monkeypatch.setattr(clf.model, "forward", lambda x: calls.append(len(x)) or real(x))
    images = [shape_image(SHAPES[i % 3], 64, i) for i in range(5)]
    probs = clf.probabilities_batch(images)
    assert probs.shape == (5, len(clf.labels)) and torch.allclose(probs.sum(1), torch.ones(5), atol=1e-5)
    assert calls == [5] * (2 if clf.tta_flip else 1)


# --- issue 13: memory and work that do not depend on what the photos claim ---------------------------------

def test_photos_are_decoded_one_at_a_time_into_model_sized_tensors(clf, tmp_path, monkeypatch):
    """The forward pass gets small uint8 tensors, never decoded photos: a batch's peak memory does not grow
    with the photos' sizes."""
    seen = []
    real = clf.analyse_batch

    def checked(images):
        seen.extend((type(x), x.dtype, tuple(x.shape)) for x in images)
        return real(images)

    monkeypatch.setattr(clf, "analyse_batch", checked)
    big = tmp_path / "big.png"
    shape_image("circle", 64, 0).resize((900, 700)).save(big)
    classify_uploads(clf, [Upload("big.png", big), photo(tmp_path, "small.png")])
    side = clf.resize_side
    assert seen == [(torch.Tensor, torch.uint8, (3, side, side))] * 2


def negative_offset_zip(path: Path) -> Upload:
    """A zip whose end record puts its directory 100 bytes further than it is: every entry's header offset
    comes out negative."""
    make_zip(path, {"a.png": png()})
    data = bytearray(path.read_bytes())
    at = data.rfind(b"PK\x05\x06")
    data[at + 16:at + 20] = (int.from_bytes(data[at + 16:at + 20], "little") + 100).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return Upload(path.name, path)


def test_any_decoder_or_zip_exception_is_that_files_row(clf, tmp_path):
    nameless = tmp_path / "nameless.zip"
    make_zip(nameless, {"x.png": png(), "b.png": png("circle")})
    nameless.write_bytes(nameless.read_bytes().replace(b"x.png", b"\0.png"))     # an entry named ""
    uploads = [photo(tmp_path, "first.png"), Upload("odd.dds", dds_of_unknown_format(tmp_path / "odd.dds")),
               Upload("nameless.zip", nameless), negative_offset_zip(tmp_path / "negative.zip")]
    rows = classify_uploads(clf, uploads)
    assert [r.file for r in rows] == ["first.png", "odd.dds", "nameless.zip/b.png", "negative.zip/a.png"]
    assert rows[0].label in SHAPES and rows[2].label in SHAPES
    assert rows[1].error == batch.UNREADABLE
    assert rows[3].error.startswith("could not be read from the zip (")   # a negative seek


def test_a_zip_that_yields_no_photo_gets_a_row_saying_why(clf, tmp_path):
    inner = make_zip(tmp_path / "inner.zip", {"a.png": png()})
    zips = [make_zip(tmp_path / "text.zip", {"notes.txt": b"hello"}),
            make_zip(tmp_path / "nested.zip", {"inner.zip": inner.path.read_bytes()}),
            make_zip(tmp_path / "nul.zip", {"photo.txt\0.png": png()})]          # zipfile cuts the name at NUL
    rows = classify_uploads(clf, zips)
    assert rows == [Row(z.name, error=batch.NO_PHOTO) for z in zips]


def test_the_cap_counts_files_read_not_rows(clf, tmp_path, monkeypatch):
    """Each upload and each zip entry counts, photo or not, and the same upload sent again counts again."""
    monkeypatch.setattr(batch, "MAX_FILES_READ", 20)
    same = photo(tmp_path, "same.png")
    assert len(classify_uploads(clf, [same] * 20)) == 20
    with pytest.raises(BatchError, match="more than 20 files"):
        classify_uploads(clf, [same] * 21)
    texts = make_zip(tmp_path / "texts.zip", {f"{i}.txt": b"" for i in range(9)})   # 1 + 9 files read, no photo
    assert classify_uploads(clf, [texts, texts])[0].error == batch.NO_PHOTO
    with pytest.raises(BatchError, match="more than 20 files"):
        classify_uploads(clf, [texts, texts, texts])


def test_a_zip_with_too_many_entries_is_refused_by_its_end_record_before_its_directory_is_parsed(
        clf, tmp_path, monkeypatch):
    many = make_zip(tmp_path / "many.zip", {f"{i}": b"" for i in range(60)})
    monkeypatch.setattr(batch.zipfile, "ZipFile", lambda *a, **k: pytest.fail("parsed the directory"))
    monkeypatch.setattr(batch, "MAX_ZIP_ENTRIES", 50)
    assert classify_uploads(clf, [many])[0].error == "zip refused: it holds 60 files; a zip may hold at most 50"
    monkeypatch.setattr(batch, "MAX_ZIP_ENTRIES", 100)
    monkeypatch.setattr(batch, "MAX_ZIP_DIRECTORY_MB", 0.001)          # a directory that says fewer entries
    assert "has a directory of 0.0 MB; a zip's may be at most" in classify_uploads(clf, [many])[0].error


def test_the_unzipped_size_is_capped_for_the_whole_batch(clf, tmp_path, monkeypatch):
    """A zip that unpacks big, sent many times, does not fill the disk: the cap is on all its copies."""
    zeros = make_zip(tmp_path / "zeros.zip", {"zeros.bmp": b"\0" * (600 * 1024)})
    monkeypatch.setattr(batch, "MAX_UNZIPPED_MB", 1)
    rows = classify_uploads(clf, [zeros, zeros])
    assert rows[0].error == batch.UNREADABLE                           # unpacked: it is just not a BMP
    assert rows[1].error.startswith("zip refused: it unpacks to 1 MB; the batch's zips may unpack to at most 1 MB")


def test_the_end_record_is_read_in_zip64_too(tmp_path):
    """Past 65,535 entries the count lives in the zip64 end record (the issue's 118,000-entry zip has one)."""
    path = tmp_path / "zip64.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for i in range(65_536):
            z.writestr(f"{i:x}", b"")
    entries, directory = batch.declared_directory(path)
    assert entries == 65_536
    assert 65_536 * 46 < directory < path.stat().st_size              # 46 bytes at least per directory entry


def test_the_page_shows_probabilities_as_the_one_photo_tab_does():
    """Issue 14 item 15: 0.825 reads 83% in the table, as Gradio's Label rounds it (Python's format gives 82%)."""
    assert batch.page_cells(Row("a.jpg", "cat", 0.825, batch.NOT_SURE))[1:4] == ["cat", 83, batch.NOT_SURE]
