"""The app as a Hugging Face Space (issue 35 item 2): what `python -m train.push --space` uploads, that it goes
to a Gradio Space in one commit, and that the git route's .gitattributes keeps every large or binary file in LFS.

No network: pushes go to test_hub's stand-in Hub on 127.0.0.1; attributes are read by git itself.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from cnn.hub import HubError
from test_hub import fake_hub, hf_home  # noqa: F401  (fixtures)
from train import space

ROOT = Path(__file__).resolve().parents[1]
HUB_LIMIT = 10 * 1024 * 1024       # bytes: the most the Hub takes in a plain git blob


@pytest.fixture
def clone(tmp_path) -> Path:
    """A clone with the app, the library and the bundled model's small files, beside all that must stay home:
    tests, runs, benchmarks, caches, a venv, a pickle in model/, stray notes and photos."""
    root = tmp_path / "clone"
    for name in ("app.py", "README.md", "requirements.txt", ".gitattributes", "cnn/__init__.py", "cnn/hub.py",
                 "cnn/py.typed", "page/about.py", "model/config.json", "model/README.md", "model/curves.png"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, root / name)
    (root / "model" / "model.safetensors").write_bytes(b"weights")
    (root / "examples").mkdir()
    Image.new("RGB", (8, 8)).save(root / "examples" / "cat.JPG")
    for name in ("tests/test_app.py", "runs/mine/model/model.safetensors", "bench/latency.py", ".venv/lib/x.py",
                 "cnn/__pycache__/hub.cpython-311.pyc", ".cache/huggingface/x", ".pytest_cache/v", "model/last.pt",
                 "notes.txt", "photo.jpg", "feedback/1/a.png", "train/push.py", ".git/config"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"stays home")
    return root


def test_the_space_gets_the_app_and_nothing_that_stays_home(clone):
    assert space.space_files(clone) == [
        ".gitattributes", "README.md", "app.py", "cnn/__init__.py", "cnn/hub.py", "cnn/py.typed", "examples/cat.JPG",
        "model/README.md", "model/config.json", "model/curves.png", "model/model.safetensors", "page/about.py",
        "requirements.txt"]


def test_this_clones_space_files_are_what_the_app_runs():
    files = space.space_files()
    assert {"app.py", "README.md", "requirements.txt", ".gitattributes", "cnn/inference.py", "model/config.json",
            "model/model.safetensors"} <= set(files)
    assert {f"page/{path.name}" for path in (ROOT / "page").glob("*.py")} <= set(files)   # the page's own modules
    assert not [f for f in files if f.split("/")[0] in ("tests", "runs", "bench", "train", ".venv", "feedback")]
    assert space.space_sdk() == "gradio"


def lfs_attributes(paths: list[str], tmp_path: Path) -> dict[str, str]:
    """What git itself says the clone's .gitattributes makes of each path's `filter` ("lfs" or "unspecified")."""
    repo = tmp_path / "attributes"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    shutil.copy(ROOT / ".gitattributes", repo)
    out = subprocess.run(["git", "-C", str(repo), "check-attr", "--stdin", "filter"], input="\n".join(paths) + "\n",
                         capture_output=True, text=True, check=True).stdout
    return {line.rsplit(": filter: ", 1)[0]: line.rsplit(": ", 1)[1] for line in out.splitlines()}


def is_binary(path: Path) -> bool:
    """git's own test: a NUL byte in the first 8000 bytes."""
    with open(path, "rb") as f:
        return b"\0" in f.read(8000)


