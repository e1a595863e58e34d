"""Photos per second: a batch of photo files classified at once (page.batch), against the same files one at a time.

Why: people send a folder or a zip, not one photo; on the 2-core Space the batch path should decode and
classify them in forward passes of page.batch.BATCH_SIZE rather than one pass per photo.

How: `--photos` 400x300 JPEGs (generated, distinct) are written to a temporary folder. Both paths start
from the files on disk and end with each photo's top label: `single` calls `Classifier.predict` for each
file in turn (what /predict does per request), `batch` calls `page.batch.classify_uploads` on the whole
list. The two alternate `--rounds` times after one untimed warm-up of each; the median round counts.

    python bench/batch.py --model model          # 200 photos, the bundled model
    python bench/batch.py --quick                # 20 photos, random weights, for CI
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import busy_cores, emit, make_model_folder, note, photo_jpeg

from page.batch import BATCH_SIZE, Upload, classify_uploads
from cnn.inference import Classifier


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a model folder (default: a random-weight default model)")
    p.add_argument("--photos", type=int, default=200, help="photos in the batch")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds of each path")
    p.add_argument("--quick", action="store_true", help="20 photos, one round, for CI")
    args = p.parse_args()
    if args.quick:
        args.photos, args.rounds = 20, 1
    emit("busy_cores_at_start", busy_cores())  # > 0.2: numbers taken under contention

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clf = Classifier.from_pretrained(args.model or make_model_folder(tmp / "model"))
        uploads = []
        for i in range(args.photos):
            path = tmp / f"photo{i:04d}.jpg"
            path.write_bytes(photo_jpeg(400, 300, seed=i))
            uploads.append(Upload(path.name, path))

        def single() -> list[str]:
            return [clf.predict(u.path, k=1)[0][0] for u in uploads]

        def batched() -> list[str]:
            return [row.label for row in classify_uploads(clf, uploads)]

        same = sum(a == b for a, b in zip(single(), batched()))   # also the untimed warm-up of both paths
        times: dict[str, list[float]] = {"single": [], "batch": []}
        for _ in range(args.rounds):
            for name, run in (("single", single), ("batch", batched)):
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
        note("seconds per round: " + ", ".join(f"{k} {' '.join(f'{t:.2f}' for t in v)}" for k, v in times.items()))
        emit("photos", args.photos)
        emit("batch_size", BATCH_SIZE)
        single_rate = args.photos / statistics.median(times["single"])
        batch_rate = args.photos / statistics.median(times["batch"])
        emit("single_photos_per_s", single_rate)
        emit("batch_photos_per_s", batch_rate)
        emit("batch_speedup", batch_rate / single_rate)
        emit("same_label_fraction", same / args.photos)   # batching must not change answers (1 = none changed)


if __name__ == "__main__":
    main()
