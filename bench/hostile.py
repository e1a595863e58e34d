"""Hostile inputs against a real `python app.py`, through its public API: time and peak memory per input.

Why: issue 13. One visitor with a 280-byte file could take gigabytes: long thin images stretched by the
resize, GIFs whose "screen" is huge, palette and 1-bit PNG bombs, batches that held every decoded photo,
Grad-CAM at full resolution, batches that read one file or one zip's directory thousands of times. Targets:
any single request ≤ 1 GB above idle; the worst accepted request sent 4 at a time ≤ 2 GB above idle, with
an ordinary request still answered in under a second meanwhile.

How: the inputs are built here (tests/imagegen.py), the app is launched as in load.py with a random-weight
default model, and each input is sent through Gradio's queue (POST /gradio_api/queue/join, the route the
page itself uses; Grad-CAM is a page event, not a named endpoint). Before each probe the app's peak-RSS mark
is reset (writing 5 to /proc/PID/clear_refs) and its resident memory read as "idle"; after it, VmHWM − idle
is the probe's peak. The 4-at-a-time probe sends the accepted input with the highest peak 4 times at once while one
client sends ordinary 400×300 JPEGs to /predict one after another; their latencies are reported. Last, the
app's resident memory a few seconds after the burst (page.resources hands freed memory back).

Output: `NAME VALUE` lines on stdout (per probe: `<probe>_s`, `<probe>_peak_mb`, `<probe>_refused`), and a
table for people on stderr with each answer's message.

    python bench/hostile.py               # the issue's sizes (builds ~1 GB of images in memory, once)
    python bench/hostile.py --quick       # small stand-ins (the same refusals from the same headers), ~1 min
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from common import (connect, emit, make_model_folder, note, peak_rss_mb, percentile, photo_jpeg, rss_mb,
                    running_app)
from imagegen import gif_claiming_screen, png_claiming_size, shape_image
from PIL import Image

FULL = {"palette_side": 13_300, "big_side": 9_000, "big_count": 16, "bit_side": 13_300, "bit_count": 8,
        "references": 1_000, "empty_entries": 118_000, "empty_references": 20, "cam_side": 6_000, "png_side": 4_700}
QUICK = {**FULL, "references": 600, "empty_entries": 5_000, "empty_references": 3, "cam_side": 1_500, "png_side": 1_500}
SETTLE_S = 7.0     # after the burst: longer than page.resources.SWEEP_EVERY_S


class QueueClient:
    """Gradio's queue, as the page calls it: upload files, join with an event's fn_index, read its stream."""

    def __init__(self, url: str, timeout: float = 600):
        import httpx

        self.http = httpx.Client(base_url=url.rstrip("/") + "/gradio_api", timeout=timeout)
        self.config = httpx.get(url.rstrip("/") + "/config", timeout=timeout).json()

    def fn_index(self, api_name: str | None = None, output_label: str | None = None) -> int:
        """The event named `api_name`, or the first that fills the component labelled `output_label`."""
        labels = {c["id"]: c.get("props", {}).get("label") for c in self.config["components"]}
        for dep in self.config["dependencies"]:
            if (api_name and dep.get("api_name") == api_name) or (
                    output_label and [labels.get(o) for o in dep["outputs"]] == [output_label]):
                return dep["id"]
        raise KeyError(api_name or output_label)

    def upload(self, path: Path) -> dict:
        with open(path, "rb") as f:
            answer = self.http.post("/upload", files={"files": (path.name, f)})
        answer.raise_for_status()
        return {"path": answer.json()[0], "orig_name": path.name, "meta": {"_type": "gradio.FileData"}}

    def call(self, fn_index: int, data: list) -> tuple[bool, str]:
        """(accepted, what came back: the output, or the error message)."""
        session = uuid.uuid4().hex[:11]
        joined = self.http.post("/queue/join", json={"data": data, "fn_index": fn_index, "session_hash": session,
                                                    "event_data": None, "trigger_id": None})
        if joined.status_code != 200:
            return False, f"HTTP {joined.status_code}: {joined.text[:200]}"
        with self.http.stream("GET", "/queue/data", params={"session_hash": session}) as stream:
            for line in stream.iter_lines():
                if not line.startswith("data: "):
                    continue
                msg = json.loads(line[6:])
                if msg.get("msg") == "process_completed":
                    out = msg.get("output", {})
                    if msg.get("success"):
                        return verdict(out.get("data"))
                    return False, str(out.get("error") or out.get("title") or "error")
        return False, "the stream ended without an answer"


def verdict(data: list) -> tuple[bool, str]:
    """A batch table whose every row is an error is a refusal too (one row per file, each saying why)."""
    table = data[0] if data and isinstance(data[0], dict) and "headers" in data[0] else None
    if table and table["data"] and all(row[-1] for row in table["data"]):
        rows = table["data"]
        return False, f"{len(rows)} rows, all refused, e.g. {rows[0][0]}: {rows[0][-1]}"
    return True, json.dumps(data)


@dataclass
class Probe:
    name: str
    what: str                    # for people
    send: Callable[[], tuple[bool, str]]   # (accepted, the answer or the message)


def build_inputs(folder: Path, sizes: dict, quick: bool) -> dict[str, Path]:
    """Every hostile input of the issue. --quick claims the big sizes in tiny headers (the budget refuses from
    the header either way); the full run builds the real images."""
    def real_or_claimed(name: str, side: int, mode: str) -> Path:
        path = folder / name
        if quick:
            return png_claiming_size(path, side, side, mode)
        Image.new(mode, (side, side)).save(path)
        return path

    files = {}
    thin = folder / "thin_1x50000.png"
    Image.new("L", (1, 50_000), 128).save(thin)
    files["thin"] = thin
    files["screen"] = gif_claiming_screen(folder / "screen_1x65535.gif", 1, 65_535)
    files["palette"] = real_or_claimed("palette.png", sizes["palette_side"], "P")
    files["big"] = real_or_claimed("big.png", sizes["big_side"], "RGB")
    one_bit = real_or_claimed("one_bit.png", sizes["bit_side"], "1")
    files["bits_zip"] = folder / "one_bit_pngs.zip"
    with zipfile.ZipFile(files["bits_zip"], "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(sizes["bit_count"]):
            z.write(one_bit, f"bomb{i}.png")
    files["empty_zip"] = folder / "empty_entries.zip"
    with zipfile.ZipFile(files["empty_zip"], "w", zipfile.ZIP_STORED) as z:
        for i in range(sizes["empty_entries"]):
            z.writestr(_short_name(i), b"")
    photo = shape_image("circle", 256, 0)
    files["cam"] = folder / f"photo_{sizes['cam_side']}px.jpg"            # a camera's 36 MP photo
    photo.resize((sizes["cam_side"], sizes["cam_side"]), Image.NEAREST).save(files["cam"], quality=90)
    files["png"] = folder / f"photo_{sizes['png_side']}px.png"            # the biggest RGB PNG the budget takes
    photo.resize((sizes["png_side"], sizes["png_side"]), Image.NEAREST).save(files["png"])
    files["ordinary"] = folder / "ordinary.jpg"
    files["ordinary"].write_bytes(photo_jpeg(400, 300))
    return files


def _short_name(i: int) -> str:
    """A distinct 3-character name for entry `i` (so 118,000 entries fit under the 10 MB upload cap)."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "".join(digits[(i // 62 ** k) % 62] for k in range(3))


