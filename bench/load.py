"""Load test of the app's /predict endpoint through the Gradio API, on loopback only.

Why: the app must keep answering, without errors or growing memory, when several people use it
at once; and we want to know how many photos a second it serves on this machine.

How: the app is launched as in cold_start.py (or `--url` points at a running one; `--pid` then
lets its memory be read). `--clients` threads each hold their own gradio_client.Client (the same
client and upload path a Python user gets) and send 400x300 JPEGs to /predict until `--requests`
have been sent or `--time-limit` has passed. gradio_client is heavy: it spends ~90 ms of CPU per
request, three times the app's, on the same two cores. `--transport httpx` takes the same three
REST steps (upload, queue the call, read the result stream) with plain httpx at ~5 ms per request,
so the app, not the load generator, is what is measured. Each client first sends one untimed warm-up request.
Latency is per request (upload + queue + inference + result); errors are counted, never retried.
The app's resident memory is sampled every `--sample-every` completed requests; `rss_growth_mb`
is the mean of the last quarter of samples minus the mean of the first quarter (a steady leak
shows as growth that scales with `--requests`).

Note: the load generator runs on the same CPUs as the app, so `requests_per_s` is a floor;
`app_cpu_ms_per_request` and `client_cpu_ms_per_request` say how the CPU time was shared.

    python bench/load.py                        # 500 requests from 16 clients
    python bench/load.py --clients 8
    python bench/load.py --quick                # ~40 requests from 4 clients, for CI
    python bench/load.py --url http://127.0.0.1:7860/ --pid 1234
"""
from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

from common import (busy_cores, connect, cpu_seconds, emit, make_model_folder, note, percentile, photo_jpeg, rss_mb,
                    running_app)


class Load:
    """Shared state of one load run: which request comes next, latencies, errors, memory samples."""

    def __init__(self, requests: int, deadline: float, pid: int | None, sample_every: int):
        self.lock = threading.Lock()
        self.requests, self.deadline, self.pid, self.sample_every = requests, deadline, pid, sample_every
        self.sent = 0
        self.latencies_ms: list[float] = []
        self.errors: list[str] = []
        self.rss_samples: list[float] = []

    def take(self) -> int | None:
        """The number of the next request to send, or None when the run is over."""
        with self.lock:
            if self.sent >= self.requests or time.monotonic() > self.deadline:
                return None
            self.sent += 1
            return self.sent

    def done(self, ms: float | None, error: str | None) -> None:
        with self.lock:
            if error is None:
                self.latencies_ms.append(ms)
            else:
                self.errors.append(error)
            finished = len(self.latencies_ms) + len(self.errors)
            if self.pid and finished % self.sample_every == 0:
                self.rss_samples.append(rss_mb(self.pid))


class GradioClientPredictor:
    """/predict through gradio_client, as a Python user calls the app."""

    def __init__(self, url: str, proc, timeout: float):
        self.client = connect(url, proc, timeout)

    def __call__(self, photo: str):
        from gradio_client import handle_file

        return self.client.predict(handle_file(photo), api_name="/predict")


class HttpxPredictor:
    """/predict through Gradio's REST API with plain httpx: upload the file, queue the call, read
    the result stream. The same three steps gradio_client takes, with far less client-side CPU."""

    def __init__(self, url: str, proc, timeout: float):
        import httpx

        connect(url, proc, timeout)  # waits until the app answers
        self.http = httpx.Client(base_url=url.rstrip("/") + "/gradio_api", timeout=timeout)

    def __call__(self, photo: str):
        with open(photo, "rb") as f:
            upload = self.http.post("/upload", files={"files": (Path(photo).name, f, "image/jpeg")})
        upload.raise_for_status()
        data = [{"path": upload.json()[0], "meta": {"_type": "gradio.FileData"}}]
        call = self.http.post("/call/predict", json={"data": data})
        call.raise_for_status()
        result = self.http.get(f"/call/predict/{call.json()['event_id']}")
        result.raise_for_status()
        event = result.text.split("event: ")[-1]        # the last server-sent event
        if not event.startswith("complete"):
            raise RuntimeError(f"the app answered {event[:200]!r}")
        return json.loads(event.split("data: ", 1)[1])


TRANSPORTS = {"gradio_client": GradioClientPredictor, "httpx": HttpxPredictor}


