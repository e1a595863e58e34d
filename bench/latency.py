"""Single-photo latency of `Classifier.predict` on the CPU, and which inference tricks pay off.

Why: the app answers one photo at a time, so what a user waits for is decode + preprocess +
forward (two passes with flip TTA) + top-k for a single image. Our default model is meant to
answer in at most a third of the tutorial's basic_cnn time.

How: both models are saved as model folders exactly as training exports them (random weights
unless `--model DIR` is given for the default one; timing does not depend on the weights) and
loaded with `Classifier.from_pretrained`: the default one as the app serves it (channels-last), the
tutorial's as the tutorial runs it (the default NCHW layout), so that the yardstick does not move when
our serving gets faster; `latency_ratio_same_layout` also times the tutorial's served channels-last.
The input is a 400x300 JPEG generated in memory and passed as bytes, as the app receives it. After warm-up calls, `--runs` calls are timed one by
one; p50 and p95 are reported, in milliseconds.

Then the same `predict` is timed with the model swapped for variants (outputs checked against
the plain model): channels-last memory layout, BatchNorm folded into the convolutions (torch.fx),
both together, TorchScript trace + freeze, torch.compile (its compile time is reported too), and
one torch thread instead of all; and, for scale, the price of flip TTA (`no_tta`). All variants of a model are timed interleaved, in blocks;
`opt_*_speedup` is plain p50 / variant p50 from this same run.

    python bench/latency.py                    # everything, ~2 min on 2 cores
    python bench/latency.py --quick            # a few calls each, no torch.compile, for CI
    python bench/latency.py --model runs/x/model --no-compile
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Callable

from common import busy_cores, emit, folder_mb, make_model_folder, note, percentile, photo_jpeg

import torch  # noqa: E402
from torch import nn  # noqa: E402

from cnn.inference import Classifier  # noqa: E402


def time_calls(fn: Callable[[], object], runs: int, warmup: int) -> list[float]:
    """Milliseconds of each of `runs` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return times


def interleaved(cases: dict[str, tuple[Callable[[], object], int]], runs: int, warmup: int,
                block: int = 10) -> dict[str, list[float]]:
    """Milliseconds per call of each case (a function and the torch threads to run it with), timed
    in alternating blocks of `block` calls, so that a machine that slows down or speeds up during
    the run affects every case alike and the ratios between them stay fair."""
    default_threads = torch.get_num_threads()
    times: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for name, (fn, threads) in cases.items():
            torch.set_num_threads(threads)
            time_calls(fn, 0, warmup)
        for start in range(0, runs, block):
            for name, (fn, threads) in cases.items():
                torch.set_num_threads(threads)
                times[name] += time_calls(fn, min(block, runs - start), 1)
    finally:
        torch.set_num_threads(default_threads)
    return times