def probes(api: QueueClient, files: dict[str, Path], sizes: dict) -> tuple[list[Probe], tuple[int, dict]]:
    """The probes, and what the 4-at-a-time one needs: /predict's fn_index and the uploaded files."""
    predict, many = api.fn_index("predict"), api.fn_index("predict_batch")
    look = api.fn_index(output_label="Where the model looked (red = most)")
    up = {name: api.upload(path) for name, path in files.items()}
    return [
        Probe("thin_png", "1×50,000 PNG on /predict", lambda: api.call(predict, [up["thin"]])),
        Probe("gif_screen", "35-byte GIF, 1×65,535 screen, on /predict", lambda: api.call(predict, [up["screen"]])),
        Probe("palette_png", f"{sizes['palette_side']:,}² palette PNG on /predict",
              lambda: api.call(predict, [up["palette"]])),
        Probe("big_png_batch", f"{sizes['big_side']:,}² PNG ×{sizes['big_count']} on /predict_batch",
              lambda: api.call(many, [[up["big"]] * sizes["big_count"]])),
        Probe("one_bit_zip", f"zip of {sizes['bit_count']} 1-bit {sizes['bit_side']:,}² PNGs on /predict_batch",
              lambda: api.call(many, [[up["bits_zip"]]])),
        Probe("references", f"one photo referenced {sizes['references']:,} times on /predict_batch",
              lambda: api.call(many, [[up["ordinary"]] * sizes["references"]])),
        Probe("empty_entries", f"zip of {sizes['empty_entries']:,} empty entries ×{sizes['empty_references']}",
              lambda: api.call(many, [[up["empty_zip"]] * sizes["empty_references"]])),
        Probe("gradcam", f"Grad-CAM of a {sizes['cam_side']:,}² JPEG ({sizes['cam_side'] ** 2 / 1e6:.0f} MP)",
              lambda: api.call(look, [up["cam"], True])),
        Probe("big_png", f"/predict of a {sizes['png_side']:,}² RGB PNG ({sizes['png_side'] ** 2 / 1e6:.0f} MP)",
              lambda: api.call(predict, [up["png"]])),
        Probe("big_png_gradcam", f"Grad-CAM of the same {sizes['png_side'] ** 2 / 1e6:.0f} MP PNG",
              lambda: api.call(look, [up["png"], True])),
    ], (predict, up)


