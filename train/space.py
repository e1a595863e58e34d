"""The app as a Hugging Face Space (`python -m train.push --space USER/NAME`): which files of a clone the Space
runs, and their upload in one commit through huggingface_hub.

Why not `git push`: this repository's history holds every bundled weights file ever committed (binaries, some
over 10 MiB, none in LFS), and a Space's git refuses binaries outside LFS/Xet. huggingface_hub uploads the current
files only and stores the large and binary ones in the Hub's own storage itself: no git, no git-lfs, no history.
docs/deploy.md gives both routes.
"""
from __future__ import annotations

from pathlib import Path

from cnn import hub

ROOT = Path(__file__).resolve().parents[1]     # the clone this command runs from
# What the Space runs: the page, the library it imports, the bundled model (as the Hub keeps a model: never a
# pickle), the app's example photos, the install line, the README whose front matter configures the Space, and
# the LFS attributes that keep a later `git clone` of the Space whole. Never tests/, runs/, bench/, caches, a venv.
SPACE_FILES = ["app.py", "README.md", "requirements.txt", ".gitattributes", "cnn/*.py", "cnn/py.typed", "page/*.py"] + [
    f"model/{pattern}" for pattern in hub.HUB_FILES] + [
    pattern for pattern in hub.HUB_FILES if pattern.startswith(f"{hub.EXAMPLES_DIR}/")]


def space_files(root: Path = ROOT) -> list[str]:
    """The files of the clone at `root` that a Space push uploads, as paths relative to it."""
    return sorted({path.relative_to(root).as_posix() for pattern in SPACE_FILES for path in root.glob(pattern)
                   if path.is_file()})


def space_sdk(root: Path = ROOT) -> str:
    """The SDK the README's front matter names (the Space's configuration); HubError when it names none, or
    names an app file the clone does not have."""
    from huggingface_hub import SpaceCard

    readme = root / hub.CARD_NAME
    meta = SpaceCard.load(readme).data if readme.is_file() else None
    if not meta or not meta.sdk:
        raise hub.HubError(f"{readme} has no Space front matter (sdk: gradio, app_file: app.py, ...): is {root} a "
                           "clone of this project?")
    if not (root / (meta.app_file or "app.py")).is_file():
        raise hub.HubError(f"{readme} names the app file {meta.app_file!r}, which {root} does not have")
    return meta.sdk


def push_space(repo_id: str, root: Path = ROOT, private: bool = False, token: str | None = None,
               commit_message: str = "Upload the app with cnn") -> str:
    """Create (or reuse) the Space `repo_id` and make its files the clone's space_files, in one commit: the
    Space rebuilds once, and files a former push left there that the clone no longer has (an old detector, a
    removed example) are deleted. Returns the Space's URL."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.utils import filter_repo_objects

    root = Path(root)
    sdk = space_sdk(root)
    files = space_files(root)
    api, url = hub.prepare_repo(repo_id, private, token, space_sdk=sdk)
    with hub.hub_errors(repo_id, api.endpoint):
        there = api.list_repo_files(repo_id, repo_type="space")
        stale = [name for name in filter_repo_objects(there, allow_patterns=SPACE_FILES)
                 if name not in files and name != ".gitattributes"]   # the Hub's own, where the clone has none
        operations = ([CommitOperationDelete(name) for name in stale] +
                      [CommitOperationAdd(name, str(root / name)) for name in files])
        api.create_commit(repo_id, operations, commit_message=commit_message, repo_type="space")
    return url