class ChannelsLast(nn.Module):
    """Feed the wrapped model NHWC tensors (its weights converted too)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


def fuse_bn(model: nn.Module) -> nn.Module:
    """Conv→BatchNorm pairs folded into single convs (torch.fx; eval mode only)."""
    from torch.fx.experimental.optimization import fuse

    return fuse(copy.deepcopy(model).eval())


def traced_frozen(model: nn.Module, example: torch.Tensor) -> nn.Module:
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, still worth a number
        return torch.jit.freeze(torch.jit.trace(copy.deepcopy(model).eval(), example))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="a trained default model folder (default: random weights)")
    p.add_argument("--runs", type=int, default=200, help="timed predict calls per measurement")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--no-optimisations", dest="optimisations", action="store_false",
                   help="only the plain latency of both models")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile (slow to compile)")
    p.add_argument("--quick", action="store_true", help="a few calls each and no torch.compile, for CI")
    args = p.parse_args()
    if args.quick:
        args.runs, args.warmup, args.compile = 5, 2, False
    threads = torch.get_num_threads()
    note(f"torch threads {threads}")
    emit("busy_cores_at_start", busy_cores())  # > 0.2: numbers taken under contention
    photo = photo_jpeg(400, 300)

    with tempfile.TemporaryDirectory() as tmp:
        folders = {"default": Path(args.model) if args.model else make_model_folder(Path(tmp) / "default", "default"),
                   "basic_cnn": make_model_folder(Path(tmp) / "basic_cnn", "tutorial")}
        clfs = {name: Classifier.from_pretrained(folder, channels_last=name == "default")
                for name, folder in folders.items()}
        served_tutorial = Classifier.from_pretrained(folders["basic_cnn"])
        times = interleaved({**{name: (partial(clf.predict, photo), threads) for name, clf in clfs.items()},
                             "basic_cnn_channels_last": (partial(served_tutorial.predict, photo), threads)},
                            args.runs, args.warmup)
        for name in clfs:
            emit(f"{name}_p50_ms", percentile(times[name], 50))
            emit(f"{name}_p95_ms", percentile(times[name], 95))
        emit("latency_ratio", percentile(times["default"], 50) / percentile(times["basic_cnn"], 50))
        emit("latency_ratio_same_layout",
             percentile(times["default"], 50) / percentile(times["basic_cnn_channels_last"], 50))
        for name, folder in folders.items():
            emit(f"{name}_model_mb", folder_mb(folder))

        # where the default model's time goes
        clf = clfs["default"]
        x = clf.preprocess(photo)
        batch = torch.cat([x, x.flip(3)]) if clf.tta_flip else x
        served = batch.contiguous(memory_format=torch.channels_last) if clf.channels_last else batch
        emit("default_preprocess_ms", percentile(time_calls(lambda: clf.preprocess(photo), args.runs, args.warmup), 50))
        with torch.inference_mode():
            emit("default_forward_ms", percentile(time_calls(lambda: clf.model(served), args.runs, args.warmup), 50))

        if args.optimisations:
            for name, clf in clfs.items():
                measure_variants(name, clf, photo, batch if name == "default" else clf.preprocess(photo),
                                 args, threads)


def measure_variants(name: str, clf: Classifier, photo: bytes, example: torch.Tensor, args, threads: int) -> None:
    """predict p50 with the model swapped for each variant; speedups against the plain model (NCHW, the layout
    each variant then chooses for itself)."""
    served, served_layout = clf.model, clf.channels_last
    plain = copy.deepcopy(served).to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        reference = plain(example)
    builders: dict[str, Callable[[], nn.Module]] = {
        "channels_last": lambda: ChannelsLast(copy.deepcopy(plain)),
        "fused_bn": lambda: fuse_bn(plain),
        "fused_bn_channels_last": lambda: ChannelsLast(fuse_bn(plain)),
        "jit_freeze": lambda: traced_frozen(plain, example),
    }
    if args.compile:
        builders["compile"] = lambda: torch.compile(copy.deepcopy(plain))
    if clf.reads_features:   # a frozen TorchScript module hides the layer whose input the kNN distance reads
        del builders["jit_freeze"]
        note(f"{name}: jit_freeze skipped, its 'none of the ten' rule reads the penultimate features (kNN)")
    models = {"plain": plain}
    for variant, build in builders.items():
        t0 = time.perf_counter()
        models[variant] = build()
        with torch.inference_mode():
            out = models[variant](example)            # the first call traces / compiles
        if variant in ("compile", "jit_freeze"):
            emit(f"opt_{name}_{variant}_build_s", time.perf_counter() - t0)
        emit(f"opt_{name}_{variant}_max_abs_diff", float((out - reference).abs().max()))

    def predict_with(model: nn.Module) -> Callable[[], object]:
        def call():
            clf.model, clf.channels_last = model, False     # each variant feeds its model its own layout
            try:
                return clf.predict(photo)
            finally:
                clf.model, clf.channels_last = served, served_layout
        return call

    cases = {variant: (predict_with(model), threads) for variant, model in models.items()}
    if clf.tta_flip:  # not an optimisation but a trade: one forward pass instead of two, less accuracy
        predict_plain = predict_with(plain)

        def without_tta():
            clf.tta_flip = False
            try:
                return predict_plain()
            finally:
                clf.tta_flip = True
        cases["no_tta"] = (without_tta, threads)
    for n in sorted({1, threads} - {threads}):  # the plain model with fewer threads
        cases[f"threads{n}"] = (predict_with(plain), n)
        cases[f"fused_bn_channels_last_threads{n}"] = (predict_with(models["fused_bn_channels_last"]), n)
    times = interleaved(cases, args.runs, args.warmup)
    base = percentile(times["plain"], 50)
    emit(f"opt_{name}_plain_threads{threads}_p50_ms", base)
    for variant in cases:
        if variant != "plain":
            p = percentile(times[variant], 50)
            emit(f"opt_{name}_{variant}_p50_ms", p)
            emit(f"opt_{name}_{variant}_speedup", base / p)


if __name__ == "__main__":
    main()
