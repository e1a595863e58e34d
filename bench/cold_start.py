"""Cold start of the app: from `python app.py --model DIR` to the first answered /predict request.

Why: a Space (or a fresh container) that restarts makes its first user wait for Python, the
imports, the model load and Gradio's start; that wait should stay under about 8 s. The app's
peak memory decides which hardware tier it fits.

How: the app is launched as a subprocess on a free loopback port (no analytics, no Hub); a
gradio_client Client is retried until the server answers, then one photo is sent to /predict.
`cold_start_s` is the wall time from launching to that answer (gradio_client is imported before
the clock starts), median of `--repeats` launches. `app_rss_mb` is the app's peak resident memory
(VmHWM) after the answer. Then, in fresh interpreters: `python -c pass` (the floor),
`import cnn`, and app.py's module-level imports; `python -X importtime` of the latter gives each
package's own import time summed over its submodules (`import_ms_<package>`, slowest first).

    python bench/cold_start.py                 # random-weight default model
    python bench/cold_start.py --model runs/x/model
    python bench/cold_start.py --quick         # one launch, for CI
"""
from __future__ import annotations

import argparse
import ast
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (ROOT, busy_cores, connect, emit, free_port, launch_app, make_model_folder, note,
                    peak_rss_mb, photo_jpeg, stop)


def cold_start(model: Path, photo: Path, timeout: float, log_path: Path) -> tuple[float, float]:
    """(seconds to the first /predict answer, peak RSS MiB of the app) for one launch."""
    from gradio_client import handle_file

    port = free_port()
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = launch_app(model, port, log)
        try:
            client = connect(f"http://127.0.0.1:{port}/", proc, timeout)
            answer = client.predict(handle_file(str(photo)), api_name="/predict")
            elapsed = time.perf_counter() - t0
            if not answer:
                raise RuntimeError(f"empty answer from /predict: {answer!r}")
            return elapsed, peak_rss_mb(proc.pid)
        except Exception:
            note(log_path.read_text(errors="replace")[-3000:])
            raise
        finally:
            stop(proc)


def wall(code: str, repeats: int) -> float:
    """Median wall seconds of `python -c code` in a fresh interpreter."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def app_imports() -> str:
    """app.py's module-level import statements, as one line of code."""
    tree = ast.parse((ROOT / "app.py").read_text())
    imports = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    return "; ".join(ast.unparse(node) for node in imports if getattr(node, "module", None) != "__future__")


def import_times(code: str) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """From `python -X importtime -c code`: (the modules `code` imports directly, with cumulative ms;
    every package's own import time summed over its submodules, ms), each slowest first."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", code], cwd=ROOT, check=True,
                         capture_output=True, text=True).stderr
    direct, by_package = [], {}
    for line in out.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)", line)
        if not m:
            continue
        own, cumulative, indent, module = int(m.group(1)) / 1000, int(m.group(2)) / 1000, m.group(3), m.group(4)
        if not indent:  # imported by `code` itself, not by another module
            direct.append((module, cumulative))
        package = module.split(".")[0]
        by_package[package] = by_package.get(package, 0.0) + own
    return sorted(direct, key=lambda t: -t[1]), sorted(by_package.items(), key=lambda t: -t[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model folder (default: a random-weight default model)")
    p.add_argument("--repeats", type=int, default=3, help="launches (median reported)")
    p.add_argument("--timeout", type=float, default=120, help="give up on a launch after this many seconds")
    p.add_argument("--top", type=int, default=8, help="slowest imports to list")
    p.add_argument("--quick", action="store_true", help="one launch and one import timing, for CI")
    args = p.parse_args()
    if args.quick:
        args.repeats, args.top = 1, 3
    if not (ROOT / "app.py").exists():
        sys.exit("app.py does not exist yet")
    import gradio_client  # noqa: F401  (imported before any clock starts)

    emit("busy_cores_at_start", busy_cores())  # > 0.2: numbers taken under contention
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = Path(args.model) if args.model else make_model_folder(tmp / "model", "default")
        photo = tmp / "photo.jpg"
        photo.write_bytes(photo_jpeg(400, 300))
        runs = [cold_start(model, photo, args.timeout, tmp / f"app{i}.log") for i in range(args.repeats)]
        for i, (s, mb) in enumerate(runs):
            note(f"launch {i + 1}: first answer after {s:.2f} s, peak RSS {mb:.0f} MiB")
        emit("cold_start_s", statistics.median(s for s, _ in runs))
        emit("app_rss_mb", max(mb for _, mb in runs))

    emit("python_startup_s", wall("pass", args.repeats))
    emit("import_cnn_s", wall("import cnn", args.repeats))
    code = app_imports()
    emit("import_app_s", wall(code, args.repeats))
    note(f"app.py's module-level imports: {code}")
    direct, packages = import_times(code)
    note("app.py's imports, cumulative ms: " + ", ".join(f"{m} {ms:.0f}" for m, ms in direct[:args.top]))
    note("packages' own import time, ms: " + ", ".join(f"{m} {ms:.0f}" for m, ms in packages[:args.top]))
    for package, ms in packages[:args.top]:
        emit(f"import_ms_{package}", ms)


if __name__ == "__main__":
    main()
