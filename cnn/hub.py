"""The model folder (config.json + model.safetensors + README.md) and its trip to and from the
Hugging Face Hub. Weights are only ever read from safetensors: nothing is unpickled.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterator

from torch import nn

from . import __version__
from .data import IMAGE_SUFFIXES, ImageError, load_image
from .io import closest_path
from .models import create_model

log = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
EXAMPLES_DIR = "examples"      # example photos the app offers, chosen by whoever pushed the model
MAX_EXAMPLES = 12
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
# What is pushed and pulled: the config, the weights, the "none of the ten" detector (cnn.ood), the card and
# its plots, and example photos (images only, any case of their suffix). Never a pickle.
HUB_FILES = [CONFIG_NAME, WEIGHTS_NAME, "detector.safetensors", "probe.safetensors", CARD_NAME, "*.png"] + [
    f"{EXAMPLES_DIR}/*{suffix}" for s in IMAGE_SUFFIXES for suffix in (s, s.upper())]
HUB_PREFIX = "Hub "            # how a Classifier's `source` starts when the model came from the Hub


MAX_BLUR_SIGMA = 8.0   # px: the most test-time softening (cnn.data.eval_view) a model may use


def blur_sigma_ok(value: Any) -> bool:
    """Whether `value` is a softening a model may use: a number from 0 to MAX_BLUR_SIGMA px. The blur's kernel
    grows with it, so neither a config.json from anywhere nor a command line may size the work of every answer."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 <= value <= MAX_BLUR_SIGMA


class ModelLoadError(RuntimeError):
    """A model folder or Hub repo cannot be loaded; the message says why."""


class ModelNotFoundError(ModelLoadError):
    """A model folder that does not exist here: a typo to fix, which no fallback model may hide."""


class HubError(RuntimeError):
    """Pushing to or pulling from the Hub failed; the message says why."""


def model_config(arch: str, model_args: dict[str, Any], classes: list[str], image_size: int,
                 crop_pct: float, mean, std, tta_flip: bool, num_parameters: int,
                 metrics: dict[str, Any] | None = None, temperature: float = 1.0,
                 blur_sigma: float = 0.0) -> dict[str, Any]:
    """timm-style config.json: architecture, labels, input size and normalisation (plus the test-time softening,
    cnn.data.eval_view, and the calibration temperature that inference applies to the probabilities)."""
    return {
        "architecture": arch,
        "model_args": model_args,
        "num_classes": len(classes),
        "label_names": list(classes),
        "pretrained_cfg": {"input_size": [3, image_size, image_size], "crop_pct": crop_pct,
                           "interpolation": "bicubic", "mean": list(mean), "std": list(std),
                           "tta_flip": tta_flip, "blur_sigma": blur_sigma, "temperature": temperature},
        "num_parameters": num_parameters,
        "metrics": metrics or {},
        "cnn_version": __version__,
    }


