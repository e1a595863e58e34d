"""A hostile visitor against a running `python app.py`, through Gradio's REST API: no server file is read through
a forged file reference, and the rate limits hold on the visitor's address (fresh sessions and forged
X-Forwarded-For headers do not dodge them; a trusted proxy's forwarded address does count)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("gradio")
httpx = pytest.importorskip("httpx")

from imagegen import shape_image  # noqa: E402
from test_app import serve_app  # noqa: E402
from test_feedback import kept_photos, log_files, log_lines  # noqa: E402

META = {"_type": "gradio.FileData"}
NOT_UPLOADED = "That file was not uploaded here. Please upload the photo itself."


def rest(url: str, name: str, data: list, headers: dict[str, str] | None = None) -> tuple[str, Any]:
    """One call of `/gradio_api/call/<name>` (a fresh session each time): its last event and that event's data
    (for an error, the message)."""
    with httpx.Client(base_url=url, timeout=120) as http:
        posted = http.post(f"gradio_api/call/{name}", json={"data": data}, headers=headers or {})
        posted.raise_for_status()
        stream = http.get(f"gradio_api/call/{name}/{posted.json()['event_id']}").text
    events = [line[len("event: "):] for line in stream.splitlines() if line.startswith("event: ")]
    payloads = [line[len("data: "):] for line in stream.splitlines() if line.startswith("data: ")]
    data = json.loads(payloads[-1]) if payloads else None
    return events[-1], data["error"] if events[-1] == "error" and isinstance(data, dict) else data


def upload(url: str, path: Path) -> dict[str, Any]:
    """The file sent to `/gradio_api/upload` as a browser does; the reference to pass on (meta included)."""
    with httpx.Client(base_url=url, timeout=60) as http:
        response = http.post("gradio_api/upload", files={"files": (path.name, path.read_bytes())})
        response.raise_for_status()
    (server_path,) = response.json()
    return {"path": server_path, "orig_name": path.name, "meta": META}


@pytest.fixture(scope="module")
def secrets(tmp_path_factory) -> dict[str, Path]:
    """Files on the server's disk that no visitor uploaded: a photo, a text file, a path with nothing there."""
    d = tmp_path_factory.mktemp("server-files")
    shape_image("circle", 64, 5).save(d / "private.png")
    (d / "notes.txt").write_text("not an image")
    return {"photo": d / "private.png", "text": d / "notes.txt", "missing": d / "missing.png"}


@pytest.fixture(scope="module")
def plain_app(model_dir, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """The app as run anywhere but on a Space: no proxy is trusted."""
    root = tmp_path_factory.mktemp("plain-app")
    with serve_app(model_dir, root / "app.log", FEEDBACK_DIR=str(root / "feedback"), FEEDBACK_PER_MINUTE="5",
                   timeout=300) as url:
        yield url, root


@pytest.fixture(scope="module")
def space_app(model_dir, tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """The app as on a Space (SPACE_ID set): the proxy, here on loopback, forwards each visitor's address."""
    root = tmp_path_factory.mktemp("space-app")
    with serve_app(model_dir, root / "app.log", SPACE_ID="tests/animals", FEEDBACK_DIR=str(root / "feedback"),
                   FEEDBACK_PER_MINUTE="5", FEEDBACK_ALL_PER_MINUTE="12", BATCH_PER_MINUTE="3",
                   BATCH_ALL_PER_MINUTE="5", timeout=300) as url:
        yield url, root


def test_a_server_file_named_without_meta_is_refused_on_every_endpoint(plain_app, secrets):
    url, root = plain_app
    for kind, path in secrets.items():
        reference = {"path": str(path)}
        assert rest(url, "predict", [reference]) == ("error", NOT_UPLOADED), kind   # one message, whatever is there
        assert rest(url, "feedback", [reference, "circle"]) == ("error", NOT_UPLOADED), kind
        assert rest(url, "predict_batch", [[reference]]) == ("error", None), kind   # gr.File checks meta itself
        # with meta, Gradio's own check refuses it everywhere
        assert rest(url, "predict", [{**reference, "meta": META}]) == ("error", None), kind
        assert rest(url, "predict_batch", [[{**reference, "meta": META}]]) == ("error", None), kind
    assert not kept_photos(root / "feedback") and not log_files(root / "feedback")
    forged = f"{secrets['photo']}\n1999-01-01 00:00:00 INFO app: forged line"
    assert rest(url, "predict", [{"path": forged}]) == ("error", NOT_UPLOADED)
    log = (root / "app.log").read_text().splitlines()
    assert sum("refused a file reference" in line for line in log) == 7           # one line each, no traceback
    assert not any(line.startswith("1999-01-01") for line in log) and NOT_UPLOADED not in "".join(log)
    # what the visitor did upload is still answered
    photo = upload(url, secrets["photo"])
    assert rest(url, "predict", [photo])[0] == "complete"
    assert rest(url, "predict_batch", [[photo]])[0] == "complete"


def test_fresh_sessions_and_forged_forwarded_addresses_do_not_dodge_the_corrections_limit(plain_app, secrets):
    url, root = plain_app
    photo = upload(url, secrets["photo"])
    answers = [rest(url, "feedback", [photo, "circle"]) for _ in range(15)]           # a new session every call
    answers += [rest(url, "feedback", [photo, "square"], {"X-Forwarded-For": f"198.51.100.{i}"}) for i in range(15)]
    accepted = [data for event, data in answers if event == "complete"]
    assert len(accepted) == 5 and [event for event, _ in answers[:5]] == ["complete"] * 5
    assert all(event == "error" and "please wait a minute" in data for event, data in answers[5:])
    assert len(log_lines(root / "feedback")) == 5


def test_on_a_space_the_proxys_forwarded_address_is_the_visitor_and_everyone_shares_a_cap(space_app, secrets):
    url, root = space_app
    photo = upload(url, secrets["photo"])

    def correct(address: str, forged: str = "") -> str:
        event, data = rest(url, "feedback", [photo, "circle"], {"X-Forwarded-For": f"{forged}{address}"})
        return "ok" if event == "complete" else "visitor" if "wait a minute" in data else "everyone"

    # what the client writes before the proxy's entry is never read: the same visitor, whatever it claims
    assert [correct("203.0.113.1", f"10.0.0.{i}, 198.51.100.{i}, ") for i in range(7)] == ["ok"] * 5 + ["visitor"] * 2
    assert [correct("203.0.113.2") for _ in range(5)] == ["ok"] * 5   # another visitor has their own allowance
    assert [correct(f"203.0.113.{i}") for i in range(3, 7)] == ["ok", "ok", "everyone", "everyone"]   # 12 in all

    def classify(address: str) -> str:
        event, data = rest(url, "predict_batch", [[photo]], {"X-Forwarded-For": address})
        return "ok" if event == "complete" else "visitor" if "wait a minute" in data else "everyone"

    assert [classify("203.0.113.1") for _ in range(4)] == ["ok"] * 3 + ["visitor"]
    assert [classify("203.0.113.2") for _ in range(3)] == ["ok", "ok", "everyone"]   # 5 batches in all
