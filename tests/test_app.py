"""The Gradio app: its helpers in-process, then one real `python app.py` server driven by gradio_client."""
from __future__ import annotations

import contextlib
import csv
import logging
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from functools import partial
from pathlib import Path
from typing import Iterator

import pytest
import torch

gr = pytest.importorskip("gradio")

import app  # noqa: E402
from appserver import app_env, free_port, stop  # noqa: E402
from page import about, batch  # noqa: E402
from cnn.wording import percent  # noqa: E402
from imagegen import SHAPES, io_bytes, make_upload_matrix, shape_image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# --- a real server, shared with test_browser.py ------------------------------------------------

@contextlib.contextmanager
def serve_app(model: str | Path, log_file: Path, *args: str, timeout: float = 120, **env: str) -> Iterator[str]:
    """Run `python app.py` on a free localhost port (offline, no analytics, uploads in a folder of its own beside
    `log_file`, plus `env`); yield its URL once it answers."""
    with running_app(model, log_file, *args, timeout=timeout, **env) as (_, url):
        yield url


@contextlib.contextmanager
def running_app(model: str | Path, log_file: Path, *args: str, timeout: float = 120,
                **env: str) -> Iterator[tuple[subprocess.Popen, str]]:
    """serve_app's server, with its process too (for a test that stops it itself)."""
    port = free_port()
    env = app_env(port, MODEL_ID=str(model), OMP_NUM_THREADS="1",
                  **{"GRADIO_TEMP_DIR": str(log_file.parent / "uploads"), **env})
    url = f"http://127.0.0.1:{port}/"
    with open(log_file, "wb") as log:
        proc = subprocess.Popen([sys.executable, str(REPO / "app.py"), *args], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                pytest.fail(f"app.py exited with {proc.returncode}:\n{log_file.read_text()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"app.py did not answer within {timeout:.0f} s:\n{log_file.read_text()}")
            time.sleep(0.2)
        yield proc, url
    finally:
        stop(proc)


@pytest.fixture(autouse=True)
def _tests_files_count_as_uploads(tmp_path_factory, monkeypatch):
    """In-process, the handlers take the tests' own files as uploads: Gradio's upload folder is pytest's temporary
    folder (a server from serve_app has an upload folder of its own, so there they do not count)."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    log_file = tmp_path_factory.mktemp("app") / "app.log"
    with serve_app(model_dir, log_file) as url:
        yield url, log_file


@pytest.fixture(scope="module")
def client(server):
    from gradio_client import Client

    return Client(server[0], verbose=False)


@pytest.fixture(scope="module")
def clf(model_dir):
    return app.Classifier.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A good PNG and JPEG, and uploads that are not images at all."""
    d = tmp_path_factory.mktemp("uploads")
    shape_image("circle", 96, 7).save(d / "circle.png")
    shape_image("triangle", 80, 3).save(d / "triangle.jpg", quality=90)
    (d / "notes.png").write_text("this is a text file with an image's name")
    (d / "empty.png").write_bytes(b"")
    png = (d / "circle.png").read_bytes()
    (d / "truncated.png").write_bytes(png[: len(png) // 3])
    return {p.name: p for p in d.iterdir()}


# --- through the API of a running server --------------------------------------------------------

def test_predict_endpoint_returns_every_label(client, clf, files):
    for name in ("circle.png", "triangle.jpg"):
        from gradio_client import handle_file

        result = client.predict(handle_file(str(files[name])), api_name="/predict")
        confidences = {c["label"]: c["confidence"] for c in result["confidences"]}
        assert set(confidences) == set(SHAPES)
        assert sum(confidences.values()) == pytest.approx(1, abs=1e-4)
        assert result["label"] == max(confidences, key=confidences.get)
        # the app answers exactly what the library answers for the same file
        assert confidences == pytest.approx(dict(clf.predict(files[name], k=len(SHAPES))), abs=1e-5)


def test_only_predict_and_predict_batch_are_public(client):
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {
        "/predict", "/predict_batch"}


HTML_NAME = "<img src=x onerror=alert(1)>.jpg"


def zip_of(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def test_predict_batch_endpoint_answers_every_file_in_order(client, clf, files, tmp_path):
    """Photos, a broken one, one whose name is HTML, a zip with a path-traversal entry and a zip that
    unpacks too large: one row each (a good zip's photos in its place), and the batch never fails."""
    from gradio_client import handle_file
    from gradio_client.utils import strip_invalid_filename_characters

    html_named = tmp_path / HTML_NAME
    sent_name = strip_invalid_filename_characters(HTML_NAME)   # gradio_client drops <>; a browser sends them
    shape_image("square", 72, 2).save(html_named, format="JPEG")
    good_zip = zip_of(tmp_path / "trip.zip", {"day1/circle.png": io_bytes(shape_image("circle", 64, 4), "PNG")})
    evil_zip = zip_of(tmp_path / "evil.zip", {"../../escaped.png": io_bytes(shape_image("circle", 64, 4), "PNG")})
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z, z.open("zeros.bmp", "w", force_zip64=True) as f:
        for _ in range(batch.MAX_UNZIPPED_MB + 1):
            f.write(bytes(2**20))
    sent = [files["circle.png"], files["notes.png"], html_named, good_zip, evil_zip, bomb, files["triangle.jpg"]]
    result = client.predict([handle_file(str(p)) for p in sent], api_name="/predict_batch")
    assert result["headers"] == batch.HEADERS
    rows = {row[0]: row for row in result["data"]}
    assert [row[0] for row in result["data"]] == ["circle.png", "notes.png", sent_name, "trip.zip/day1/circle.png",
                                                  "evil.zip", "bomb.zip", "triangle.jpg"]
    for name in ("circle.png", "triangle.jpg"):
        probs = clf.probabilities(files[name])
        assert rows[name][1] == clf.labels[int(probs.argmax())]
        assert rows[name][2] == pytest.approx(float(probs.max()), abs=1e-4)
    assert rows[sent_name][1] in SHAPES and rows["trip.zip/day1/circle.png"][1] in SHAPES
    assert rows["notes.png"][1:] == [None, None, "", batch.UNREADABLE]
    assert "points outside its folder" in rows["evil.zip"][4] and rows["evil.zip"][1] is None
    assert f"at most {batch.MAX_UNZIPPED_MB} MB" in rows["bomb.zip"][4]


def test_predict_batch_refuses_an_upload_over_the_limit_and_no_files(client, tmp_path):
    from gradio_client import handle_file

    big = tmp_path / "big.zip"
    big.write_bytes(b"\0" * (batch.MAX_UPLOAD_MB * 2**20 + 1))
    with pytest.raises(Exception, match="exceeds the maximum file size"):
        client.predict([handle_file(str(big))], api_name="/predict_batch")
    with pytest.raises(Exception, match="Please add some photos"):
        client.predict([], api_name="/predict_batch")


def test_bad_uploads_get_a_readable_error_and_the_server_keeps_serving(client, files):
    from gradio_client import handle_file

    for name in ("notes.png", "empty.png", "truncated.png"):
        with pytest.raises(Exception, match=rf"{name} is not an image that can be read"):
            client.predict(handle_file(str(files[name])), api_name="/predict")
    with pytest.raises(Exception, match="Please add a photo"):
        client.predict(None, api_name="/predict")
    result = client.predict(handle_file(str(files["circle.png"])), api_name="/predict")
    assert result["label"] in SHAPES


def test_a_visitors_mistake_is_told_gently_and_goes_away():
    """Issue 35 item 7: refusals piled up under a harsh "Error" title; now they have a gentle one, stay a while,
    and each new photo or batch dismisses the earlier ones (the page's DISMISS_MESSAGES; the browser test)."""
    error = app.refuse("Please add a photo first.")
    assert 0 < error.duration <= 10 and not error.print_exception
    assert f'content: "{app.REFUSAL_TITLE}"' in app.CSS and app.REFUSAL_TITLE != "Error"
    assert "toast-close" in app.DISMISS_MESSAGES


def test_visitor_mistakes_log_one_info_line_and_no_traceback(client, server, files):
    """Issue 14 item 12: no photo, an unreadable file, an empty batch: one line each in the server's log, at
    info level (Gradio prints a traceback for a gr.Error unless told not to); tracebacks are for our own bugs."""
    from gradio_client import handle_file

    log_file = server[1]
    before = len(log_file.read_text().splitlines())
    with pytest.raises(Exception, match="Please add a photo"):
        client.predict(None, api_name="/predict")
    with pytest.raises(Exception, match="notes.png is not an image"):
        client.predict(handle_file(str(files["notes.png"])), api_name="/predict")
    with pytest.raises(Exception, match="Please add some photos"):
        client.predict([], api_name="/predict_batch")
    time.sleep(0.5)                          # the server flushes its log line by line
    new = log_file.read_text().splitlines()[before:]
    assert "Traceback" not in "\n".join(new), "\n".join(new)
    refused = [line for line in new if "refused:" in line]
    assert len(refused) == 3 and all(" INFO app: refused: " in line for line in refused), new


UNREADABLE = {"empty.jpg", "text.jpg", "document.jpg", "truncated.jpg"}


def test_every_kind_of_upload_gets_an_answer_or_a_clear_error(client, tmp_path):
    """Issue 4's matrix, through the running server: photos in every mode are answered (the EXIF-rotated
    one exactly like its upright twin), non-photos get a readable error, and the server keeps serving."""
    from gradio_client import handle_file

    uploads = make_upload_matrix(tmp_path)
    answers = {}
    for name, path in sorted(uploads.items()):
        if name in UNREADABLE:
            with pytest.raises(Exception, match=rf"{name} is not an image that can be read"):
                client.predict(handle_file(str(path)), api_name="/predict")
        elif name == "decompression_bomb.png":
            with pytest.raises(Exception, match=rf"{name} has too many pixels to open safely"):
                client.predict(handle_file(str(path)), api_name="/predict")
        else:
            result = client.predict(handle_file(str(path)), api_name="/predict")
            answers[name] = {c["label"]: c["confidence"] for c in result["confidences"]}
            assert result["label"] in SHAPES and sum(answers[name].values()) == pytest.approx(1, abs=1e-4), name
    assert len(answers) == len(uploads) - len(UNREADABLE) - 1
    assert answers["exif_rotated.jpg"] == pytest.approx(answers["rgb.jpg"], abs=0.05)
    assert client.predict(handle_file(str(uploads["rgb.jpg"])), api_name="/predict")["label"] in SHAPES


def test_uploads_over_the_limit_are_refused(client, tmp_path):
    from gradio_client import handle_file

    huge = tmp_path / "huge.png"
    huge.write_bytes(b"\0" * (10 * 1024 * 1024 + 1))
    with pytest.raises(Exception, match="exceeds the maximum file size"):
        client.predict(handle_file(str(huge)), api_name="/predict")


# --- the helpers, in-process ---------------------------------------------------------------------

def test_predict_batch_helper_refuses_too_many_photos_with_a_message(clf, files, monkeypatch):
    monkeypatch.setattr(batch, "MAX_PHOTOS", 1)
    uploads = [{"path": str(files[name]), "orig_name": name} for name in ("circle.png", "triangle.jpg")]
    with pytest.raises(gr.Error, match="more than 1 photos"):
        app.predict_batch(clf, uploads, progress=lambda *a, **k: None)
    with pytest.raises(gr.Error, match="Please add some photos"):
        app.predict_batch(clf, None)


def test_batch_outputs_count_the_labels_and_write_a_safe_csv(clf, files, monkeypatch):
    uploads = [{"path": str(files["circle.png"]), "orig_name": "=cmd|' /C calc'!A0.png"},
               {"path": str(files["notes.png"]), "orig_name": HTML_NAME}]
    table, thumbnails = app.predict_batch(clf, uploads, progress=lambda *a, **k: None)
    assert thumbnails[0].startswith("data:image/jpeg;base64,") and thumbnails[1] == ""
    outputs = app.batch_outputs(table, thumbnails)
    counts, csv_file, shown = next(outputs)
    answer = table[0][3] if table[0][3] and table[0][3] != batch.NOT_SURE else table[0][1]
    assert counts.startswith(f"**1 photo:** {answer} ×1.") and counts.endswith(" 1 more file could not be classified.")
    assert shown[0][0] == f"![]({thumbnails[0]})" and shown[1] == ["", "", None, batch.UNREADABLE, HTML_NAME]
    csv_path = Path(csv_file["value"])
    with open(csv_path, newline="", encoding="utf-8") as f:
        lines = list(csv.reader(f))
    assert lines == [batch.HEADERS, ["'=cmd|' /C calc'!A0.png", table[0][1], str(table[0][2]), table[0][3], ""],
                     [HTML_NAME, "", "", "", batch.UNREADABLE]]
    assert csv_file["visible"] is True
    with pytest.raises(StopIteration):
        next(outputs)                        # Gradio has its copy by now: ours goes
    assert not csv_path.parent.exists()


def test_predict_helper(clf, files):
    probs = app.predict(clf, {"path": str(files["circle.png"]), "orig_name": "circle.png"})
    assert list(probs) == clf.labels and sum(probs.values()) == pytest.approx(1, abs=1e-5)
    assert app.predict(clf, str(files["circle.png"])) == probs


@pytest.mark.parametrize("photo, message", [
    (None, "Please add a photo first"),
    ({}, "Please add a photo first"),
    ("empty.png", "empty.png is not an image"),
    ("notes.png", "notes.png is not an image"),
    (HTML_NAME, "&lt;img src=x onerror=alert\\(1\\)&gt;.jpg is not an image"),  # shown as text, not HTML
])
def test_read_photo_errors_are_readable(files, photo, message):
    if isinstance(photo, str):
        photo = {"path": str(files[photo if photo in files else "notes.png"]), "orig_name": photo}
    with pytest.raises(gr.Error, match=message):
        app.read_photo(photo)


def test_read_photo_says_why_the_pixel_budget_refuses_a_photo(tmp_path):
    from imagegen import gif_claiming_screen, png_claiming_size

    thin = {"path": str(gif_claiming_screen(tmp_path / "a.gif", 1, 65_535)), "orig_name": "screen.gif"}
    with pytest.raises(gr.Error, match=r"screen.gif is too long and thin to classify: 1×65535 pixels"):
        app.read_photo(thin)
    bomb = {"path": str(png_claiming_size(tmp_path / "b.png", 13_300, 13_300, mode="P")), "orig_name": "bomb.png"}
    with pytest.raises(gr.Error, match=r"bomb.png has too many pixels to open safely: 13300×13300 \(177 MP\) as PNG"):
        app.read_photo(bomb)


def test_predict_and_predict_batch_see_the_same_pixels_of_a_jpeg(clf, tmp_path, monkeypatch):
    """Issue 13: the page decoded JPEGs at reduced scale to 512 px, the batch to the model's side, so their
    answers differed slightly; both now take the model's decode rule."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))                     # as if uploaded
    path = tmp_path / "big.jpg"
    shape_image("circle", 96, 4).resize((1200, 900)).save(path, quality=90)
    inputs = []
    hook = clf.model.register_forward_pre_hook(lambda _module, args: inputs.append(args[0].clone()))
    try:
        probs = app.predict(clf, {"path": str(path), "orig_name": "big.jpg"})
        [row], _ = app.predict_batch(clf, [{"path": str(path), "orig_name": "big.jpg"}], progress=lambda *a, **k: None)
    finally:
        hook.remove()
    half = len(inputs) // 2                                  # (two passes each when the model flips for TTA)
    assert len(inputs) in (2, 4) and all(torch.equal(a, b) for a, b in zip(inputs[:half], inputs[half:]))
    assert row[2] == round(max(probs.values()), 4)


def test_every_handler_refuses_a_file_outside_the_upload_folder(clf, files, monkeypatch, tmp_path, caplog):
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(uploads))
    outside = {"path": str(files["circle.png"]), "orig_name": "circle.png"}
    refused = "That file was not uploaded here"
    with caplog.at_level(logging.INFO):
        for handler in (app.read_photo, partial(app.predict, clf), partial(app.where_it_looked, clf, show=True),
                        lambda photo: app.predict_batch(clf, [photo], progress=lambda *a, **k: None)):
            with pytest.raises(gr.Error, match=refused):
                handler(outside)
    assert caplog.text.count("refused a file reference outside the upload folder") == 4
    (uploads / "circle.png").write_bytes(files["circle.png"].read_bytes())
    assert app.predict(clf, {"path": str(uploads / "circle.png")}) == app.predict(clf, str(uploads / "circle.png"))


def test_read_photo_normalises_exif_and_modes(tmp_path):
    rgba = shape_image("square", 40, 1).convert("RGBA")
    exif = rgba.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to view
    rgba.crop((0, 0, 40, 20)).save(tmp_path / "rotated.png", exif=exif)
    img = app.read_photo({"path": str(tmp_path / "rotated.png"), "orig_name": "rotated.png"})
    assert img.mode == "RGB" and img.size == (20, 40)


def test_answer_notice_says_not_sure_and_none_of_the_ten(clf, monkeypatch):
    monkeypatch.setattr(clf, "unsure_below", 0.5)
    monkeypatch.setattr(clf, "unknown_below", 0.3)
    notice = app.answer_notice({"cat": 0.4, "dog": 0.35, "cow": 0.25}, clf)
    assert notice.startswith("⚠️ **Not sure:**") and "*cat* at only 40%" in notice and "none of the 3 labels" in notice
    notice = app.answer_notice({"cat": 0.25, "dog": 0.25, "cow": 0.2, "x": 0.3 - 1e-9}, clf)
    assert "None of the 4 I know" in notice and "faded" in notice
    assert app.answer_notice({"cat": 0.9, "dog": 0.1}, clf) == ""


def test_show_answer_keeps_the_top_k_warns_and_fades(clf, monkeypatch):
    monkeypatch.setattr(clf, "unsure_below", 0.5)
    monkeypatch.setattr(clf, "unknown_below", 0.3)
    probs = {"cat": 0.4, "dog": 0.35, "cow": 0.25}
    label, notice = app.show_answer(probs, 2.0, clf)
    assert label.num_top_classes == 2 and "Not sure" in notice and "faded" not in label.elem_classes
    assert label.show_heading                                  # a weak answer is still an answer: its headline shows
    assert label.postprocess(probs).model_dump()["confidences"] == [{"label": "cat", "confidence": 0.4},
                                                                   {"label": "dog", "confidence": 0.35}]
    monkeypatch.setattr(clf, "unsure_below", 0.3)
    assert app.show_answer(probs, 3, clf)[1] == ""
    monkeypatch.setattr(clf, "unknown_below", 0.45)
    label, notice = app.show_answer(probs, 3, clf)
    assert "faded" in label.elem_classes and "None of the 3 I know" in notice
    assert not label.show_heading           # issue 35 item 7: no big faded "cat" over "none of the 3"
    empty, notice = app.show_answer(None, 3, clf)
    assert not empty.value and notice == ""


def test_a_photo_far_from_every_training_photo_gets_the_none_of_the_ten_notice(clf, monkeypatch, tmp_path):
    """Issue 16: the notice and the fading follow the model's whole rule, so a photo its feature distance flags
    is 'none of the ten' even when its top probability alone would pass."""
    import torch

    from cnn import ood
    from imagegen import outlier_image

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path))                     # as if uploaded
    photo = tmp_path / "stripes.png"
    outlier_image("stripes", 96, 3).save(photo)
    bank = torch.nn.functional.normalize(torch.randn(30, clf.head.in_features), dim=1)
    monkeypatch.setattr(clf, "detector", ood.KnnDetector(bank, k=3))
    monkeypatch.setattr(clf, "unknown_thresholds", {"probability": 1.0, "knn": -1.0})   # every distance is over
    probs, unknown = app.assess(clf, str(photo))
    assert unknown and app.predict(clf, str(photo)) == probs              # the API's answer is unchanged
    label, notice = app.show_answer(probs, 3, clf, unknown)
    assert "faded" in label.elem_classes and "None of the 3 I know" in notice
    monkeypatch.setattr(clf, "unknown_thresholds", {"probability": 1.0, "knn": 3.0})    # no distance is over
    probs, unknown = app.assess(clf, str(photo))
    assert not unknown and "None of the" not in app.show_answer(probs, 3, clf, unknown)[1]


def test_thresholds_default_and_from_config(model_dir):
    from cnn.inference import UNSURE_BELOW, Classifier
    clf = Classifier.from_pretrained(model_dir)
    clf_default = Classifier(clf.model, {**clf.config, "metrics": {}})
    assert (clf_default.unsure_below, clf_default.unknown_below) == (UNSURE_BELOW, 0.0) == (0.5, 0.0)
    custom = Classifier(clf.model, {**clf.config, "metrics": {"unsure_below": 0.62, "unknown_below": 0.3}})
    assert (custom.unsure_below, custom.unknown_below) == (0.62, 0.3)
    assert [custom.warning(p) for p in ([0.7, 0.3], [0.6, 0.4], [0.25, 0.25, 0.25, 0.25])] == ["", "unsure", "unknown"]
    assert custom.known([0.3, 0.7]) and not custom.known(torch.tensor([0.29, 0.29, 0.42]) / 1.5)


def test_where_it_looked_only_when_asked(clf, files):
    photo = {"path": str(files["circle.png"]), "orig_name": "circle.png"}
    hidden = app.where_it_looked(clf, photo, False)
    assert hidden.visible is False
    shown = app.where_it_looked(clf, photo, True)
    assert shown.visible is True
    assert app.where_it_looked(clf, None, True).visible is False


def _component_types(demo: gr.Blocks) -> list[str]:
    return [c["type"] for c in demo.get_config_file()["components"]]


def _header(demo: gr.Blocks) -> str:
    return demo.get_config_file()["components"][0]["props"]["value"]


def test_header_says_bundled_model_or_the_folder_name_never_the_path(clf, model_dir, tmp_path):
    assert _header(app.build_demo(clf, tmp_path, bundled=model_dir)).endswith(" · bundled model")
    header = _header(app.build_demo(clf, tmp_path, bundled=tmp_path))
    assert header.endswith(f" · {model_dir.parent.name}/model") and str(model_dir) not in header
    hub = app.Classifier(clf.model, clf.config, "Hub user/name @ v2", model_dir)
    assert _header(app.build_demo(hub, tmp_path, bundled=tmp_path)).endswith(" · user/name @ v2")


def test_about_section_is_collapsed_and_shows_the_models_numbers(clf, tmp_path):
    config = app.build_demo(clf, tmp_path).get_config_file()
    (accordion,) = [c for c in config["components"] if c["type"] == "accordion"]
    assert accordion["props"]["label"] == "About this model" and accordion["props"]["open"] is False
    texts = " ".join(str(c["props"].get("value")) for c in config["components"] if c["type"] == "markdown")
    assert f"Right {percent(clf.config['metrics']['val_accuracy'])} of the time" in texts
    assert f"{clf.num_parameters:,} parameters" in texts
    labels = [c["props"].get("label") for c in config["components"] if c["type"] == "image"]
    assert about.PLOTS["curves.png"] in labels and about.PLOTS["confusion.png"] in labels
    real = app.Classifier(clf.model, {**clf.config, "metrics": {**clf.config["metrics"], "real_val_accuracy": 0.75}},
                          clf.source, clf.folder)
    assert "Right 75% of the time on photos from elsewhere" in _header(app.build_demo(real, tmp_path))


def test_batch_tab_states_its_limits(clf, tmp_path):
    config = app.build_demo(clf, tmp_path).get_config_file()
    texts = " ".join(str(c["props"].get("value")) for c in config["components"] if c["type"] == "markdown")
    assert f"up to {batch.MAX_PHOTOS} photos" in texts and f"up to {batch.MAX_UPLOAD_MB} MB" in texts
    assert app.MAX_FILE_SIZE == f"{batch.MAX_UPLOAD_MB}mb"
    table, shown = [c for c in config["components"] if c["type"] == "dataframe"]
    assert table["props"]["headers"] == batch.HEADERS and table["props"]["visible"] is False   # what the API returns
    assert shown["props"]["headers"] == batch.PAGE_HEADERS and "⋮ menu" in shown["props"]["label"]


def test_examples_from_the_model_folder(model_dir, tmp_path):
    import shutil

    folder = Path(shutil.copytree(model_dir, tmp_path / "model"))
    assert "dataset" not in _component_types(app.build_demo(app.Classifier.from_pretrained(folder), tmp_path / "none"))
    (folder / "examples").mkdir()
    shape_image("circle", 48, 0).save(folder / "examples" / "circle.jpg")
    demo = app.build_demo(app.Classifier.from_pretrained(folder), tmp_path / "none")
    (dataset,) = [c for c in demo.get_config_file()["components"] if c["type"] == "dataset"]
    assert len(dataset["props"]["samples"]) == 1


def _texts(demo: gr.Blocks) -> str:
    return " ".join(str(c["props"].get("value")) for c in demo.get_config_file()["components"] if c["type"] == "markdown")


def test_examples_shown_only_when_the_folder_has_images(clf, tmp_path):
    """Issue 35 item 8: with no example photos, the page says how its owner adds some (and makes none up)."""
    none = app.build_demo(clf, tmp_path / "missing")
    assert "dataset" not in _component_types(none)
    assert "No example photos here yet" in _texts(none) and "--examples" in _texts(none) and "EXAMPLES_DIR" in _texts(none)
    shape_image("circle", 48, 0).save(tmp_path / "circle.png")
    (tmp_path / "notes.txt").write_text("not an example")
    demo = app.build_demo(clf, tmp_path)
    dataset = [c for c in demo.get_config_file()["components"] if c["type"] == "dataset"]
    assert len(dataset) == 1 and len(dataset[0]["props"]["samples"]) == 1
    assert "No example photos" not in _texts(demo)


def test_example_photos_are_copied_into_the_upload_folder_so_clicking_one_passes_the_check(clf, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "uploads"))
    (tmp_path / "examples").mkdir()
    shape_image("circle", 48, 0).save(tmp_path / "examples" / "circle.jpg")
    (dataset,) = [c for c in app.build_demo(clf, tmp_path / "examples").get_config_file()["components"]
                  if c["type"] == "dataset"]
    (sample,) = dataset["props"]["samples"]
    assert app.uploaded(sample[0]).is_relative_to(tmp_path / "uploads")
    assert app.predict(clf, sample[0])


def test_slider_spans_the_labels(clf, tmp_path):
    config = app.build_demo(clf, tmp_path).get_config_file()
    slider = next(c for c in config["components"] if c["type"] == "slider")
    assert (slider["props"]["minimum"], slider["props"]["maximum"]) == (1, len(clf.labels))
    labels = {c["props"].get("label"): c["props"] for c in config["components"] if c["type"] == "label"}
    assert labels["Prediction"]["num_top_classes"] == min(3, len(clf.labels))
    hidden = labels[None]  # what /predict fills: every label, not just the top k
    assert hidden.get("num_top_classes") is None and hidden["visible"] is False


def test_main_falls_back_to_the_bundled_model_and_sets_limits(model_dir, monkeypatch, caplog):
    """A Hub repo that cannot be fetched → the reason is logged and the bundled model serves instead."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("MODEL_ID", "nobody/no-such-model@v9")
    monkeypatch.setattr(sys, "argv", ["app.py", "--fallback", str(model_dir)])
    launched = {}

    def fake_launch(self, **kwargs):
        launched.update(demo=self, **kwargs)

    monkeypatch.setattr(gr.Blocks, "launch", fake_launch)
    sweepers = []
    monkeypatch.setattr(app.resources.Sweeper, "start", lambda self: sweepers.append(self))
    monkeypatch.delenv("GRADIO_ANALYTICS_MAX_EVENTS", raising=False)
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        with caplog.at_level(logging.INFO, logger="app"):
            app.main()
        assert signal.getsignal(signal.SIGTERM) is not sigterm   # a Space's SIGTERM ends it as an ordinary exit
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    assert "cannot load nobody/no-such-model@v9" in caplog.text
    assert "not in the local cache" in caplog.text  # the reason, from cnn.hub
    assert f"using the bundled model in {model_dir}" in caplog.text
    assert launched["max_file_size"] == app.MAX_FILE_SIZE
    assert launched["state_session_capacity"] == app.SESSIONS_KEPT
    demo = launched["demo"]
    assert demo._queue.max_size == 64 and demo._queue.default_concurrency_limit == app.PHOTOS_AT_ONCE
    lanes = {fn.api_name: (fn.concurrency_id, fn.concurrency_limit) for fn in demo.fns.values()}
    assert lanes["predict_batch"] == ("batch", 1) and lanes["predict"][0] == "model"   # batches never hold up photos
    assert demo.delete_cache == (3600, 3600)  # uploads do not pile up on disk
    [sweeper] = sweepers                      # nor past a size (a flood within the hour), and memory goes back
    assert sweeper.folder == Path(gr.utils.get_upload_folder()) and sweeper.max_bytes == app.UPLOAD_CACHE_MB * 2**20
    assert demo._queue.ANALYTICS_MAX_EVENTS == app.ANALYTICS_KEPT  # nor request timings in memory
    assert all(label in str(demo.get_config_file()["components"][0]["props"]["value"]) for label in SHAPES)


def test_load_model_takes_a_run_folder(trained_run, model_dir, caplog):
    """Issue 14 item 11: `--model runs/mine` serves runs/mine/model, not the bundled model."""
    with caplog.at_level(logging.INFO):
        clf = app.load_model(str(trained_run), fallback=REPO / "model")
    assert clf.folder == trained_run / "model" and clf.labels == list(SHAPES)
    assert "using the bundled model" not in caplog.text


def test_every_handler_is_a_named_function_with_a_docstring(clf, model_dir, tmp_path):
    """No lambdas or functools.partial: Gradio's MCP server and API page name and describe tools after them."""
    from page.feedback import FeedbackStore

    shape_image("circle", 48, 0).save(tmp_path / "circle.png")
    demo = app.build_demo(clf, tmp_path, feedback=FeedbackStore(tmp_path / "feedback", clf.labels))
    ours = [f.fn for f in demo.fns.values() if f.fn is not None and f.fn.__module__ == "app"]
    assert len(ours) >= 15
    for fn in ours:
        assert fn.__name__ not in ("<lambda>", "partial") and (fn.__doc__ or "").strip(), fn
    gradio_own = [f.fn for f in demo.fns.values() if f.fn is not None and f.fn.__module__ != "app"]
    assert all(f.__module__.startswith("gradio") for f in gradio_own)      # only gr.Examples' own loader


def handler(demo: gr.Blocks, name: str):
    """The page's event handler called `name` (each is a named function)."""
    (fn,) = {f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == name}
    return fn


def test_confirming_a_none_of_the_n_answer_keeps_the_photo_as_none_never_its_faded_top_guess(clf, tmp_path):
    """Issue 35 item 1: "the answer was right" on a "none of the N" answer kept the photo under the faded top
    guess (pyramids kept as spider/), a correction retraining trusts."""
    from page.feedback import NONE, FeedbackStore

    store = FeedbackStore(tmp_path / "feedback", clf.labels)
    demo = app.build_demo(clf, tmp_path, feedback=store)
    shape_image("circle", 96, 9).save(tmp_path / "odd.png")
    photo = {"path": str(tmp_path / "odd.png"), "orig_name": "odd.png"}
    answer = {"label": "circle", "confidences": [{"label": "circle", "confidence": 0.5},
                                                 {"label": "square", "confidence": 0.3},
                                                 {"label": "triangle", "confidence": 0.2}]}
    assert app.confirmed_label(answer, unknown=False) == "circle"
    assert app.confirmed_label(answer, unknown=True) == NONE
    assert app.confirmed_label(None, unknown=True) is None
    # the button says what it keeps, as soon as the answer is judged
    open_box = handler(demo, "open_box")
    assert open_box(answer, True)[1].value == app.CONFIRM_NONE and "none of these" in app.CONFIRM_NONE
    assert open_box(answer, False)[1].value == app.CONFIRM_LABEL
    # and the confirmation keeps the photo under none/, nothing under the top guess
    thanks, kept = handler(demo, "confirm_answer")(photo, answer, True, None)
    assert kept.label == NONE and kept.path.parent.name == NONE and "none of these" in thanks
    assert not list((tmp_path / "feedback" / "circle").glob("*.jpg"))
    thanks, kept = handler(demo, "confirm_answer")(photo, answer, False, None)
    assert kept.path.parent.name == "circle" and "kept as *circle*" in thanks


def mcp_tools(demo: gr.Blocks) -> dict[str, dict]:
    """The tools Gradio's MCP server offers for `demo`, from its own schema."""
    import asyncio
    import json
    from types import SimpleNamespace

    from gradio.mcp import GradioMCPServer

    response = asyncio.run(GradioMCPServer(demo).get_complete_schema(SimpleNamespace(query_params={})))
    return {tool["meta"]["endpoint_name"]: tool for tool in json.loads(response.body)}


def test_mcp_tools_are_named_and_described_and_take_the_photo(clf, tmp_path):
    tools = mcp_tools(app.build_demo(clf, tmp_path))
    assert set(tools) == {"predict", "predict_batch"}
    predict = tools["predict"]
    assert predict["name"] == "classify_photo" and "every label's probability" in predict["description"]
    assert predict["inputSchema"]["required"] == ["photo"]
    assert "the photo to classify" in predict["inputSchema"]["properties"]["photo"]["description"]
    assert tools["predict_batch"]["name"] == "classify_photos"
    assert tools["predict_batch"]["inputSchema"]["required"] == ["files"]


def test_gradio_mcp_server_switch_serves_predict_as_a_tool(model_dir, tmp_path, files):
    """GRADIO_MCP_SERVER=true (Gradio's own switch): an MCP client lists the tool and classifies a photo with it."""
    import ast
    import asyncio
    import base64

    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def call(url: str) -> tuple[list[str], str]:
        async with streamable_http_client(f"{url}gradio_api/mcp/http/") as (read, write, _):
            async with ClientSession(read, write) as session:
                await session.initialize()
                names = [t.name for t in (await session.list_tools()).tools]
                photo = "data:image/png;base64," + base64.b64encode(files["circle.png"].read_bytes()).decode()
                result = await session.call_tool("classify_photo", {"photo": photo})
                return names, " ".join(getattr(c, "text", "") for c in result.content)

    with serve_app(model_dir, tmp_path / "app.log", GRADIO_MCP_SERVER="true") as url:
        names, text = asyncio.run(call(url))
    assert "classify_photo" in names and "classify_photos" in names
    answer = ast.literal_eval(text)                    # Gradio's MCP server sends the result's repr
    assert answer["label"] in SHAPES and {c["label"] for c in answer["confidences"]} == set(SHAPES)


def test_load_model_without_fallback_raises(tmp_path):
    with pytest.raises(app.ModelLoadError):
        app.load_model(str(tmp_path / "nothing-here"), fallback=tmp_path / "also-missing")


def test_a_mistyped_model_folder_is_an_error_not_the_bundled_model(model_dir, tmp_path, monkeypatch, capsys):
    """Issue 35 item 9: the fallback is for a Hub repo out of reach; a typo in a folder name stops the app with
    the closest folder instead of serving another model under a warning."""
    typo = str(model_dir)[:-1] + "x"
    with pytest.raises(app.ModelNotFoundError, match="did you mean"):
        app.load_model(typo, fallback=model_dir)
    monkeypatch.setattr(sys, "argv", ["app.py", "--model", typo, "--fallback", str(model_dir)])
    monkeypatch.setattr(gr.Blocks, "launch", lambda self, **kwargs: pytest.fail("served despite the typo"))
    with pytest.raises(SystemExit) as e:
        app.main()
    assert e.value.code == 2 and f"did you mean {str(model_dir)!r}?" in capsys.readouterr().err


def test_a_photo_of_none_of_the_labels_is_said_so_and_its_guesses_fade(real_run, tmp_path):
    from imagegen import outlier_image

    clf = app.Classifier.from_pretrained(real_run / "model")      # trained with outlier exposure
    assert clf.unknown_thresholds                                  # its rule (the default: energy)
    photos = {"stripes.jpg": outlier_image("stripes", 96, 7001), "background.jpg": outlier_image("background", 96, 7002),
              "triangle.jpg": shape_image("triangle", 96, 7003)}
    for name, image in photos.items():
        image.save(tmp_path / name)
    for name in ("stripes.jpg", "background.jpg"):
        probs, unknown = app.assess(clf, {"path": str(tmp_path / name), "orig_name": name})
        label, notice = app.show_answer(probs, 3, clf, unknown)
        assert "None of the 3 I know" in notice and "faded" in label.elem_classes
        assert len(label.value["confidences"]) == 3                    # the guesses are still shown
    probs, unknown = app.assess(clf, {"path": str(tmp_path / "triangle.jpg"), "orig_name": "triangle.jpg"})
    label, notice = app.show_answer(probs, 3, clf, unknown)
    assert max(probs, key=probs.get) == "triangle" and "Not one of" not in notice and not label.elem_classes
