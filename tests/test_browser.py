"""The app in a real (headless) browser: upload a photo, read the answer off the page, correct it, keep screenshots."""
from __future__ import annotations

import json
import csv
import io
import os
import re
import shutil
import zipfile
from pathlib import Path
from typing import Iterator

import pytest

pytest.importorskip("playwright")
pytest.importorskip("gradio")

from imagegen import SHAPES, shape_image  # noqa: E402
from test_app import serve_app  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def app_url(model_dir, tmp_path_factory) -> Iterator[str]:
    with serve_app(model_dir, tmp_path_factory.mktemp("browser-app") / "app.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    page.set_default_timeout(60_000)  # a busy 2-core machine can be slow
    yield page
    page.close()


def keep_screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("SCREENSHOT_DIR"):
        Path(os.environ["SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(os.environ["SCREENSHOT_DIR"]) / path.name)


def test_upload_a_photo_and_read_the_answer(app_url, page, tmp_path):
    photo = tmp_path / "triangle.png"
    shape_image("triangle", 96, 5).save(photo)
    page.goto(app_url)
    page.get_by_text("Which of these is in the photo").wait_for()
    page.locator("input[type=file]").first.set_input_files(str(photo))
    page.get_by_role("button", name="Classify").click()

    top = page.get_by_test_id("label-output-value")
    top.wait_for()
    assert top.inner_text().strip() in SHAPES
    rows = page.locator(".confidence-set")
    assert rows.count() == min(3, len(SHAPES))

    guesses = page.get_by_test_id("number-input")  # the slider's number box: show only the top guess
    guesses.fill("1")
    guesses.press("Enter")
    page.wait_for_function("document.querySelectorAll('.confidence-set').length === 1")

    page.get_by_label("Show where the model looked").check()
    page.locator(".block", has_text="red = most").locator("img").wait_for()  # the Grad-CAM overlay
    keep_screenshot(page, tmp_path / "app-answer.png")


@pytest.fixture(scope="module")
def feedback_app(model_dir, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("browser-feedback")
    with serve_app(model_dir, root / "app.log", FEEDBACK_DIR=str(root / "feedback")) as url:
        yield url, root / "feedback"


def test_correct_an_answer_through_the_page(feedback_app, page, tmp_path):
    url, folder = feedback_app
    photo = tmp_path / "circle.png"
    shape_image("circle", 96, 8).save(photo)
    page.goto(url)
    page.get_by_text("Corrections are kept to improve the model").wait_for()
    choice = page.get_by_label("Wrong? Pick what the photo really shows")
    assert not choice.is_visible()                                  # nothing to correct before an answer
    page.locator("input[type=file]").first.set_input_files(str(photo))
    page.get_by_role("button", name="Classify").click()
    answer = page.get_by_test_id("label-output-value")
    answer.wait_for()
    before = answer.inner_text()

    choice.click()
    page.get_by_role("option", name="none of these").click()        # one pick sends it
    page.get_by_text("Thank you! The photo is kept as none of these").wait_for()
    assert answer.inner_text() == before                            # nothing else on the page changed
    (kept,) = (folder / "none").glob("*.jpg")
    (log,) = (folder / "logs").glob("*.jsonl")
    assert json.loads(log.read_text())["sha1"] == kept.stem
    keep_screenshot(page, tmp_path / "app-feedback.png")


HTML_NAME = "<img src=x onerror=alert(1)>.jpg"


def no_html_from_names(page) -> None:
    """The file name's HTML was shown as text: no element it describes, no script it carries ran."""
    assert page.locator("img[src='x']").count() == 0
    assert page.evaluate("window.__alerts || 0") == 0


@pytest.fixture
def watched(page):
    """`page`, counting any alert() a file name manages to run."""
    page.add_init_script("window.__alerts = 0; window.alert = () => { window.__alerts += 1; };")
    return page


def test_a_broken_upload_named_with_html_shows_the_name_as_text(app_url, watched, tmp_path):
    page = watched
    page.goto(app_url)
    page.get_by_text("Which of these is in the photo").wait_for()
    page.locator("input[type=file]").first.set_input_files(
        files=[{"name": HTML_NAME, "mimeType": "image/jpeg", "buffer": b"this is not a photo"}])
    toast = page.get_by_test_id("toast-body").first
    toast.wait_for()
    assert f"{HTML_NAME} is not an image that can be read" in toast.inner_text()
    no_html_from_names(page)


def test_many_photos_tab_table_counts_and_csv(app_url, watched, tmp_path):
    page = watched
    page.goto(app_url)
    page.get_by_role("tab", name="Many photos").click()
    page.get_by_text("Drop up to").wait_for()
    photos = []
    for i, kind in enumerate(SHAPES):
        photos.append(tmp_path / f"{kind}.png")
        shape_image(kind, 80, i).save(photos[-1])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../outside.png", photos[0].read_bytes())
    uploads = [{"name": p.name, "mimeType": "image/png", "buffer": p.read_bytes()} for p in photos]
    uploads += [{"name": "broken.jpg", "mimeType": "image/jpeg", "buffer": b"not a photo"},
                {"name": HTML_NAME, "mimeType": "image/png", "buffer": photos[1].read_bytes()},
                {"name": "evil.zip", "mimeType": "application/zip", "buffer": buf.getvalue()}]
    page.locator("#batch-files input[type=file]").set_input_files(files=uploads)
    page.locator("#batch-files").get_by_text("evil", exact=True).wait_for()   # the upload has finished
    page.get_by_role("button", name="Classify all").click()
    page.get_by_text("6 photos:").wait_for()

    table = page.locator("#batch-table")
    text = table.inner_text()
    for name in [p.name for p in photos] + ["broken.jpg", HTML_NAME, "evil.zip"]:
        assert name in text, name
    assert "not an image that can be read" in text and "points outside its folder" in text
    no_html_from_names(page)

    with page.expect_download() as download:
        page.locator("#batch-csv a").first.click()
    with open(download.value.path(), newline="", encoding="utf-8") as f:
        lines = list(csv.reader(f))
    assert lines[0] == ["file", "top label", "probability", "flag", "error"]
    assert [line[0] for line in lines[1:]] == [p.name for p in photos] + ["broken.jpg", HTML_NAME, "evil.zip"]
    assert all(line[1] in SHAPES for line in lines[1:4])
    keep_screenshot(page, tmp_path / "app-batch.png")


def test_phone_size_page_needs_no_sideways_scrolling(app_url, browser, tmp_path):
    page = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                            has_touch=True)
    page.set_default_timeout(60_000)
    try:
        photo = tmp_path / "circle.png"
        shape_image("circle", 96, 1).save(photo)
        page.goto(app_url)
        page.get_by_text("Which of these is in the photo").wait_for()
        page.locator("input[type=file]").first.set_input_files(str(photo))
        page.get_by_test_id("label-output-value").wait_for()
        button = page.get_by_role("button", name="Classify")
        box = button.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.get_by_text("About this model").click()
        page.get_by_text(re.compile(r"^A teaching and demo model")).wait_for()   # the About text, opened
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        keep_screenshot(page, tmp_path / "app-phone.png")
    finally:
        page.close()
