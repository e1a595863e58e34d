"""The install lines, resolved by pip itself on stand-in wheels in local indexes (no network, none of this
machine's pip settings): requirements.txt gives the CPU build of torch and no CUDA stack, requirements-gpu.txt
on top gives the CUDA build, and both name the same versions. Then the package `pip install .` builds from a clone:
what it holds and declares."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PYTORCH_INDEX = "https://download.pytorch.org/whl/"
PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
# Each GPU line: its PyTorch index (the build's local version) and a package of the CUDA stack its torch needs.
GPU_LINES = {"requirements-gpu.txt": ("cu130", "nvidia-cublas==13.1.1.3"),
             "requirements-gpu-cu12.txt": ("cu128", "nvidia-cublas-cu12==12.8.4.1")}


def requirement_lines(name: str) -> list[str]:
    lines = (REPO / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def pins(name: str) -> dict[str, str]:
    return dict(line.split("==") for line in requirement_lines(name) if "==" in line)


def wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = ()) -> None:
    """A minimal wheel (METADATA, WHEEL, RECORD) that pip can resolve and report."""
    dist = f"{name.replace('-', '_')}-{version}"
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / f"{dist}-py3-none-any.whl", "w") as z:
        z.writestr(f"{dist}.dist-info/METADATA", "\n".join(
            ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}"] + [f"Requires-Dist: {r}" for r in requires])
            + "\n")
        z.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}.dist-info/RECORD", "")


def simple_index(root: Path, wheels: Path) -> str:
    """A PEP 503 index over the wheels of `wheels`, as a file:// URL."""
    for path in wheels.glob("*.whl"):
        project = root / path.name.split("-")[0].replace("_", "-")
        project.mkdir(parents=True, exist_ok=True)
        with open(project / "index.html", "a") as f:
            f.write(f'<a href="{path.as_uri().replace("+", "%2B")}">{path.name}</a>\n')
    return root.as_uri()


@pytest.fixture(scope="module")
def indexes(tmp_path_factory) -> dict[str, str]:
    """Stand-ins for PyPI (torch with the CUDA stack as dependencies) and PyTorch's cpu, cu130 and cu128 indexes."""
    torch_v, vision_v = pins("requirements.txt")["torch"], pins("requirements.txt")["torchvision"]
    root = tmp_path_factory.mktemp("indexes")
    wheel(root / "pypi-files", "torch", torch_v, (GPU_LINES["requirements-gpu.txt"][1],))
    wheel(root / "pypi-files", "torchvision", vision_v, (f"torch=={torch_v}",))
    wheel(root / "cpu-files", "torch", f"{torch_v}+cpu")
    wheel(root / "cpu-files", "torchvision", f"{vision_v}+cpu", (f"torch=={torch_v}",))
    for tag, stack in GPU_LINES.values():
        wheel(root / f"{tag}-files", "torch", f"{torch_v}+{tag}", (stack,))
        wheel(root / f"{tag}-files", "torchvision", f"{vision_v}+{tag}", (f"torch=={torch_v}",))
        wheel(root / "pypi-files", *stack.split("=="))
    return {name: simple_index(root / name, root / f"{name}-files")
            for name in ("pypi", "cpu", *(tag for tag, _ in GPU_LINES.values()))}


def resolve(files: list[str], indexes: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """What `pip install --dry-run -r FILE ...` would install of torch, torchvision and the CUDA stack, with the
    files' PyTorch index lines pointed at the stand-ins (every other requirement left out)."""
    lines = []
    for name in files:
        for line in requirement_lines(name):
            if line.startswith("--extra-index-url"):
                url = line.split()[-1]
                assert url.startswith(PYTORCH_INDEX), f"{name}: an index that is not PyTorch's: {url}"
                lines.append(f"--extra-index-url {indexes[url[len(PYTORCH_INDEX):].strip('/')]}")
            elif re.match(r"(torch|torchvision)==", line):
                lines.append(line)
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("\n".join(lines) + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull          # none of this machine's indexes, wheels or constraints
    report = tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                    "--disable-pip-version-check", "--no-cache-dir", "--index-url", indexes["pypi"],
                    "--report", str(report), "-r", str(reqs)], check=True, env=env, timeout=120)
    return {i["metadata"]["name"]: i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}


def test_the_space_and_laptop_line_installs_cpu_torch_and_no_cuda(indexes, tmp_path):
    torch_v, vision_v = pins("requirements.txt")["torch"], pins("requirements.txt")["torchvision"]
    assert resolve(["requirements.txt"], indexes, tmp_path) == {"torch": f"{torch_v}+cpu",
                                                                "torchvision": f"{vision_v}+cpu"}


@pytest.mark.parametrize("line", GPU_LINES)
def test_the_gpu_line_installs_the_cuda_build_of_the_same_versions(line, indexes, tmp_path):
    """The CUDA 13 line, and the CUDA 12 one beside it for drivers not yet on 13 (issue 36 item 6)."""
    tag, stack = GPU_LINES[line]
    base, gpu = pins("requirements.txt"), pins(line)
    assert {name: version.split("+")[0] for name, version in gpu.items()} == {
        "torch": base["torch"], "torchvision": base["torchvision"]}
    installed = resolve(["requirements.txt", line], indexes, tmp_path)
    assert installed == {"torch": f"{base['torch']}+{tag}", "torchvision": f"{base['torchvision']}+{tag}",
                         **dict([stack.split("==")])}


def test_the_documented_installs_do_not_retry_an_unreachable_index_for_minutes():
    """Where PyTorch's index cannot be reached (a machine or CI limited to PyPI), pip's default 5 retries with
    back-off cost ~7.5 s per package, ~10 minutes for this project; one immediate retry costs nothing."""
    readme = (REPO / "README.md").read_text()
    commands = re.findall(r"pip install [^\n`]*-r requirements[^\n`]*", readme + (REPO / ".ci" / "run").read_text())
    assert len(commands) >= 4
    assert all("--retries 1" in command for command in commands), commands


