"""Helpers shared by the benchmark scripts: paths, generated photos, percentiles, process memory,
and launching `app.py` on a free loopback port.

Every script prints its results as `NAME VALUE` lines (one metric per line, a plain number) on
stdout; anything meant for people goes to stderr.
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT, ROOT / "tests"):  # `cnn` and tests/imagegen.py, whatever the working directory
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import numpy as np  # noqa: E402
from appserver import app_env, free_port, stop  # noqa: E402,F401  (tests/appserver.py; re-exported to the benches)
from PIL import Image  # noqa: E402


def emit(name: str, value: float) -> None:
    """One result line: `NAME VALUE`."""
    print(f"{name} {value:.6g}", flush=True)


def note(*args) -> None:
    """A line for people (stderr), never parsed."""
    print(*args, file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def photo_jpeg(width: int = 400, height: int = 300, seed: int = 0, quality: int = 90) -> bytes:
    """A photo-like JPEG (smooth colour gradients + noise + a shape), generated in memory."""
    from imagegen import shape_image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([120 + 80 * np.sin(xx / 37 + c) * np.cos(yy / 53 - c) for c in range(3)], -1)
    noisy = (base + rng.normal(0, 18, base.shape)).clip(0, 255).astype(np.uint8)
    img = Image.fromarray(noisy)
    side = min(width, height) // 2
    img.paste(shape_image("circle", side, seed), ((width - side) // 2, (height - side) // 2))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


# --- process memory (Linux /proc; psutil is not a dependency) ----------------------------------

def _status_kb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    raise KeyError(field)


def rss_mb(pid: int) -> float:
    """Resident memory now (VmRSS), MiB."""
    return _status_kb(pid, "VmRSS") / 1024


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory so far (VmHWM), MiB."""
    return _status_kb(pid, "VmHWM") / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file()) / 2**20


# --- a throw-away model folder ------------------------------------------------------------------

def make_model_folder(folder: Path, preset: str = "default", classes: int = 10, seed: int = 0,
                      labels: list[str] | None = None) -> Path:
    """A model folder exactly as training would export it for `preset`, with random weights (and `labels`,
    default class_0 … class_N)."""
    import torch

    from cnn import hub
    from cnn.config import make_config
    from cnn.models import count_parameters, create_model, model_args_for

    cfg = make_config(preset)
    torch.manual_seed(seed)
    args = model_args_for(cfg.arch, cfg.image_size, cfg.model_args)
    labels = labels or [f"class_{i}" for i in range(classes)]
    net = create_model(cfg.arch, num_classes=len(labels), **args).eval()
    config = hub.model_config(cfg.arch, args, labels, cfg.image_size, cfg.crop_pct, cfg.mean, cfg.std,
                              cfg.tta_flip, count_parameters(net))
    return hub.save_pretrained(net, folder, config)


# --- the app -------------------------------------------------------------------------------------

def launch_app(model: Path, port: int, log_file) -> subprocess.Popen:
    """`python app.py --model DIR` on 127.0.0.1:port, output to `log_file`."""
    return subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", str(model)], cwd=ROOT,
                            env=app_env(port), stdout=log_file, stderr=subprocess.STDOUT)


@contextlib.contextmanager
def running_app(model: Path, folder: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`python app.py --model DIR` on a free loopback port for the length of the block: (its URL, the process).
    Its output goes to folder/app.log, whose tail is printed if the block fails; the app is always stopped."""
    port = free_port()
    with open(folder / "app.log", "wb") as log:
        proc = launch_app(model, port, log)
        try:
            yield f"http://127.0.0.1:{port}/", proc
        except Exception:
            note((folder / "app.log").read_text(errors="replace")[-3000:])
            raise
        finally:
            stop(proc)


def connect(url: str, proc: subprocess.Popen | None, timeout: float, poll: float = 0.05):
    """A gradio_client.Client for `url`, retried until the server answers (or `timeout` passes)."""
    from gradio_client import Client

    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the app exited with code {proc.returncode} before it served")
        try:
            return Client(url, verbose=False, analytics_enabled=False, download_files=False)
        except Exception as e:  # connection refused, 502 while starting, ...
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer from {url} within {timeout:.0f}s ({e!r})") from None
            time.sleep(poll)


def busy_cores(seconds: float = 0.5) -> float:
    """CPU cores kept busy by the whole machine over `seconds` (from /proc/stat). Called before a
    benchmark starts its work, anything well above 0 means its numbers are taken under contention."""
    def ticks() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, sum(values)

    busy0, total0 = ticks()
    time.sleep(seconds)
    busy1, total1 = ticks()
    return (os.cpu_count() or 1) * (busy1 - busy0) / max(1, total1 - total0)


# --- the "none of the ten" benches -----------------------------------------------------------------

def detector_bench_parser(doc: str, data_help: str):
    """The arguments bench/ood.py and bench/ood_kinds.py share: a model, its training folder, the held-out
    sources, real photos, outliers, a JSON copy of the table and --quick."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a model folder")
    p.add_argument("--data", help=data_help)
    p.add_argument("--holdout-sources", help="JSON of held-out sources (cnn.holdout): their --data photos join "
                                             "the real animal photos, and only the rest of --data fits the detectors")
    p.add_argument("--real", help="a folder of real animal photos (e.g. animals-val)")
    p.add_argument("--outliers", help="photos of none of the classes, one sub-folder per group")
    p.add_argument("--json", help="also write the table here")
    p.add_argument("--quick", action="store_true", help="generated photos and a random-weight model, for CI")
    return p


def run_detector_bench(args, quick_inputs, run) -> None:
    """`run(args)`, on generated inputs (`quick_inputs(args, tmp)`) with --quick."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            quick_inputs(args, Path(tmp))
        run(args)
