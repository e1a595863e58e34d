"""python -m train.push RUN_OR_MODEL_DIR USER/NAME [--private] [--token TOKEN] [--examples DIR]: publish a model.
python -m train.push --space USER/NAME [--private] [--token TOKEN]: publish the app as a Space.

Uploads a run folder's model/ (or a model folder given directly: config.json, model.safetensors,
README.md and its plots) to a Hugging Face Hub repo, creating the repo if needed. With --examples, the
photos in DIR (a few you chose, that you may publish) go along under examples/: the app shows them as
clickable examples. With --space, this clone's app (app.py, cnn/, the bundled model/, requirements.txt, the
README that configures the Space; train/space.py lists them) goes to a Gradio Space instead, without git or
git-lfs. Nothing local is changed; on failure the folder is left as it was and the command can simply be
run again.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnn import hub
from cnn.data import photo_files
from train import space


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train.push", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", metavar="RUN_OR_MODEL_DIR", nargs="?",
                   help="a run folder (its model/ is pushed) or a model folder")
    p.add_argument("repo_id", metavar="USER/NAME", nargs="?",
                   help="the Hub repo to push to (created if it does not exist)")
    p.add_argument("--space", metavar="USER/NAME",
                   help="push this clone's app to the Gradio Space USER/NAME instead (created if it does not exist)")
    p.add_argument("--private", action="store_true", help="create the repo as private (an existing repo keeps its visibility)")
    p.add_argument("--token", help="a Hub write token (default: HF_TOKEN, else the token of `hf auth login`)")
    p.add_argument("--examples", metavar="DIR", type=Path,
                   help=f"a folder of at most {hub.MAX_EXAMPLES} photos to publish as the app's examples")
    args = p.parse_args(argv)
    if args.space and (args.folder or args.examples):
        p.error("--space takes only the Space's USER/NAME: it uploads this clone's app with its bundled model/ "
                "(push a model to a model repo, and point the Space at it with MODEL_ID)")
    if not args.space and not args.repo_id:
        p.error("give RUN_OR_MODEL_DIR and USER/NAME (or --space USER/NAME)")
    return args


def model_folder(path: str | Path) -> Path:
    """The model folder inside a run folder, or `path` itself when it is a model folder."""
    folder = hub.model_folder(path)
    if (folder / hub.CONFIG_NAME).is_file():
        return folder
    if not folder.is_dir():
        raise hub.HubError(f"{str(path)!r} does not exist")
    raise hub.HubError(f"{str(path)!r} is neither a run folder (with model/) nor a model folder (with {hub.CONFIG_NAME})")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.space:
            folder, url = space.ROOT, space.push_space(args.space, private=args.private, token=args.token)
        else:
            folder = model_folder(args.folder)
            examples = photo_files(args.examples) if args.examples else None
            url = hub.push_to_hub(folder, args.repo_id, private=args.private, token=args.token, examples=examples)
    except hub.HubError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line, even for multi-line Hub replies
        return 1
    print(f"pushed {folder} to {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
