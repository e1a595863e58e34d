"""Visitors' corrections: what is kept (and what is not), de-duplication, refusals, limits, concurrent
writers, the push to a Hub dataset (against the local stand-in) and its failure paths, the /feedback API."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from PIL import ExifTags, Image, ImageCms

from cnn.data import load_image, scan_folders
from page.feedback import (LEGACY_LOG_NAME, MAX_SIDE, NONE, FeedbackRefused, FeedbackStore, Settings,
                          dataset_card, model_identity, open_store)
from imagegen import SHAPES, make_shapes_folder, shape_image
from test_hub import (FakeHub, closed_port_endpoint, fake_hub, hf_home, make_model_folder,  # noqa: F401
                      offline_cache)

PROBS = {"circle": 0.7, "square": 0.2, "triangle": 0.1}
ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store_in(folder: Path, **kwargs) -> FeedbackStore:
    return FeedbackStore(folder, list(SHAPES), "user/model", "abc123", **kwargs)


def photo(seed: int, kind: str = "circle", size: int = 64) -> Image.Image:
    return shape_image(kind, size, seed)


def log_files(folder: Path) -> list[Path]:
    return sorted((folder / "logs").glob("*.jsonl"))


def log_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for path in log_files(folder) for line in path.read_text().splitlines()]


def kept_photos(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))


@pytest.fixture
def phone_photo(tmp_path) -> Path:
    """A 1200×900 JPEG as a phone writes it: GPS position, camera EXIF, an ICC profile and a comment."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneMaker"
    exif[ExifTags.Base.Orientation] = 1
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps.update({ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (52.0, 22.0, 12.5),
                ExifTags.GPS.GPSLongitudeRef: "E", ExifTags.GPS.GPSLongitude: (4.0, 53.0, 30.0)})
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = tmp_path / "IMG_0001.jpg"
    photo(1, size=300).resize((1200, 900)).save(path, quality=92, exif=exif.tobytes(), icc_profile=icc,
                                                 comment=b"taken at home")
    with Image.open(path) as original:   # the test photo really carries what must be dropped
        assert original.getexif().get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitude] == (52.0, 22.0, 12.5)
        assert original.info["icc_profile"] == icc and original.info["comment"] == b"taken at home"
    return path


# --- what is kept ---------------------------------------------------------------------------------------