def reset_peak(pid: int) -> float:
    """Reset the process's peak-RSS mark; its resident memory now (MiB), the probe's 'idle'."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")
    return rss_mb(pid)


def measure(pid: int, probe: Probe) -> float | None:
    """Run one probe and print its lines; its peak above idle (MiB) if it was accepted, else None."""
    idle = reset_peak(pid)
    t0 = time.perf_counter()
    ok, message = probe.send()
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb(pid) - idle
    emit(f"{probe.name}_s", seconds)
    emit(f"{probe.name}_peak_mb", peak)
    emit(f"{probe.name}_refused", 0 if ok else 1)
    note(f"{probe.name:14s} {seconds:7.2f} s  +{peak:6.0f} MB  {'ok' if ok else 'refused'}: {message[:110]}"
         f"   [{probe.what}]")
    return peak if ok else None


def four_at_once(pid: int, api: QueueClient, worst: Probe, predict: int, ordinary: dict) -> None:
    """The worst accepted request 4 times at once, and an ordinary /predict timed over and over meanwhile."""
    idle = reset_peak(pid)
    done = threading.Event()
    answers, latencies = [], []

    def worst_call() -> None:
        answers.append(worst.send()[0])

    def ordinary_calls() -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            api.call(predict, [ordinary])
            latencies.append(time.perf_counter() - t0)

    heavy = [threading.Thread(target=worst_call) for _ in range(4)]
    t0 = time.perf_counter()
    for t in heavy:
        t.start()
    time.sleep(0.05)                                        # the four are queued first
    light = threading.Thread(target=ordinary_calls)
    light.start()
    for t in heavy:
        t.join()
    done.set()
    light.join()
    emit("worst_x4_s", time.perf_counter() - t0)
    emit("worst_x4_peak_mb", peak_rss_mb(pid) - idle)
    emit("worst_x4_accepted", sum(answers))
    emit("ordinary_during_p50_s", percentile(latencies, 50))
    emit("ordinary_during_max_s", max(latencies))
    note(f"{'worst_x4':14s} {worst.name} ×4: +{peak_rss_mb(pid) - idle:.0f} MB; ordinary /predict meanwhile: "
         f"{len(latencies)} answered, p50 {percentile(latencies, 50):.2f} s, max {max(latencies):.2f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small stand-ins for the big images, for CI (~1 min)")
    p.add_argument("--model", help="model folder for the app (default: a random-weight default model)")
    args = p.parse_args()
    sizes = QUICK if args.quick else FULL
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = build_inputs(tmp, sizes, args.quick)
        model = Path(args.model) if args.model else make_model_folder(tmp / "model", "default")
        with running_app(model, tmp) as (url, proc):
            connect(url, proc, 300)   # a loaded machine can take minutes to start the app
            api = QueueClient(url)
            listed, (predict, up) = probes(api, files, sizes)
            api.call(predict, [up["ordinary"]])                      # warm-up, untimed
            emit("idle_rss_mb", rss_mb(proc.pid))
            peaks = {probe.name: measure(proc.pid, probe) for probe in listed}
            worst = max((p for p in listed if peaks[p.name] is not None), key=lambda p: peaks[p.name])
            four_at_once(proc.pid, api, worst, predict, up["ordinary"])
            time.sleep(SETTLE_S)
            emit("rss_after_burst_mb", rss_mb(proc.pid))


if __name__ == "__main__":
    main()