def test_the_space_front_matter():
    """What the Spaces listing shows and the hardware it suggests to whoever duplicates the Space."""
    from huggingface_hub import SpaceCard

    meta = SpaceCard.load(REPO / "README.md").data.to_dict()
    assert meta["sdk"] == "gradio" and meta["suggested_hardware"] == "cpu-basic"
    assert 0 < len(meta["short_description"]) <= 60          # the Hub's limit
    assert meta["sdk_version"] == pins("requirements.txt")["gradio"]


# --- the package: `pip install .` in a clone --------------------------------------------------------

@pytest.fixture(scope="module")
def built_wheel(tmp_path_factory) -> Path:
    """The wheel `pip install .` builds from a clone's pyproject.toml and cnn/, offline, with the venv's own
    setuptools (no build isolation, no index)."""
    root = tmp_path_factory.mktemp("package")
    source = root / "clone"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    shutil.copytree(REPO / "cnn", source / "cnn", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(PIP + ["wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(root / "wheels"),
                                  str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    (path,) = (root / "wheels").glob("cnn_animals-*.whl")
    return path


def wheel_metadata(path: Path) -> Message:
    with zipfile.ZipFile(path) as z:
        (name,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(z.read(name).decode())


def test_the_library_installs_from_a_clone(built_wheel, tmp_path):
    """Issue 15 item 5: `pip install .` builds (a [build-system], one explicit package), and `from cnn import
    Classifier` works outside the clone."""
    names = zipfile.ZipFile(built_wheel).namelist()
    assert "cnn/inference.py" in names and "cnn/wording.py" in names
    assert not [n for n in names if n.startswith(("tests/", "train/", "app.py", "bench/"))]
    target = tmp_path / "site"
    installed = subprocess.run(PIP + ["install", "--no-deps", "--no-index", "--target", str(target), str(built_wheel)],
                               capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr
    code = "import cnn; from cnn import Classifier; print(cnn.__file__, Classifier.__name__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(target)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(str(target)) and "Classifier" in out.stdout


def test_the_wheel_declares_torchvision_the_extras_its_types_and_where_it_lives(built_wheel):
    """Issue 36 item 5: torchvision is a dependency (two architectures and training's MixUp/CutMix import it),
    `[train]` and `[app]` add what python -m train and app.py need, py.typed marks the hints as checkable
    (PEP 561), and the Project-URLs are the repository the model card links (cnn.REPOSITORY)."""
    import cnn

    meta = wheel_metadata(built_wheel)
    assert meta["Name"] == cnn.DISTRIBUTION
    requires = [Requirement(r) for r in meta.get_all("Requires-Dist")]
    core = {r.name for r in requires if r.marker is None}
    assert {"torch", "torchvision", "safetensors", "huggingface_hub", "pillow"} <= core
    assert "gradio" not in core and "datasets" not in core           # the library alone stays light
    by_extra = {extra: {r.name for r in requires if r.marker and r.marker.evaluate({"extra": extra})} - core
                for extra in meta.get_all("Provides-Extra")}
    assert by_extra == {"train": {"datasets", "pyarrow"}, "app": {"gradio"}}
    assert "cnn/py.typed" in zipfile.ZipFile(built_wheel).namelist()
    urls = dict(line.split(", ", 1) for line in meta.get_all("Project-URL"))
    assert urls["Repository"] == cnn.REPOSITORY and urls["Issues"] == f"{cnn.REPOSITORY}/issues"


def test_the_library_is_the_lower_floor_and_the_page_ships_apart(built_wheel):
    """Issue 34: cnn/ (data, models, training, inference, Hub) never imports the page's modules (page/, beside
    app.py), and the wheel carries the library alone."""
    import ast

    for source in (REPO / "cnn").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            named = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not [n for n in named if n.split(".")[0] in ("page", "app", "train")], (source.name, named)
    names = zipfile.ZipFile(built_wheel).namelist()
    assert "cnn/inference.py" in names and not [n for n in names if n.startswith(("page/", "app.py", "train/"))]
    page_modules = {path.name for path in (REPO / "page").glob("*.py")} - {"__init__.py"}
    assert page_modules and not [n for n in names if n.split("/")[-1] in page_modules]   # feedback.py, batch.py, ...


def test_the_pinned_builds_satisfy_what_the_package_declares(built_wheel):
    """requirements*.txt (what is tested) fall inside the package's ranges, extras included."""
    pinned = {canonicalize_name(k): v.split("+")[0] for k, v in {**pins("requirements.txt"),
                                                                 **pins("requirements-dev.txt")}.items()}
    for line in wheel_metadata(built_wheel).get_all("Requires-Dist"):
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{requirement.name} is declared but pinned in no requirements file"
        assert requirement.specifier.contains(pinned[name]), f"{line} does not admit the pinned {pinned[name]}"


def test_what_building_leaves_in_a_clone_is_ignored(tmp_path):
    """`pip install .` and `pip wheel .` write build/ and cnn_animals.egg-info/ into the clone: git ignores them
    (as git itself reads .gitignore), so they are never committed or pushed to a Space by mistake."""
    shutil.copy(REPO / ".gitignore", tmp_path)
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    paths = ["build/lib/cnn/hub.py", "cnn_animals.egg-info/PKG-INFO", "dist/cnn_animals-0.1.0-py3-none-any.whl"]
    ignored = subprocess.run(["git", "-C", str(tmp_path), "check-ignore", "--no-index", *paths],
                             capture_output=True, text=True).stdout.split()
    assert ignored == paths