def save_pretrained(model: nn.Module, folder: str | os.PathLike, config: dict[str, Any]) -> Path:
    """Write config.json and model.safetensors into `folder`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
    (folder / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    return folder


def load_pretrained(folder: str | os.PathLike) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model that `folder` describes and load its safetensors weights (eval mode)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise missing_folder(str(folder))
    weights = folder / WEIGHTS_NAME
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    if not weights.exists():
        hint = (f" It holds pickled weights ({', '.join(pickles)}), which are never loaded: pickles can "
                "run arbitrary code. Convert them to safetensors first." if pickles else "")
        raise ModelLoadError(f"{folder} has no {WEIGHTS_NAME}.{hint}")
    if pickles:
        log.warning("ignoring pickled files in %s (%s): only %s is read", folder, ", ".join(pickles), WEIGHTS_NAME)
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
        arch, labels = config["architecture"], config["label_names"]
    except FileNotFoundError:
        raise ModelLoadError(f"{folder} has no {CONFIG_NAME}") from None
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ModelLoadError(f"{folder / CONFIG_NAME} is not a valid model config ({e!r})") from None
    blur = config.get("pretrained_cfg", {}).get("blur_sigma", 0.0)
    if not blur_sigma_ok(blur):
        raise ModelLoadError(f"{folder / CONFIG_NAME}: blur_sigma must be a number from 0 to {MAX_BLUR_SIGMA} px, "
                             f"not {blur!r}")
    try:
        model = create_model(arch, num_classes=len(labels), **config.get("model_args", {}))
    except (ValueError, TypeError, ImportError) as e:  # ImportError: a torchvision architecture without torchvision
        raise ModelLoadError(f"{folder / CONFIG_NAME}: {e}") from None
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as e:
        raise ModelLoadError(f"{weights} is damaged or incomplete ({e})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ModelLoadError(f"weights in {weights} do not fit a {arch} with {len(labels)} labels "
                             f"({first[1].strip() if len(first) > 1 else first[0]})") from None
    return model.eval(), config


# --- the Hub ---------------------------------------------------------------------------------

def split_revision(model_id: str) -> tuple[str, str | None]:
    """'user/name@rev' → ('user/name', 'rev')."""
    repo_id, _, revision = model_id.partition("@")
    return repo_id, revision or None


def fetch_snapshot(repo_id: str, revision: str | None, allow_patterns: list[str], error: type[Exception], asked: str,
                   kind: str = "model", invalid: str = "") -> Path:
    """`snapshot_download` through the HF cache, with each way the Hub can fail turned into `error` with a
    message a person reads. `asked` is what the user wrote; `kind` is "model" or "dataset"."""
    import httpx2  # huggingface_hub 2.x's HTTP client: its connection errors are not OSErrors
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (HfHubHTTPError, HFValidationError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)

    what = "Hub repo" if kind == "model" else "Hub dataset"
    try:
        return Path(snapshot_download(repo_id, repo_type=kind, revision=revision, allow_patterns=allow_patterns))
    except HFValidationError as e:
        raise error(invalid or f"{asked!r} does not name a {what} ({e})") from None
    except RepositoryNotFoundError:
        raise error(f"{what} {repo_id!r} does not exist (or is private and no token was given)") from None
    except RevisionNotFoundError:
        raise error(f"{what} {repo_id!r} has no revision {revision!r}") from None
    except LocalEntryNotFoundError:
        raise error(f"cannot reach the Hub for {asked!r} and it is not in the local cache "
                    "(offline, or HF_HUB_OFFLINE=1)") from None
    except (HfHubHTTPError, httpx2.HTTPError, OSError, ValueError) as e:
        raise error(f"cannot fetch {asked!r} from the Hub: {e}") from None


def local_only(model_id: str) -> bool:
    """Whether `model_id` can only name a folder here, not a Hub repo id (user/name[@revision]): it has another
    number of parts, starts with ~ . or /, or its first part is a folder here (runs/mine)."""
    repo_id, _ = split_revision(model_id)
    parts = repo_id.split("/")
    return len(parts) != 2 or not all(parts) or repo_id.startswith(("~", ".")) or Path(parts[0]).is_dir()


def missing_folder(path: str) -> ModelNotFoundError:
    """The error for a model folder that does not exist, naming the closest one that does."""
    if Path(path).exists():
        return ModelNotFoundError(f"{path!r} is a file; a model folder holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    closest = closest_path(path)
    meant = f"; did you mean {closest!r}?" if closest else ""
    return ModelNotFoundError(f"model folder {path!r} does not exist{meant}")


def check_model_id(model_id: str) -> None:
    """Refuse, before any long work, a model id that can only be a local folder and is none."""
    if local_only(model_id) and not Path(model_id).is_dir():
        raise missing_folder(model_id)


def model_folder(path: str | os.PathLike) -> Path:
    """The model folder a user means: `path` itself, or the model/ inside a run folder (what `python -m train`
    writes), so that the app, train.evaluate and train.push all take either."""
    path = Path(path)
    if not (path / CONFIG_NAME).is_file() and (path / "model" / CONFIG_NAME).is_file():
        log.info("%s is a run folder: using its model folder %s", path, path / "model")
        return path / "model"
    return path


def resolve(model_id: str, revision: str | None = None) -> tuple[Path, str]:
    """A local folder, or a Hub repo id (optionally '@revision') fetched through the HF cache.

    A run folder stands for its model/. Returns the folder and a line saying where it came from. Only
    config, safetensors, the card, its images and the example photos are downloaded: pickles in a repo
    are never fetched.
    """
    if Path(model_id).is_dir():
        folder = model_folder(model_id)
        return folder, f"local folder {folder}"
    check_model_id(model_id)
    repo_id, at_revision = split_revision(model_id)
    revision = revision or at_revision
    folder = fetch_snapshot(repo_id, revision, HUB_FILES, ModelLoadError, asked=model_id,
                            invalid=f"model folder {model_id!r} does not exist (and it is not a Hub repo id "
                                    "of the form user/name)")
    if not (folder / WEIGHTS_NAME).exists():
        raise ModelLoadError(f"Hub repo {repo_id!r} has no {WEIGHTS_NAME}; pickled weights are never loaded")
    shown = revision if revision and revision != folder.name else folder.name[:12]  # a tag, a branch or a short commit
    return folder, f"{HUB_PREFIX}{repo_id} @ {shown}"


def check_examples(photos: list[Path]) -> list[Path]:
    """Example photos fit to publish: at most MAX_EXAMPLES, each one a photo that decodes."""
    if not photos:
        raise HubError("no example photos given (jpg, png, webp, bmp or gif files)")
    if len(photos) > MAX_EXAMPLES:
        raise HubError(f"{len(photos)} example photos given; choose at most {MAX_EXAMPLES}")
    for photo in photos:
        try:
            load_image(photo)
        except ImageError as e:
            raise HubError(f"example {photo} cannot be used: {e}") from None
    return photos


def _upload_operations(folder: Path, repo_id: str, examples: list[Path]) -> list:
    """One commit's files: the model folder's HUB_FILES (the card with `repo_id` in its usage snippet), then
    the chosen examples under examples/."""
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.utils import filter_repo_objects

    from .card import with_repo_id

    def content(name: str) -> str | bytes:
        if name != CARD_NAME:
            return str(folder / name)
        return with_repo_id((folder / name).read_text(encoding="utf-8"), repo_id).encode()

    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    ops = [CommitOperationAdd(name, content(name)) for name in filter_repo_objects(names, allow_patterns=HUB_FILES)]
    return ops + [CommitOperationAdd(f"{EXAMPLES_DIR}/{p.name}", str(p)) for p in examples]


@contextlib.contextmanager
def hub_errors(repo_id: str, endpoint: str) -> Iterator[None]:
    """Each way a call to the Hub can fail, as a HubError a person reads."""
    import httpx2  # huggingface_hub 2.x's HTTP client: its connection errors are not OSErrors
    from huggingface_hub.errors import HfHubHTTPError

    try:
        yield
    except HfHubHTTPError as e:
        raise HubError(f"the Hub refused the upload to {repo_id}: {e}") from None
    except (httpx2.HTTPError, OSError) as e:  # refused connection, DNS failure, timeout
        raise HubError(f"cannot reach the Hub at {endpoint} to push {repo_id}: {e}") from None
    except ValueError as e:  # e.g. "Invalid metadata in README.md", or a reply that is not the Hub's
        raise HubError(f"the Hub refused the upload to {repo_id}: {e}") from None


def prepare_repo(repo_id: str, private: bool = False, token: str | None = None,
                 space_sdk: str | None = None) -> tuple[Any, str]:
    """Check that a push to `repo_id` can happen, before any long work: a token, that the Hub accepts it
    (whoami) and that it may write, and the repo created (or found). Returns the HfApi to push with and the
    repo URL; HubError says what is wrong. With `space_sdk` ("gradio"), the repo is a Space running that SDK.

    The token comes from `token`, else HF_TOKEN, else the cached `hf auth login`.
    """
    from huggingface_hub import HfApi, get_token

    token = token or get_token()
    if not token:
        raise HubError("no Hugging Face token: set HF_TOKEN or run `hf auth login`, then push again")
    api = HfApi(token=token)
    with hub_errors(repo_id, api.endpoint):
        me = api.whoami()
        if me.get("auth", {}).get("accessToken", {}).get("role") == "read":
            raise HubError(f"the Hugging Face token of {me.get('name', '?')} is read-only: create one with write "
                           "access (huggingface.co/settings/tokens), then push again")
        url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="space" if space_sdk else "model",
                              space_sdk=space_sdk)
    return api, str(url)


def push_to_hub(folder: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None,
                commit_message: str = "Upload model trained with cnn", examples: list[Path] | None = None) -> str:
    """Create (or reuse) `repo_id` and upload the model folder, plus `examples` (photos the app offers
    as clickable examples) under examples/, in one commit. Returns the repo URL. The local folder is
    never changed (the uploaded card names `repo_id` in its usage snippet)."""
    folder = Path(folder)
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / name).exists():
            raise HubError(f"{folder} is not a model folder: {name} is missing")
    examples = check_examples(examples) if examples is not None else []
    api, url = prepare_repo(repo_id, private, token)
    with hub_errors(repo_id, api.endpoint):
        api.create_commit(repo_id, _upload_operations(folder, repo_id, examples), commit_message=commit_message,
                          repo_type="model")
    return url
