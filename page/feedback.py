"""Visitors' corrections, kept in the layout `python -m train --data` reads, so the model can learn from them.

The folder (locally, and in a Hugging Face dataset repo when FEEDBACK_REPO is set):
    <label>/<sha1>.jpg      the photo, re-encoded from its pixels: JPEG, at most 512 px, no metadata at all
                            (EXIF, GPS, ICC profile, comments); sha1 of the stored file, so a photo is kept once,
                            under the label of its latest correction (on the Hub too: a push deletes the copy a
                            re-label or an undo took back, so `--data hf://datasets/...` trains on one label)
    none/<sha1>.jpg         photos that show none of the model's labels (never a class in training: see
                            cnn.data.OUTLIER_FOLDER)
    logs/<time>-<uuid>.jsonl  one file per app run (so a restart never replaces an earlier run's file on the
                            Hub, as huggingface_hub's CommitScheduler guide advises), one line per correction:
                            time, model (Hub id and revision, or the folder's name), the top-3 answer, the label
                            chosen, the photo's sha1 (a photo corrected twice has two lines); a visitor's undo
                            adds a line {"time", "undo": sha1}. Folders from before hold one corrections.jsonl instead.
    README.md               the dataset card: `datasets.load_dataset(repo)` gives the photos with the model's
                            labels in the model's order; `load_dataset(repo, "none")` the none/ photos

The operator's settings, read from the environment by `Settings.from_env` (the app does it):
    FEEDBACK_DIR=path           keep corrections here (default feedback/ beside the app when only FEEDBACK_REPO is set)
    FEEDBACK_REPO=user/name     push the folder to this Hub dataset repo (created private if missing) with
                                huggingface_hub's CommitScheduler, every FEEDBACK_EVERY_MINUTES (default 5), and
                                once more when the app stops (`FeedbackStore.close`: a Space's disk is wiped
                                on every restart, so what is not on the Hub by then is lost)
    FEEDBACK_MAX_MB=1000        the folder's cap: once reached, each new photo makes room by deleting the oldest
                                ones (oldest-first rotation; the log says so once). Copies already pushed to the
                                Hub stay there (the rotation is no decision about a photo), so nothing pushed is
                                lost, and a flood of corrections never locks later visitors out
    FEEDBACK_PER_MINUTE=10      corrections one visitor (one network address: page/ratelimit.py) may send per minute
    FEEDBACK_ALL_PER_MINUTE=60  corrections all visitors together may send per minute

Gradio's flagging callbacks (CSVLogger) keep the raw upload, metadata included, in a CSV table that training
cannot read, so the store is written here; the upload to the Hub is huggingface_hub's own CommitScheduler
(`CorrectionsScheduler`, started only once the store has written its card, so even the first commit has it).
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from huggingface_hub import CommitScheduler
from PIL import Image

from cnn.data import LOG_FOLDER, OUTLIER_FOLDER
from cnn.io import atomic_write
from .ratelimit import RateLimited, RateLimiter
from .uploads import printable

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

log = logging.getLogger(__name__)

NONE = OUTLIER_FOLDER           # the label for "none of these"
LEGACY_LOG_NAME = "corrections.jsonl"   # the single log of folders written before logs/
CARD_NAME = "README.md"
MAX_SIDE = 512                  # stored photos are at most this many pixels on their long side
JPEG_QUALITY = 90
TOP_K = 3                       # how much of the model's answer each log line keeps
# How long the app's end waits for its last push: a Space kills the app 10 s after SIGTERM unless its settings
# give it longer (Hugging Face's Gradio team, github.com/AnswerDotAI/fasthtml-hf/pull/3).
FINAL_PUSH_SECONDS = 8


class FeedbackRefused(ValueError):
    """A correction that is not kept; the message is meant for the visitor."""


@dataclass(frozen=True)
class Settings:
    """Where corrections go and the limits on them (defaults here, values from the environment)."""
    folder: Path | None = None
    repo: str | None = None
    max_mb: float = 1000
    per_minute: int = 10
    all_per_minute: int = 60
    every_minutes: float = 5

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, default_folder: Path = Path("feedback")) -> "Settings":
        repo = env.get("FEEDBACK_REPO") or None
        folder = env.get("FEEDBACK_DIR") or (default_folder if repo else None)
        d = cls()
        return cls(Path(folder) if folder else None, repo, float(env.get("FEEDBACK_MAX_MB", d.max_mb)),
                   int(env.get("FEEDBACK_PER_MINUTE", d.per_minute)),
                   int(env.get("FEEDBACK_ALL_PER_MINUTE", d.all_per_minute)),
                   float(env.get("FEEDBACK_EVERY_MINUTES", d.every_minutes)))


@dataclass(frozen=True)
class Correction:
    label: str
    sha1: str
    path: Path
    stored: bool                # False when the same photo was already kept
    moved_from: str | None = None   # the label it was kept under, when this correction moved it


def encode_photo(image: Image.Image) -> bytes:
    """The photo as a fresh JPEG of at most MAX_SIDE px, built from its pixels alone, so no EXIF, GPS,
    ICC profile or comment of the upload survives (`image` is upright RGB, as cnn.data.load_image gives)."""
    pixels = Image.frombytes("RGB", image.size, image.convert("RGB").tobytes())   # a new image: empty .info
    pixels.thumbnail((MAX_SIDE, MAX_SIDE), Image.LANCZOS)
    out = io.BytesIO()
    pixels.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    return out.getvalue()


class FeedbackStore:
    """Keeps corrections in `folder`; safe for the app's concurrent requests (one lock around every write,
    photos written to a temporary file and renamed, log lines appended whole)."""

    def __init__(self, folder: str | os.PathLike, labels: list[str], model: str = "", revision: str = "",
                 max_mb: float = Settings.max_mb, per_minute: int = Settings.per_minute,
                 all_per_minute: int = Settings.all_per_minute, clock: Callable[[], float] = time.monotonic):
        for reserved in (NONE, LOG_FOLDER):
            if reserved in labels:
                raise ValueError(f"a model label may not be {reserved!r}: that folder is not a class here")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.labels, self.model, self.revision = list(labels), model, revision
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H-%M-%S")
        self.log_path = self.folder / LOG_FOLDER / f"{stamp}-{uuid.uuid4().hex}.jsonl"   # this run's own log
        self.max_bytes = int(max_mb * 2**20)
        self.limiter = RateLimiter(per_minute, all_per_minute, "corrections", clock)
        self.scheduler: CorrectionsScheduler | None = None   # pushing the folder to a Hub dataset: see start_push
        # Writes and pushes hold this lock (as huggingface_hub documents), so a push never sees half a correction.
        self.lock = threading.Lock()
        self._told: set[bool] = set()           # which of _tell_operator's lines were logged
        self._withdrawn: set[str] = set()       # <label>/<sha1>.jpg a re-label or an undo took back: see stale()
        write_card(self.folder, self.labels, model)
        self._scan()

    def _scan(self) -> None:
        """What the folder holds: its size, and sha1 → label of every photo, oldest first (the rotation's order)."""
        files = [(path, path.stat()) for path in self.folder.rglob("*") if path.is_file()]
        self._bytes = sum(st.st_size for _, st in files)
        photos = sorted((st.st_mtime_ns, path.stem, path.parent.name) for path, st in files
                        if path.suffix == ".jpg" and path.parent.parent == self.folder)
        self._kept: dict[str, str] = {sha1: label for _, sha1, label in photos}

    @property
    def choices(self) -> list[str]:
        return self.labels + [NONE]

    @property
    def used_mb(self) -> float:
        return self._bytes / 2**20

    def add(self, image: Image.Image, label: str, probs: Mapping[str, float], visitor: str) -> Correction:
        """Keep `image` under `label` (one of the model's labels, or NONE; a photo kept before moves to it) and log
        the correction with the model's answer `probs`. Raises FeedbackRefused for a bad label or a visitor
        (or everyone) over the rate limit."""
        if label not in self.choices:
            raise FeedbackRefused(f"{printable(label, 40)!r} is not one of this model's labels "
                                  f"({', '.join(self.labels)}) or {NONE!r}")
        try:
            self.limiter.take(visitor)
        except RateLimited as e:
            raise FeedbackRefused("Thank you, but many corrections are arriving just now: please try again in a "
                                  "minute." if e.everyone else "Thank you, but that is many corrections in a short "
                                  "time: please wait a minute before sending more.") from None
        photo = encode_photo(image)
        sha1 = hashlib.sha1(photo).hexdigest()
        top = sorted(probs.items(), key=lambda item: item[1], reverse=True)[:TOP_K]
        line = json.dumps({"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": self.model,
                           "revision": self.revision, "answer": [{"label": k, "p": round(float(p), 4)} for k, p in top],
                           "label": label, "sha1": sha1}) + "\n"
        with self.lock:
            previous = self._kept.get(sha1)
            size = len(line) + (len(photo) if previous is None else 0)
            self._make_room(size, keep=sha1)
            path = self.folder / label / f"{sha1}.jpg"
            path.parent.mkdir(exist_ok=True)
            if previous is None:
                with atomic_write(path) as tmp:
                    tmp.write_bytes(photo)
            elif previous != label:   # the latest correction is the photo's label
                os.replace(self.folder / previous / f"{sha1}.jpg", path)
                self._withdrawn.add(f"{previous}/{sha1}.jpg")
            self._withdrawn.discard(f"{label}/{sha1}.jpg")
            self._kept[sha1] = label
            self._append_log(line)
            self._bytes += size
        log.info("correction: %s (model said %s at %.0f%%)%s", label, top[0][0], 100 * top[0][1],
                 "" if previous is None else f", photo already kept under {previous}")
        return Correction(label, sha1, path, previous is None, previous if previous not in (None, label) else None)

    def undo(self, correction: Correction) -> None:
        """Take back a visitor's mis-click: the photo goes if this correction stored it, goes back under its
        earlier label if this correction moved it (a photo kept earlier stays), and the log says which correction
        was undone (the log is only ever appended to)."""
        line = json.dumps({"time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                           "undo": correction.sha1}) + "\n"
        with self.lock:
            current = self._kept.get(correction.sha1) == correction.label and correction.path.is_file()
            if current and correction.stored:
                self._bytes -= correction.path.stat().st_size
                correction.path.unlink()
                del self._kept[correction.sha1]
            elif current and correction.moved_from:
                back = self.folder / correction.moved_from / correction.path.name
                back.parent.mkdir(exist_ok=True)
                os.replace(correction.path, back)
                self._kept[correction.sha1] = correction.moved_from
                self._withdrawn.discard(f"{correction.moved_from}/{correction.path.name}")
            if current and (correction.stored or correction.moved_from):
                self._withdrawn.add(f"{correction.label}/{correction.path.name}")
            self._append_log(line)
            self._bytes += len(line)
        log.info("correction undone: %s", correction.label)

    def stale(self, on_hub: Iterable[str]) -> list[str]:
        """The photos among `on_hub` (paths in the Hub repo) that the latest decisions contradict: a copy that a
        re-label or an undo took back, or one under another label than the photo is kept under now (kept by an
        earlier run, whose folder the Space wiped). A photo the rotation deleted here is no decision: its copy
        stays. Call under the lock."""
        def contradicted(path: str) -> bool:
            label, _, name = path.partition("/")
            sha1, jpg = os.path.splitext(name)
            if label not in self.choices or jpg != ".jpg" or "/" in name:
                return False
            return path in self._withdrawn or self._kept.get(sha1, label) != label
        return sorted(filter(contradicted, on_hub))

    def close(self, timeout: float = FINAL_PUSH_SECONDS) -> None:
        """The app's end (SIGTERM, Ctrl-C, Gradio closing): push what the Hub lacks now, waiting at most `timeout`
        seconds, then stop pushing. CommitScheduler's own last push runs only at a normal interpreter exit, and
        a Space's disk does not outlive the app."""
        if self.scheduler is None:
            return
        try:
            self.scheduler.trigger().result(timeout)
        except TimeoutError:
            log.error("the last push to the Hub dataset %s did not finish within %g s: corrections kept since the "
                      "push before may be lost", self.scheduler.repo_id, timeout)
        except Exception as e:  # noqa: BLE001 - the app is ending: say what is lost, and end
            log.error("the last push to the Hub dataset %s failed (%s): corrections kept since the push before "
                      "are only in %s", self.scheduler.repo_id, " ".join(str(e).split()), self.folder)
        else:
            log.info("corrections pushed to the Hub dataset %s", self.scheduler.repo_id)
        finally:
            self.scheduler.stop()

    def _append_log(self, line: str) -> None:
        """One write of a whole line, synced: a crash or a push never sees half of it (call under the lock)."""
        self.log_path.parent.mkdir(exist_ok=True)
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())

    def _make_room(self, size: int, keep: str) -> None:
        """Delete the oldest photos (never `keep`) until `size` more bytes fit under the cap. Only when nothing
        is left to delete (the log alone fills the cap) is the correction refused."""
        rescanned = False
        while self._bytes + size > self.max_bytes:
            oldest = next((sha1 for sha1 in self._kept if sha1 != keep), None)
            if oldest is None and not rescanned:   # the operator may have moved files meanwhile
                self._scan()
                rescanned = True
                continue
            self._tell_operator(full=oldest is None)
            if oldest is None:
                raise FeedbackRefused("Thank you! Corrections cannot be kept at the moment (the storage is full).")
            path = self.folder / self._kept.pop(oldest) / f"{oldest}.jpg"
            with contextlib.suppress(FileNotFoundError):
                self._bytes -= path.stat().st_size
                path.unlink()

    def _tell_operator(self, full: bool) -> None:
        """One log line when the rotation starts, one when even that cannot make room."""
        if full not in self._told:
            self._told.add(full)
            if full:
                log.error("feedback folder %s: its log alone fills the cap (FEEDBACK_MAX_MB=%g): corrections are "
                          "refused until the log is moved away or the cap is raised", self.folder,
                          self.max_bytes / 2**20)
            else:
                log.warning("feedback folder %s reached its cap (FEEDBACK_MAX_MB=%g): from now on the oldest photos "
                            "are deleted to make room for new ones%s", self.folder, self.max_bytes / 2**20,
                            " (their copies on the Hub stay)" if self.scheduler else "")


def model_identity(folder: str | os.PathLike) -> tuple[str, str]:
    """(model id, revision) for the log: a Hub snapshot's repo id and commit (the HF cache layout
    models--user--name/snapshots/<commit>), else the folder's name (never its path: the log is published)
    and the start of its weights' sha256."""
    folder = Path(folder).resolve()
    storage = folder.parent.parent.name
    if folder.parent.name == "snapshots" and storage.startswith("models--"):
        return storage[len("models--"):].replace("--", "/"), folder.name
    weights = folder / "model.safetensors"
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:16] if weights.exists() else ""
    return folder.name, f"sha256:{digest}"


def dataset_card(labels: list[str], model: str = "") -> str:
    """The folder's README.md: YAML `configs` that make `datasets.load_dataset` read the photos of the
    model's labels with a ClassLabel in the model's order (folder inference would sort the folders present,
    make none/ a class, drop the label column for one class, and read a lone .jsonl as the dataset),
    and none/ as a separate image-only config."""
    from huggingface_hub import DatasetCardData

    def features(config: str) -> list[dict]:     # a new list each time: shared objects would become YAML aliases
        image = [{"name": "image", "dtype": "image"}]
        names = {str(i): name for i, name in enumerate(labels)}
        return image if config == NONE else image + [{"name": "label", "dtype": {"class_label": {"names": names}}}]

    paths = {"default": [f"{glob.escape(label)}/*.jpg" for label in labels], NONE: [f"{NONE}/*.jpg"]}
    configs = [{"config_name": name, "drop_labels": name == NONE, "features": features(name),
                "data_files": [{"split": "train", "path": paths[name]}]} for name in paths]
    data = DatasetCardData(task_categories=["image-classification"], configs=configs,
                           dataset_info=[{"config_name": name, "features": features(name)} for name in paths])
    source = f" of [{model}](https://huggingface.co/{model})" if model.count("/") == 1 else ""
    return f"""---
{data.to_yaml()}
---

# Corrections sent by visitors of an image classifier

Photos that visitors of the demo{source} labelled, each under the label they chose, written by
`page.feedback`. Every photo is re-encoded from its pixels (JPEG, at most {MAX_SIDE} px, no EXIF, GPS or ICC
profile) and named by its sha1, so it is kept once.

- `<label>/*.jpg`: a photo of that label. `datasets.load_dataset(repo)` gives `image` and `label`, a ClassLabel
  with the model's labels in the model's order ({", ".join(labels)}), so label ids mean what the model's outputs
  mean.
- `{NONE}/*.jpg`: a photo that shows none of the labels. It is never a class: `load_dataset(repo)` leaves it out,
  `load_dataset(repo, "{NONE}")` gives these photos alone (image only), and `python -m train --data
  hf://datasets/<repo>` uses them as outlier photos (the model learns to be unsure on them).
- `{LOG_FOLDER}/<time>-<uuid>.jsonl`: one file per run of the app, one line per correction (time, model id and
  revision, the model's top-{TOP_K} answer, the label chosen, the photo's sha1); older folders hold one
  `{LEGACY_LOG_NAME}`. Read them all with
  `load_dataset("json", data_files=["hf://datasets/<repo>/{LEGACY_LOG_NAME}", "hf://datasets/<repo>/{LOG_FOLDER}/*.jsonl"])`
  (leave out the first where there is no `{LEGACY_LOG_NAME}`).
"""


def write_card(folder: Path, labels: list[str], model: str = "") -> None:
    """(Re)write the dataset card when it is missing or names other labels (a new model on an old folder)."""
    card = dataset_card(labels, model)
    path = folder / CARD_NAME
    if not path.exists() or path.read_text(encoding="utf-8") != card:
        with atomic_write(path) as tmp:
            tmp.write_text(card, encoding="utf-8")


class CorrectionsScheduler(CommitScheduler):
    """huggingface_hub's CommitScheduler for a FeedbackStore's folder, keeping the Hub to the latest decisions:
    CommitScheduler only adds files, so a photo re-labelled or undone after a push stayed under its old label
    there; each commit here also deletes what FeedbackStore.stale names, and re-adds a file the Hub lacks (a
    photo an undo moved back, whose time has not changed). Its pushes hold the store's lock, so the store
    exists (its dataset card written) before the first push, which starts with the scheduler."""

    def __init__(self, store: FeedbackStore, **kwargs: Any):
        self.store = store
        self.on_hub: set[str] | None = None   # the repo's files: listed at the first push, then kept by our commits
        super().__init__(folder_path=store.folder, **kwargs)

    def push_to_hub(self) -> CommitInfo | None:
        """Commit the files added or changed since the last push, and the deletions the store asks for."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete
        from huggingface_hub._commit_scheduler import PartialFileIO   # the library's capped read of a growing file
        from huggingface_hub.utils import filter_repo_objects

        if self.on_hub is None:
            self.on_hub = set(self.api.list_repo_files(self.repo_id, repo_type=self.repo_type, revision=self.revision))
        with self.store.lock:
            files = {path.relative_to(self.folder_path).as_posix(): path
                     for path in sorted(self.folder_path.rglob("*")) if path.is_file()}
            changed = [(rel, files[rel], files[rel].stat()) for rel in filter_repo_objects(
                files, allow_patterns=self.allow_patterns, ignore_patterns=self.ignore_patterns)]
            changed = [(rel, path, st) for rel, path, st in changed
                       if self.last_uploaded.get(path) != st.st_mtime or rel not in self.on_hub]
            stale = self.store.stale(self.on_hub)
        if not changed and not stale:
            return None
        operations = [CommitOperationAdd(path_or_fileobj=PartialFileIO(path, size_limit=st.st_size), path_in_repo=rel)
                      for rel, path, st in changed] + [CommitOperationDelete(path_in_repo=rel) for rel in stale]
        try:
            info = self.api.create_commit(repo_id=self.repo_id, repo_type=self.repo_type, operations=operations,
                                          commit_message=f"Corrections: {len(changed)} files added or updated, "
                                                         f"{len(stale)} photos taken back", revision=self.revision)
        except Exception:
            self.on_hub = None   # listed again next time: the repo may have changed (a file deleted on the Hub)
            raise
        for rel, path, st in changed:
            self.last_uploaded[path] = st.st_mtime
            self.on_hub.add(rel)
        self.on_hub.difference_update(stale)
        return info


def start_push(settings: Settings, store: FeedbackStore) -> CorrectionsScheduler | None:
    """A CorrectionsScheduler pushing the store's folder to settings.repo (a private dataset repo is created if
    missing) now and every settings.every_minutes, in the background. None, with the reason in the log,
    when there is no token or the Hub cannot be reached: the corrections then stay on disk only."""
    import httpx2  # huggingface_hub 2.x's HTTP client: its connection errors are not OSErrors
    from huggingface_hub import get_token
    from huggingface_hub.errors import HfHubHTTPError

    if not get_token():
        log.warning("FEEDBACK_REPO=%s but no Hugging Face token (set HF_TOKEN, e.g. as a Space secret): "
                    "corrections stay in %s and are not pushed", settings.repo, settings.folder)
        return None
    try:
        scheduler = CorrectionsScheduler(store, repo_id=settings.repo, repo_type="dataset",
                                         every=settings.every_minutes, private=True, ignore_patterns=[".*", "*/.*"])
    except (HfHubHTTPError, httpx2.HTTPError, OSError, ValueError) as e:
        log.error("cannot use the Hub dataset %s (%s): corrections stay in %s and are not pushed",
                  settings.repo, " ".join(str(e).split()), settings.folder)
        return None
    log.info("corrections in %s are pushed to the Hub dataset %s every %g minutes", settings.folder,
             settings.repo, settings.every_minutes)
    return scheduler


def open_store(settings: Settings, labels: list[str], model_folder: str | os.PathLike | None = None
               ) -> FeedbackStore | None:
    """The store the settings ask for, pushing to the Hub when they name a repo; None when feedback is off.
    Call its close() when the app stops, so the last corrections reach the Hub."""
    if settings.folder is None:
        return None
    model, revision = model_identity(model_folder) if model_folder else ("", "")
    store = FeedbackStore(settings.folder, labels, model, revision, settings.max_mb, settings.per_minute,
                          settings.all_per_minute)
    if settings.repo:
        store.scheduler = start_push(settings, store)
    log.info("feedback on: corrections are kept in %s (%.1f MB used of %g)", store.folder, store.used_mb,
             settings.max_mb)
    return store