def client_loop(predict, photos: list[str], load: Load) -> None:
    while (n := load.take()) is not None:
        t0 = time.perf_counter()
        try:
            answer = predict(photos[n % len(photos)])
            error = None if answer else f"empty answer {answer!r}"
        except Exception as e:  # an error is a result here, not a crash
            error = f"{type(e).__name__}: {e}"
        load.done(1000 * (time.perf_counter() - t0), error)


def run_load(url: str, proc, pid: int | None, photos: list[str], args) -> None:
    clients = [TRANSPORTS[args.transport](url, proc, args.timeout) for _ in range(args.clients)]
    warm = [threading.Thread(target=predict, args=(photos[0],)) for predict in clients]
    for t in warm:
        t.start()
    for t in warm:
        t.join()
    rss_before = rss_mb(pid) if pid else None

    load = Load(args.requests, time.monotonic() + args.time_limit, pid, args.sample_every)
    threads = [threading.Thread(target=client_loop, args=(c, photos, load)) for c in clients]
    app_cpu0, own_cpu0 = cpu_seconds(pid) if pid else 0.0, time.process_time()
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    own_cpu = time.process_time() - own_cpu0

    finished = len(load.latencies_ms) + len(load.errors)
    if finished < args.requests:
        note(f"time limit ({args.time_limit:.0f} s) reached after {finished} of {args.requests} requests")
    for e in sorted(set(load.errors))[:5]:
        note(f"error: {e}")
    emit("requests", finished)
    emit("errors", len(load.errors))
    if load.latencies_ms:
        emit("p50_ms", percentile(load.latencies_ms, 50))
        emit("p99_ms", percentile(load.latencies_ms, 99))
    emit("requests_per_s", len(load.latencies_ms) / elapsed)
    emit("clients", args.clients)
    emit("client_cpu_ms_per_request", 1000 * own_cpu / max(1, finished))   # the load generator's share
    if pid:
        emit("rss_before_mb", rss_before)
        emit("rss_after_mb", rss_mb(pid))
        emit("app_cpu_ms_per_request", 1000 * (cpu_seconds(pid) - app_cpu0) / max(1, finished))
        samples = load.rss_samples
        if samples:
            emit("rss_middle_mb", samples[len(samples) // 2])
        if len(samples) >= 4:
            q = len(samples) // 4
            emit("rss_growth_mb", sum(samples[-q:]) / q - sum(samples[:q]) / q)
        note("RSS samples (MiB): " + " ".join(f"{s:.0f}" for s in samples))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="a running app (default: launch app.py on a free loopback port)")
    p.add_argument("--pid", type=int, help="with --url: the app's process id, to sample its memory")
    p.add_argument("--model", help="model folder for the launched app (default: a random-weight default model)")
    p.add_argument("--requests", type=int, default=500, help="requests to send in all")
    p.add_argument("--clients", type=int, default=16, help="concurrent clients (one thread each)")
    p.add_argument("--transport", choices=sorted(TRANSPORTS), default="gradio_client",
                   help="gradio_client (what users run) or httpx against the REST API (lighter client)")
    p.add_argument("--time-limit", type=float, default=300, help="stop sending after this many seconds")
    p.add_argument("--sample-every", type=int, default=0, help="sample RSS every N requests (0 = requests/20)")
    p.add_argument("--timeout", type=float, default=120, help="seconds to wait for the app to answer at all")
    p.add_argument("--quick", action="store_true", help="40 requests from 4 clients, for CI")
    args = p.parse_args()
    if args.quick:
        args.requests, args.clients, args.time_limit = 40, 4, 60
    args.sample_every = args.sample_every or max(1, args.requests // 20)
    emit("busy_cores_at_start", busy_cores())  # > 0.2: numbers taken under contention

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = []
        for i in range(8):
            photos.append(str(tmp / f"photo{i}.jpg"))
            Path(photos[-1]).write_bytes(photo_jpeg(400, 300, seed=i))
        if args.url:
            run_load(args.url, None, args.pid, photos, args)
        else:
            model = Path(args.model) if args.model else make_model_folder(tmp / "model", "default")
            with running_app(model, tmp) as (url, proc):
                run_load(url, proc, proc.pid, photos, args)


if __name__ == "__main__":
    main()
