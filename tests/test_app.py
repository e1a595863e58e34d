"""The Gradio app: its helpers in-process, then one real `python app.py` server driven by gradio_client."""
from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

gr = pytest.importorskip("gradio")

import app  # noqa: E402
from appserver import app_env, free_port, stop  # noqa: E402
from imagegen import SHAPES, make_upload_matrix, shape_image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# --- a real server, shared with test_browser.py ------------------------------------------------

@contextlib.contextmanager
def serve_app(model: str | Path, log_file: Path, *args: str, timeout: float = 120, **env: str) -> Iterator[str]:
    """Run `python app.py` on a free localhost port (offline, no analytics, plus `env`); yield its URL once it
    answers."""
    port = free_port()
    env = app_env(port, MODEL_ID=str(model), OMP_NUM_THREADS="1", **env)
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
        yield url
    finally:
        stop(proc)


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


def test_only_predict_is_public(client):
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {"/predict"}


def test_bad_uploads_get_a_readable_error_and_the_server_keeps_serving(client, files):
    from gradio_client import handle_file

    for name in ("notes.png", "empty.png", "truncated.png"):
        with pytest.raises(Exception, match=rf"{name} is not an image that can be read"):
            client.predict(handle_file(str(files[name])), api_name="/predict")
    with pytest.raises(Exception, match="Please add a photo"):
        client.predict(None, api_name="/predict")
    result = client.predict(handle_file(str(files["circle.png"])), api_name="/predict")
    assert result["label"] in SHAPES


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

def test_predict_helper(clf, files):
    probs = app.predict(clf, {"path": str(files["circle.png"]), "orig_name": "circle.png"})
    assert list(probs) == clf.labels and sum(probs.values()) == pytest.approx(1, abs=1e-5)
    assert app.predict(clf, str(files["circle.png"])) == probs


@pytest.mark.parametrize("photo, message", [
    (None, "Please add a photo first"),
    ({}, "Please add a photo first"),
    ("empty.png", "empty.png is not an image"),
    ("notes.png", "notes.png is not an image"),
])
def test_read_photo_errors_are_readable(files, photo, message):
    if isinstance(photo, str):
        photo = {"path": str(files[photo]), "orig_name": photo}
    with pytest.raises(gr.Error, match=message):
        app.read_photo(photo)


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
    assert notice.startswith("⚠️ **Not sure:**") and "*cat* at only 40%" in notice and "3 animals" in notice
    notice = app.answer_notice({"cat": 0.25, "dog": 0.25, "cow": 0.2, "x": 0.3 - 1e-9}, clf)
    assert "Not one of the 4 animals I know" in notice and "faded" in notice
    assert app.answer_notice({"cat": 0.9, "dog": 0.1}, clf) == ""


def test_show_answer_keeps_the_top_k_warns_and_fades(clf, monkeypatch):
    monkeypatch.setattr(clf, "unsure_below", 0.5)
    monkeypatch.setattr(clf, "unknown_below", 0.3)
    probs = {"cat": 0.4, "dog": 0.35, "cow": 0.25}
    label, notice = app.show_answer(probs, 2.0, clf)
    assert label.num_top_classes == 2 and "Not sure" in notice and "faded" not in label.elem_classes
    assert label.postprocess(probs).model_dump()["confidences"] == [{"label": "cat", "confidence": 0.4},
                                                                   {"label": "dog", "confidence": 0.35}]
    monkeypatch.setattr(clf, "unsure_below", 0.3)
    assert app.show_answer(probs, 3, clf)[1] == ""
    monkeypatch.setattr(clf, "unknown_below", 0.45)
    label, notice = app.show_answer(probs, 3, clf)
    assert "faded" in label.elem_classes and "Not one of the" in notice
    empty, notice = app.show_answer(None, 3, clf)
    assert not empty.value and notice == ""


def test_thresholds_default_and_from_config(model_dir):
    from cnn.inference import UNSURE_BELOW, Classifier
    clf = Classifier.from_pretrained(model_dir)
    clf_default = Classifier(clf.model, {**clf.config, "metrics": {}})
    assert (clf_default.unsure_below, clf_default.unknown_below) == (UNSURE_BELOW, 0.0) == (0.5, 0.0)
    custom = Classifier(clf.model, {**clf.config, "metrics": {"unsure_below": 0.62, "unknown_below": 0.3}})
    assert (custom.unsure_below, custom.unknown_below) == (0.62, 0.3)


def test_where_it_looked_only_when_asked(clf, files):
    photo = {"path": str(files["circle.png"]), "orig_name": "circle.png"}
    hidden = app.where_it_looked(clf, photo, False)
    assert hidden.visible is False
    shown = app.where_it_looked(clf, photo, True)
    assert shown.visible is True
    assert app.where_it_looked(clf, None, True).visible is False


def test_model_info(clf):
    info = app.model_info(clf)
    assert clf.config["architecture"] in info and clf.source in info and "M parameters" in info
    if "val_accuracy" in clf.config["metrics"]:
        assert f"validation accuracy {clf.config['metrics']['val_accuracy']:.1%}" in info


def _component_types(demo: gr.Blocks) -> list[str]:
    return [c["type"] for c in demo.get_config_file()["components"]]


def test_examples_shown_only_when_the_folder_has_images(clf, tmp_path):
    assert "dataset" not in _component_types(app.build_demo(clf, tmp_path / "missing"))
    shape_image("circle", 48, 0).save(tmp_path / "circle.png")
    (tmp_path / "notes.txt").write_text("not an example")
    demo = app.build_demo(clf, tmp_path)
    dataset = [c for c in demo.get_config_file()["components"] if c["type"] == "dataset"]
    assert len(dataset) == 1 and len(dataset[0]["props"]["samples"]) == 1


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
    with caplog.at_level(logging.INFO, logger="app"):
        app.main()
    assert "cannot load nobody/no-such-model@v9" in caplog.text
    assert "not in the local cache" in caplog.text  # the reason, from cnn.hub
    assert f"using the bundled model in {model_dir}" in caplog.text
    assert launched["max_file_size"] == app.MAX_FILE_SIZE
    assert launched["state_session_capacity"] == app.SESSIONS_KEPT
    demo = launched["demo"]
    assert demo._queue.max_size == 64 and demo._queue.default_concurrency_limit == 2
    assert demo.delete_cache == (3600, 3600)  # uploads do not pile up on disk
    assert all(label in str(demo.get_config_file()["components"][0]["props"]["value"]) for label in SHAPES)


def test_load_model_without_fallback_raises(tmp_path):
    with pytest.raises(app.ModelLoadError):
        app.load_model(str(tmp_path / "nothing-here"), fallback=tmp_path / "also-missing")