def test_a_correction_keeps_a_small_jpeg_without_metadata_and_a_log_line(tmp_path, phone_photo):
    folder = tmp_path / "feedback"
    kept = store_in(folder).add(load_image(phone_photo), "square", PROBS, "visitor-1")
    sha1 = hashlib.sha1(kept.path.read_bytes()).hexdigest()
    assert kept.stored and kept.sha1 == sha1 and kept.path == folder / "square" / f"{sha1}.jpg"
    assert kept_photos(folder) == [f"square/{sha1}.jpg"]
    with Image.open(kept.path) as saved:
        assert saved.format == "JPEG" and saved.mode == "RGB"
        assert saved.size == (MAX_SIDE, MAX_SIDE * 3 // 4)           # at most 512 px, aspect kept
        assert not saved.getexif() and not saved.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        assert not {"exif", "icc_profile", "comment", "xmp"} & set(saved.info), saved.info
    assert b"PhoneMaker" not in kept.path.read_bytes() and b"taken at home" not in kept.path.read_bytes()

    (line,) = log_lines(folder)
    assert set(line) == {"time", "model", "revision", "answer", "label", "sha1"}
    assert (line["model"], line["revision"], line["label"], line["sha1"]) == ("user/model", "abc123", "square", sha1)
    assert line["answer"] == [{"label": "circle", "p": 0.7}, {"label": "square", "p": 0.2},
                              {"label": "triangle", "p": 0.1}]
    assert line["time"].endswith("+00:00")
    assert not list(folder.rglob(".*"))                                 # no temporary file left behind


def test_the_same_photo_is_kept_once_under_its_latest_label(tmp_path):
    folder = tmp_path / "feedback"
    store = store_in(folder)
    first = store.add(photo(3), "circle", PROBS, "a")
    again = store.add(photo(3), "square", PROBS, "b")                   # another visitor, another opinion
    assert first.stored and not again.stored and again.sha1 == first.sha1
    assert (first.moved_from, again.moved_from) == (None, "circle") and again.path == folder / "square" / first.path.name
    assert kept_photos(folder) == [f"square/{first.sha1}.jpg"]         # the latest label, once
    assert [(line["label"], line["sha1"]) for line in log_lines(folder)] == [("circle", first.sha1),
                                                                       ("square", first.sha1)]
    same = store.add(photo(3), "square", PROBS, "c")
    assert not same.stored and same.moved_from is None and same.path == again.path
    # a store opened later on the same folder knows what it holds, and where
    reopened = store_in(folder).add(photo(3), NONE, PROBS, "d")
    assert not reopened.stored and reopened.moved_from == "square"
    assert kept_photos(folder) == [f"none/{first.sha1}.jpg"] and len(log_lines(folder)) == 4


def test_undo_takes_back_a_mis_click_and_only_what_it_stored(tmp_path):
    folder = tmp_path / "feedback"
    store = store_in(folder)
    misclick = store.add(photo(4), "square", PROBS, "a")
    store.undo(misclick)
    assert kept_photos(folder) == [] and misclick.sha1 not in store._kept
    assert log_lines(folder)[-1]["undo"] == misclick.sha1 and set(log_lines(folder)[-1]) == {"time", "undo"}
    assert store.add(photo(4), "circle", PROBS, "a").stored                # the photo can be kept again, rightly
    earlier = store.add(photo(5), "circle", PROBS, "a")
    repeat = store.add(photo(5), "square", PROBS, "b")                     # not stored: the photo was kept already
    store.undo(repeat)
    assert f"circle/{earlier.sha1}.jpg" in kept_photos(folder)            # someone else's photo stays
    assert store.used_mb * 2**20 == sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_none_of_these_goes_to_its_own_folder_which_training_does_not_take_as_a_class(tmp_path):
    folder = tmp_path / "feedback"
    store = store_in(folder)
    store.add(photo(1, "triangle"), "triangle", PROBS, "a")
    outlier = store.add(photo(2), NONE, PROBS, "a")
    assert outlier.path.parent == folder / "none"
    base = make_shapes_folder(tmp_path / "base", per_class=2, size=32)
    listing = scan_folders([base, folder])
    assert listing.classes == list(SHAPES) and listing.outliers == [f"1:none/{outlier.sha1}.jpg"]
    assert len(listing.paths) == 7


@pytest.mark.parametrize("label", ["zebra", "Circle", "", None, "none of these", "../circle"])
def test_a_label_that_is_not_the_models_is_refused(tmp_path, label):
    folder = tmp_path / "feedback"
    with pytest.raises(FeedbackRefused, match="is not one of this model's labels"):
        store_in(folder).add(photo(1), label, PROBS, "a")
    assert not kept_photos(folder) and not log_files(folder)


def test_the_refusal_quotes_a_long_or_odd_label_short_and_on_one_line(tmp_path):
    with pytest.raises(FeedbackRefused) as e:
        store_in(tmp_path / "feedback").add(photo(1), "zebra\n" + "z" * 100_000, PROBS, "a")
    message = str(e.value)
    assert message.startswith("'zebra?zzz") and "…' is not one of this model's labels" in message
    assert len(message) < 150 and "\n" not in message


def test_a_model_with_a_label_none_or_logs_cannot_take_corrections(tmp_path):
    with pytest.raises(ValueError, match="may not be 'none'"):
        FeedbackStore(tmp_path, ["cat", "none"])
    with pytest.raises(ValueError, match="may not be 'logs'"):
        FeedbackStore(tmp_path, ["cat", "logs"])


# --- the log and the dataset card -------------------------------------------------------------------------

def test_each_run_logs_to_its_own_file_and_an_old_log_is_left_as_it_was(tmp_path):
    """A restart must not replace the earlier run's file on the Hub (CommitScheduler uploads files by name)."""
    folder = tmp_path / "feedback"
    folder.mkdir()
    old = json.dumps({"time": "2025-01-01T00:00:00+00:00", "label": "circle", "sha1": "0" * 40}) + "\n"
    (folder / LEGACY_LOG_NAME).write_text(old)
    first = store_in(folder)
    first.add(photo(1), "circle", PROBS, "a")
    second = store_in(folder)                                           # the app restarted
    second.add(photo(2), "square", PROBS, "a")
    assert log_files(folder) == sorted([first.log_path, second.log_path]) and first.log_path != second.log_path
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-[0-9a-f]{32}\.jsonl", p.name) for p in log_files(folder))
    assert sorted(line["label"] for line in log_lines(folder)) == ["circle", "square"]
    assert (folder / LEGACY_LOG_NAME).read_text() == old


@pytest.fixture
def offline_datasets(tmp_path, monkeypatch):
    """The real `datasets` package, offline, with its cache in the test's folder."""
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    datasets.disable_progress_bars()
    return datasets


def test_datasets_loads_the_folder_with_the_models_labels_in_the_models_order(offline_datasets, tmp_path):
    folder = tmp_path / "feedback"
    labels = ["triangle", "square", "circle"]                           # not sorted, as a model's may be
    store = FeedbackStore(folder, labels, "you/animal-cnn", "abc123")
    kept = store.add(photo(1, "circle"), "circle", PROBS, "a")          # one photo of one class, and a none
    outlier = store.add(photo(2), NONE, PROBS, "a")
    old = {"time": "2025-01-01T00:00:00+00:00", "model": "you/animal-cnn", "revision": "abc123",   # a folder from
           "answer": [{"label": "circle", "p": 0.9}], "label": "square", "sha1": "0" * 40}           # before logs/
    (folder / LEGACY_LOG_NAME).write_text(json.dumps(old) + "\n")

    ds = offline_datasets.load_dataset(str(folder), split="train", cache_dir=str(tmp_path / "c1"))
    assert ds.features["label"].names == labels and list(ds.features) == ["image", "label"]
    assert ds.num_rows == 1 and ds[0]["label"] == 2                    # the model's index of "circle"
    assert ds[0]["image"].tobytes() == Image.open(kept.path).tobytes()
    none = offline_datasets.load_dataset(str(folder), "none", split="train", cache_dir=str(tmp_path / "c2"))
    assert list(none.features) == ["image"] and none.num_rows == 1
    assert none[0]["image"].tobytes() == Image.open(outlier.path).tobytes()
    # the logs, old and new, as the card says to read them
    log = offline_datasets.load_dataset("json", data_files=[str(folder / LEGACY_LOG_NAME), str(folder / "logs/*.jsonl")],
                                        split="train", cache_dir=str(tmp_path / "c3"))
    assert log["label"] == ["square", "circle", "none"]
    card = (folder / "README.md").read_text()
    assert "circle" in card and "`load_dataset(repo, \"none\")`" in card and "you/animal-cnn" in card


def test_the_card_follows_the_labels_of_the_model_that_serves(tmp_path):
    folder = tmp_path / "feedback"
    store_in(folder)
    before = (folder / "README.md").read_text()
    store_in(folder)
    assert (folder / "README.md").read_text() == before
    FeedbackStore(folder, ["dog", "cat"])
    assert "'1': cat" in (folder / "README.md").read_text() and "triangle" not in (folder / "README.md").read_text()


# --- limits -----------------------------------------------------------------------------------------------

def test_each_visitor_is_rate_limited(tmp_path):
    clock = Clock()
    store = store_in(tmp_path / "feedback", per_minute=3, clock=clock)
    for i in range(3):
        store.add(photo(i), "circle", PROBS, "busy")
    with pytest.raises(FeedbackRefused, match="please wait a minute"):
        store.add(photo(9), "circle", PROBS, "busy")
    store.add(photo(10), "circle", PROBS, "someone else")                # others are not held back
    clock.now += 59
    with pytest.raises(FeedbackRefused):
        store.add(photo(11), "circle", PROBS, "busy")
    clock.now += 2                                                       # a minute after the first three
    store.add(photo(12), "circle", PROBS, "busy")
    assert len(log_lines(tmp_path / "feedback")) == 5


def test_all_visitors_together_are_rate_limited(tmp_path):
    clock = Clock()
    store = store_in(tmp_path / "feedback", per_minute=5, all_per_minute=3, clock=clock)
    for i in range(3):
        store.add(photo(i), "circle", PROBS, f"address-{i}")
    with pytest.raises(FeedbackRefused, match="many corrections are arriving just now: please try again in a minute"):
        store.add(photo(9), "circle", PROBS, "address-9")
    clock.now += 61
    store.add(photo(9), "circle", PROBS, "address-9")


def test_a_full_folder_makes_room_by_deleting_the_oldest_photos_and_tells_the_operator_once(tmp_path, caplog):
    folder = tmp_path / "feedback"
    cap = store_in(folder).used_mb * 2**20 + 6000                       # the dataset card, then about two photos
    store = store_in(folder, max_mb=cap / 2**20, per_minute=100)
    kept = []
    with caplog.at_level(logging.WARNING, logger="page.feedback"):
        for i in range(8):                                              # a flood never locks later visitors out
            kept.append(store.add(photo(i, size=48), "circle", PROBS, f"v{i}"))
        relabelled = store.add(photo(7, size=48), "square", PROBS, "v8")   # the newest photo is never dropped
    on_disk = kept_photos(folder)
    assert 1 <= len(on_disk) < 8 and f"square/{kept[-1].sha1}.jpg" in on_disk and relabelled.moved_from == "circle"
    assert on_disk == sorted(f"{p.parent.name}/{p.name}" for p in [k.path for k in kept[-len(on_disk):-1]] +
                             [relabelled.path])                          # the newest ones stayed
    assert len(log_lines(folder)) == 9                                  # every correction is logged
    used = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert used <= cap and store.used_mb == used / 2**20
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "FEEDBACK_MAX_MB" in warnings[0] and "oldest photos are deleted" in warnings[0]
    again = store_in(folder, max_mb=cap / 2**20).add(photo(98, size=48), "circle", PROBS, "v98")   # after a restart
    assert again.path.is_file() and not kept[0].path.exists()


def test_when_the_log_alone_fills_the_folder_corrections_are_refused_and_the_operator_told(tmp_path, caplog):
    folder = tmp_path / "feedback"
    folder.mkdir()
    (folder / LEGACY_LOG_NAME).write_text("x" * 6000)
    store = store_in(folder, max_mb=6000 / 2**20)
    with caplog.at_level(logging.WARNING, logger="page.feedback"):
        for _ in range(2):
            with pytest.raises(FeedbackRefused, match="storage is full"):
                store.add(photo(1, size=48), "circle", PROBS, "a")
    assert not kept_photos(folder)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "log alone fills the cap" in line and str(folder) in line


def test_concurrent_visitors_never_corrupt_the_folder_or_the_log(tmp_path):
    folder = tmp_path / "feedback"
    store = store_in(folder, per_minute=1000, all_per_minute=1000)
    photos = [photo(i, SHAPES[i % 3], 48) for i in range(12)]
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def visitor(n: int) -> None:
        try:
            start.wait()
            for i in range(12):   # every visitor sends all twelve photos, in a different order
                k = (i * 5 + n) % 12
                store.add(photos[k], SHAPES[k % 3], PROBS, f"visitor-{n}")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=visitor, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    lines = log_lines(folder)                                            # every line whole, valid JSON
    assert len(lines) == 8 * 12
    stored = kept_photos(folder)
    assert len(stored) == 12 and len({line["sha1"] for line in lines}) == 12
    for rel in stored:                                                   # each photo complete and named by its hash
        data = (folder / rel).read_bytes()
        assert Path(rel).stem == hashlib.sha1(data).hexdigest() and Image.open(folder / rel).verify() is None
    assert not list(folder.rglob(".*"))


# --- settings -------------------------------------------------------------------------------------------

def test_settings_from_the_environment(tmp_path):
    assert Settings.from_env({}).folder is None                         # off unless asked for
    s = Settings.from_env({"FEEDBACK_DIR": str(tmp_path), "FEEDBACK_MAX_MB": "5", "FEEDBACK_PER_MINUTE": "2",
                           "FEEDBACK_ALL_PER_MINUTE": "7"})
    assert (s.folder, s.repo, s.max_mb, s.per_minute, s.all_per_minute, s.every_minutes) == (tmp_path, None, 5.0, 2,
                                                                                             7, 5.0)
    s = Settings.from_env({"FEEDBACK_REPO": "you/fb"}, default_folder=tmp_path / "fb")
    assert (s.folder, s.repo) == (tmp_path / "fb", "you/fb")
    assert open_store(Settings(), list(SHAPES)) is None


def test_model_identity(tmp_path):
    snapshot = tmp_path / "hub" / "models--you--animal-cnn" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    assert model_identity(snapshot) == ("you/animal-cnn", "a" * 40)
    local = make_model_folder(tmp_path / "model")
    digest = hashlib.sha256((local / "model.safetensors").read_bytes()).hexdigest()[:16]
    assert model_identity(local) == ("model", f"sha256:{digest}")         # the folder's name, never its path


# --- the push to a Hub dataset ---------------------------------------------------------------------------

def committed(hub: FakeHub) -> list[dict[str, bytes]]:
    """The files of every commit the stand-in received, in order."""
    import base64

    commits = []
    for post in hub.posts():
        if "/commit/" in post["path"]:
            items = [json.loads(line) for line in post["body"].splitlines()]
            commits.append({i["value"]["path"]: base64.b64decode(i["value"]["content"]) for i in items
                            if i["key"] == "file"})
    return commits


def test_corrections_are_pushed_to_a_private_dataset_repo(fake_hub, tmp_path, caplog):
    folder = tmp_path / "feedback"
    with caplog.at_level(logging.INFO, logger="page.feedback"):
        store = open_store(Settings(folder, "you/animal-feedback"), list(SHAPES))
    try:
        assert store.scheduler is not None and "pushed to the Hub dataset you/animal-feedback" in caplog.text
        (create,) = fake_hub.posts("/api/repos/create")
        assert json.loads(create["body"]) == {"name": "animal-feedback", "organization": "you",
                                              "visibility": "private", "type": "dataset"}
        first = store.add(photo(1), "circle", PROBS, "a")
        outlier = store.add(photo(2), NONE, PROBS, "a")
        (folder / ".README.md.tmp-1").write_text("a write cut short")   # never uploaded
        store.scheduler.trigger().result()
        pushed = {k: v for c in committed(fake_hub) for k, v in c.items()}
        assert pushed == {f"circle/{first.sha1}.jpg": first.path.read_bytes(),
                          f"none/{outlier.sha1}.jpg": outlier.path.read_bytes(),
                          "README.md": (folder / "README.md").read_bytes(),
                          f"logs/{store.log_path.name}": store.log_path.read_bytes()}
        commits = [r["path"] for r in fake_hub.posts() if "/commit/" in r["path"]]
        assert commits and set(commits) == {"/api/datasets/you/animal-feedback/commit/main"}

        later = store.add(photo(3, "square"), "square", PROBS, "b")           # the next push: only what changed
        store.scheduler.trigger().result()
        assert set(committed(fake_hub)[-1]) == {f"square/{later.sha1}.jpg", f"logs/{store.log_path.name}"}
        assert all(r["headers"]["authorization"] == "Bearer hf_fake_token_for_tests" for r in fake_hub.posts())
    finally:
        store.scheduler.stop()


def show(scenario: str, hub: FakeHub) -> list[list[str]]:
    """The stand-in's commits, as operations ("+path" added, "-path" deleted), printed for the record (-s)."""
    commits = hub.operations()
    print(f"\n{scenario}: the stand-in Hub received {len(commits)} commits")
    for n, operations in enumerate(commits, 1):
        print(f"  commit {n}: {' '.join(operations)}")
    return commits


def test_the_first_commit_already_has_the_dataset_card(fake_hub, tmp_path):
    """The scheduler pushes as it starts: a folder kept from an earlier run (here without its card) must not
    reach the Hub without the card that makes `load_dataset` read it right."""
    folder = tmp_path / "feedback"
    earlier = store_in(folder).add(photo(1), "circle", PROBS, "a")
    (folder / "README.md").unlink()
    store = open_store(Settings(folder, "you/animal-feedback"), list(SHAPES))
    try:
        store.scheduler.trigger().result()             # queued behind the push the scheduler started with
    finally:
        store.scheduler.stop()
    first = show("a kept folder without its card, pushed as the app starts", fake_hub)[0]
    assert "+README.md" in first and f"+circle/{earlier.sha1}.jpg" in first
    assert committed(fake_hub)[0]["README.md"] == dataset_card(list(SHAPES)).encode()


# Stands for app.main: SIGTERM made an ordinary exit, the store closed on the way out. A handler installed before
# (as a server or a test harness may) must still run.
SIGTERM_SCRIPT = """
import signal, sys, time
from pathlib import Path
from page import shutdown
from page.feedback import Settings, open_store
from imagegen import SHAPES, shape_image

signal.signal(signal.SIGTERM, lambda signum, frame: print("the earlier handler ran", flush=True))
shutdown.exit_on_sigterm()
store = open_store(Settings(Path(sys.argv[1]), "you/animal-feedback", every_minutes=60), list(SHAPES))
try:
    store.scheduler.trigger().result()             # the push the scheduler starts with is over: the next is an hour off
    kept = store.add(shape_image("circle", 64, 1), "circle", {"circle": 1.0}, "visitor")
    print("kept", kept.sha1, flush=True)
    time.sleep(120)
finally:
    store.close()
"""


def test_a_correction_reaches_the_hub_when_the_app_is_stopped_with_sigterm(fake_hub, tmp_path):
    """A Space stops the app with SIGTERM, then wipes its disk: the correction made since the last push must be
    committed on the way out, and the process exit cleanly."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_SCRIPT, str(tmp_path / "feedback")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("kept "), proc.stderr.read() if proc.poll() is not None else line
        before = len(fake_hub.operations())
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "the earlier handler ran" in out
    sha1 = line.split()[1]
    commits = show("one correction, then SIGTERM", fake_hub)
    assert len(commits) == before + 1                   # one more: the last push, on the way out
    assert sorted(commits[-1]) == sorted([f"+circle/{sha1}.jpg", *(f"+logs/{p.name}" for p in
                                                                   log_files(tmp_path / "feedback"))])
    assert fake_hub.repos["datasets/you/animal-feedback"][f"circle/{sha1}.jpg"] == \
        (tmp_path / "feedback" / "circle" / f"{sha1}.jpg").read_bytes()


def test_the_app_pushes_the_last_correction_when_it_is_stopped_with_sigterm(fake_hub, model_dir, tmp_path):
    """The same, through app.main: a real `python app.py` pushing to the stand-in, one correction, SIGTERM."""
    from gradio_client import Client, handle_file
    from test_app import running_app

    folder = tmp_path / "feedback"
    with running_app(model_dir, tmp_path / "app.log", HF_HUB_OFFLINE="0", FEEDBACK_DIR=str(folder),
                     FEEDBACK_REPO="you/animal-feedback", FEEDBACK_EVERY_MINUTES="60") as (proc, url):
        photo(1, "square", 96).save(tmp_path / "square.png")
        assert "kept as *square*" in Client(url, verbose=False).predict(handle_file(str(tmp_path / "square.png")),
                                                                        "square", api_name="/feedback")
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    assert proc.returncode == 0, (tmp_path / "app.log").read_text()
    (kept,) = kept_photos(folder)
    show("the app: one correction, then SIGTERM", fake_hub)
    on_hub = fake_hub.repos["datasets/you/animal-feedback"]
    assert on_hub[kept] == (folder / kept).read_bytes() and on_hub["README.md"] == (folder / "README.md").read_bytes()
    assert {f"logs/{p.name}" for p in log_files(folder)} <= set(on_hub)
    assert "corrections pushed to the Hub dataset you/animal-feedback" in (tmp_path / "app.log").read_text()


def test_closing_the_store_says_what_is_lost_when_the_last_push_fails(fake_hub, tmp_path, caplog):
    store = open_store(Settings(tmp_path / "feedback", "you/animal-feedback", every_minutes=60), list(SHAPES))
    store.scheduler.trigger().result()
    store.add(photo(1), "circle", PROBS, "a")
    fake_hub.refuse["/api/datasets/you/animal-feedback/commit/main"] = (500, {"error": "the Hub is down"})
    with caplog.at_level(logging.INFO, logger="page.feedback"):
        store.close()
    assert "the last push to the Hub dataset you/animal-feedback failed" in caplog.text
    assert f"only in {tmp_path / 'feedback'}" in caplog.text
    commits = len(fake_hub.posts("/commit/main"))
    del fake_hub.refuse["/api/datasets/you/animal-feedback/commit/main"]
    store.scheduler.trigger().result()                  # closed: nothing more is sent
    assert len(fake_hub.posts("/commit/main")) == commits


def photos_on(hub: FakeHub) -> list[str]:
    return sorted(p for p in hub.repos["datasets/you/animal-feedback"] if p.endswith(".jpg"))


def test_the_hub_follows_re_labels_and_undos_across_uploads(fake_hub, tmp_path):
    """CommitScheduler only adds files: a photo re-labelled or undone after a push stayed under its old label on
    the Hub, and `--data hf://datasets/...` trained on both. Each push now deletes what a decision took back."""
    folder = tmp_path / "feedback"
    store = open_store(Settings(folder, "you/animal-feedback", every_minutes=60, per_minute=100), list(SHAPES))
    push = lambda: store.scheduler.trigger().result()   # noqa: E731
    try:
        push()
        x = store.add(photo(1), "circle", PROBS, "a")
        push()
        relabel = store.add(photo(1), "square", PROBS, "b")
        push()
        assert photos_on(fake_hub) == [f"square/{x.sha1}.jpg"]
        store.undo(relabel)                                     # back under circle, with its old time
        push()
        assert photos_on(fake_hub) == [f"circle/{x.sha1}.jpg"]
        store.add(photo(1), "square", PROBS, "c")              # two re-labels between pushes: one commit
        store.add(photo(1), "triangle", PROBS, "d")
        push()
        assert photos_on(fake_hub) == [f"triangle/{x.sha1}.jpg"]
        y = store.add(photo(2), "circle", PROBS, "a")
        push()
        store.undo(y)                                           # stored by the undone correction: gone
        z = store.add(photo(3), NONE, PROBS, "a")               # undone before any push: never on the Hub
        store.undo(z)
        push()
        push()                                                  # nothing left to do: no commit
    finally:
        store.scheduler.stop()
    commits = show("re-labels and undos across uploads", fake_hub)
    log = f"+logs/{store.log_path.name}"
    assert commits == [["+README.md"], [f"+circle/{x.sha1}.jpg", log], [log, f"+square/{x.sha1}.jpg",
                       f"-circle/{x.sha1}.jpg"], [f"+circle/{x.sha1}.jpg", log, f"-square/{x.sha1}.jpg"],
                       [log, f"+triangle/{x.sha1}.jpg", f"-circle/{x.sha1}.jpg"], [f"+circle/{y.sha1}.jpg", log],
                       [log, f"-circle/{y.sha1}.jpg"]]
    assert photos_on(fake_hub) == kept_photos(folder) == [f"triangle/{x.sha1}.jpg"]
    hub = fake_hub.repos["datasets/you/animal-feedback"]
    assert all(hub[p] == (folder / p).read_bytes() for p in hub)


def test_a_re_label_after_a_restart_on_a_wiped_disk_replaces_the_copy_an_earlier_run_pushed(fake_hub, tmp_path):
    """A Space's disk is new at every start: what an earlier run kept is known from the Hub's listing alone."""
    first = open_store(Settings(tmp_path / "run-1", "you/animal-feedback", every_minutes=60), list(SHAPES))
    x = first.add(photo(1), "circle", PROBS, "a")
    y = first.add(photo(2), "triangle", PROBS, "a")
    first.close()
    second = open_store(Settings(tmp_path / "run-2", "you/animal-feedback", every_minutes=60), list(SHAPES))
    try:
        again = second.add(photo(1), "square", PROBS, "b")
        assert again.stored                                     # this run's folder never held it
        second.scheduler.trigger().result()
    finally:
        second.scheduler.stop()
    show("a re-label after a restart on a wiped disk", fake_hub)
    assert fake_hub.operations()[-1][-1] == f"-circle/{x.sha1}.jpg"
    # the photo the second run never saw stays, as one the rotation deleted would
    assert photos_on(fake_hub) == [f"square/{x.sha1}.jpg", f"triangle/{y.sha1}.jpg"]


def test_a_commit_the_hub_refuses_has_the_repo_listed_again(fake_hub, tmp_path):
    """Someone deleted the old copy on the Hub meanwhile: the Hub refuses to delete it again, once."""
    from huggingface_hub.errors import HfHubHTTPError

    store = open_store(Settings(tmp_path / "feedback", "you/animal-feedback", every_minutes=60), list(SHAPES))
    try:
        x = store.add(photo(1), "circle", PROBS, "a")
        store.scheduler.trigger().result()
        del fake_hub.repos["datasets/you/animal-feedback"][f"circle/{x.sha1}.jpg"]
        store.add(photo(1), "square", PROBS, "b")
        with pytest.raises(HfHubHTTPError, match="404"):
            store.scheduler.trigger().result()
        store.scheduler.trigger().result()
    finally:
        store.scheduler.stop()
    assert photos_on(fake_hub) == [f"square/{x.sha1}.jpg"]


def test_closing_the_store_waits_for_the_last_push_no_longer_than_it_is_given(fake_hub, tmp_path, caplog):
    store = open_store(Settings(tmp_path / "feedback", "you/animal-feedback", every_minutes=60), list(SHAPES))
    store.scheduler.trigger().result()
    store.add(photo(1), "circle", PROBS, "a")
    with caplog.at_level(logging.INFO, logger="page.feedback"):
        store.close(timeout=0)                          # the process would end here, killed or not
    assert "did not finish within 0 s" in caplog.text and "may be lost" in caplog.text
    store.scheduler.trigger().result()                  # queued behind the push still on its way


def test_without_a_token_corrections_stay_on_disk(hf_home, tmp_path, caplog, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")   # must not even be tried
    with caplog.at_level(logging.INFO, logger="page.feedback"):
        store = open_store(Settings(tmp_path / "feedback", "you/animal-feedback"), list(SHAPES))
    assert store.scheduler is None
    assert "no Hugging Face token" in caplog.text and "corrections stay in" in caplog.text
    assert store.add(photo(1), "circle", PROBS, "a").path.is_file()


def test_an_unreachable_hub_leaves_corrections_on_disk(closed_port_endpoint, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="page.feedback"):
        store = open_store(Settings(tmp_path / "feedback", "you/animal-feedback"), list(SHAPES))
    assert store.scheduler is None
    assert "cannot use the Hub dataset you/animal-feedback" in caplog.text and "not pushed" in caplog.text
    assert store.add(photo(1), "circle", PROBS, "a").path.is_file()


# --- in the app ----------------------------------------------------------------------------------------------

def test_the_page_says_corrections_are_kept_and_offers_every_label_and_none(model_dir, tmp_path):
    import app

    clf = app.Classifier.from_pretrained(model_dir)
    config = app.build_demo(clf, tmp_path, feedback=store_in(tmp_path / "feedback")).get_config_file()
    texts = " ".join(str(c["props"].get("value")) for c in config["components"] if c["type"] == "markdown")
    assert "Corrections are kept to improve the model" in texts and "without its metadata" in texts
    (dropdown,) = [c for c in config["components"] if c["type"] == "dropdown"]
    assert [list(c) for c in dropdown["props"]["choices"]] == [[s, s] for s in SHAPES] + [["none of these", "none"]]
    assert dropdown["props"].get("value") is None                     # nothing picked until the visitor does
    off = app.build_demo(clf, tmp_path).get_config_file()
    assert not [c for c in off["components"] if c["type"] == "dropdown"]
    assert "Corrections are kept" not in json.dumps(off["components"], default=str)   # a State holds a callback


@pytest.fixture(scope="module")
def feedback_app(model_dir, tmp_path_factory):
    from test_app import serve_app

    root = tmp_path_factory.mktemp("feedback-app")
    with serve_app(model_dir, root / "app.log", FEEDBACK_DIR=str(root / "feedback"), FEEDBACK_PER_MINUTE="4") as url:
        yield url, root / "feedback", root / "app.log"


def test_the_feedback_api_keeps_refuses_and_limits(feedback_app, model_dir, tmp_path):
    from gradio_client import Client, handle_file

    url, folder, log_file = feedback_app
    client = Client(url, verbose=False)
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(endpoints) == {"/predict", "/predict_batch", "/feedback"}
    files = []
    for i, kind in enumerate(("circle", "square", "triangle")):
        files.append(tmp_path / f"{kind}.png")
        photo(i, kind, 96).save(files[-1])

    assert client.predict(handle_file(str(files[0])), "square", api_name="/feedback") == \
        "Thank you! The photo is kept as *square*, to improve the model."
    assert client.predict(handle_file(str(files[0])), "square", api_name="/feedback") == \
        "Thank you! This photo was already kept."
    assert client.predict(handle_file(str(files[0])), "circle", api_name="/feedback") == \
        "Thank you! The photo is kept as *circle*, to improve the model."           # the latest label counts
    with pytest.raises(Exception, match="'zebra' is not one of this model's labels"):
        client.predict(handle_file(str(files[1])), "zebra", api_name="/feedback")
    with pytest.raises(Exception) as refused:                         # quoted short, on one line, as text
        client.predict(handle_file(str(files[1])), "<b>zebra</b>\n" + "z" * 100_000, api_name="/feedback")
    assert "'&lt;b&gt;zebra&lt;/b&gt;?zzz" in str(refused.value) and len(str(refused.value)) < 300
    assert "none of these" in client.predict(handle_file(str(files[1])), "none", api_name="/feedback")
    with pytest.raises(Exception, match="please wait a minute"):      # the fifth correction within a minute
        client.predict(handle_file(str(files[2])), "triangle", api_name="/feedback")

    kept = kept_photos(folder)
    assert [Path(p).parent.name for p in kept] == ["circle", "none"]
    lines = log_lines(folder)
    assert [line["label"] for line in lines] == ["square", "square", "circle", "none"]
    model, revision = model_identity(model_dir)
    assert all(line["model"] == model and line["revision"] == revision for line in lines)
    assert all(len(line["answer"]) == 3 and {a["label"] for a in line["answer"]} == set(SHAPES) for line in lines)
    assert "feedback on: corrections are kept in" in log_file.read_text()