def test_every_large_or_binary_file_is_stored_in_lfs_on_the_git_route(tmp_path):
    """A Space's git refuses a binary outside LFS/Xet and any file over 10 MiB: every such file that a push of
    this tree (the Space's files and everything git tracks) would send must match an LFS pattern."""
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, text=True)
    if tracked.returncode:
        pytest.skip("not a git clone")
    paths = sorted(set(space.space_files()) | {p for p in tracked.stdout.split("\0") if p and (ROOT / p).is_file()})
    heavy = [p for p in paths if (ROOT / p).stat().st_size > HUB_LIMIT or is_binary(ROOT / p)]
    assert "model/model.safetensors" in heavy and "model/curves.png" in heavy
    attributes = lfs_attributes(heavy, tmp_path)
    assert {p: a for p, a in attributes.items() if a != "lfs"} == {}
    # and the text stays text: the code, the configuration and the cards are diffable in git
    assert set(lfs_attributes(["app.py", "cnn/hub.py", "model/config.json", "README.md"], tmp_path).values()) == {
        "unspecified"}


def test_example_photos_in_either_case_are_in_lfs(tmp_path):
    names = ["examples/cat.jpg", "examples/DOG.JPG", "examples/owl.Jpeg", "examples/a.webp", "examples/b.PNG",
             "examples/c.gif", "examples/d.BMP", "model/detector.safetensors"]
    assert set(lfs_attributes(names, tmp_path).values()) == {"lfs"}


def test_push_space_uploads_the_clone_to_a_gradio_space_in_one_commit(fake_hub, clone):
    url = space.push_space("user/demo", root=clone, private=True)
    assert url == f"{fake_hub.url}/user/demo"
    (create,) = fake_hub.posts("/api/repos/create")
    assert json.loads(create["body"]) == {"name": "demo", "organization": "user", "visibility": "private",
                                          "type": "space", "sdk": "gradio"}
    assert fake_hub.committed_files() == {name: (clone / name).read_bytes() for name in space.space_files(clone)}
    assert [r["path"] for r in fake_hub.posts() if r["path"] != "/api/validate-yaml"] == [
        "/api/repos/create", "/api/spaces/user/demo/preupload/main", "/api/spaces/user/demo/commit/main"]
    assert fake_hub.deleted_files() == []


def test_push_space_deletes_what_a_former_push_left_that_the_clone_no_longer_has(fake_hub, clone):
    """An old model's detector would otherwise stay beside the new weights (the app would load it)."""
    fake_hub.repos["spaces/user/demo"] = {name: b"from a former push" for name in (
        ".gitattributes", "README.md", "model/config.json", "model/detector.safetensors", "examples/old.jpg",
        "notes-from-the-web-editor.md")}
    space.push_space("user/demo", root=clone)
    assert fake_hub.deleted_files() == ["model/detector.safetensors", "examples/old.jpg"]
    assert any(r["path"] == "/api/spaces/user/demo/tree/main" for r in fake_hub.requests)


def test_push_space_of_a_folder_that_is_not_a_clone_contacts_no_hub(fake_hub, clone):
    (clone / "README.md").write_text("# no front matter\n")
    with pytest.raises(HubError, match="no Space front matter"):
        space.push_space("user/demo", root=clone)
    shutil.copy(ROOT / "README.md", clone / "README.md")
    (clone / "app.py").unlink()
    with pytest.raises(HubError, match="names the app file 'app.py'"):
        space.push_space("user/demo", root=clone)
    assert not fake_hub.requests


def test_push_cli_space_uploads_this_clone(fake_hub, capsys):
    from train.push import main

    assert main(["--space", "user/demo", "--token", "hf_cli_token"]) == 0, capsys.readouterr().err
    assert f"to {fake_hub.url}/user/demo" in capsys.readouterr().out
    committed = fake_hub.committed_files()
    assert sorted(committed) == space.space_files()
    assert len(committed["model/model.safetensors"]) == (ROOT / "model" / "model.safetensors").stat().st_size
    assert all(r["headers"]["authorization"] == "Bearer hf_cli_token" for r in fake_hub.posts())


@pytest.mark.parametrize("argv,message", [
    (["--space", "user/demo", "runs/mine"], "--space takes only the Space's USER/NAME"),
    (["--space", "user/demo", "--examples", "picks"], "--space takes only the Space's USER/NAME"),
    (["runs/mine"], "give RUN_OR_MODEL_DIR and USER/NAME"),
])
def test_push_cli_refuses_a_mixed_up_command_line(argv, message, capsys):
    from train.push import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
