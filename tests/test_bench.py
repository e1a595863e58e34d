"""The benchmark scripts run (their --quick modes) and print their `NAME VALUE` lines.

Only that they work and report is checked here, never how fast anything is: timings belong to
the benchmarks' output, not to assertions.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
HAS_APP = (ROOT / "app.py").exists()

EXPECTED = {
    "batch.py": ["photos", "single_photos_per_s", "batch_photos_per_s", "batch_speedup", "same_label_fraction"],
    "train_speed.py": ["default_images_per_s", "default_fp32_images_per_s", "tutorial_images_per_s", "speedup",
                       "bf16_speedup"],
    "latency.py": ["default_p50_ms", "default_p95_ms", "basic_cnn_p50_ms", "basic_cnn_p95_ms", "latency_ratio",
                   "latency_ratio_same_layout", "default_model_mb", "basic_cnn_model_mb", "opt_default_fused_bn_channels_last_speedup"],
    "cold_start.py": ["cold_start_s", "app_rss_mb", "import_cnn_s", "import_app_s"],
    "hostile.py": [f"{probe}_{value}" for probe in ("thin_png", "gif_screen", "palette_png", "big_png_batch",
                                                     "one_bit_zip", "references", "empty_entries", "gradcam",
                                                     "big_png", "big_png_gradcam")
                                       for value in ("s", "peak_mb", "refused")]
                  + ["idle_rss_mb", "worst_x4_peak_mb", "ordinary_during_max_s", "rss_after_burst_mb"],
    "ood.py": ["probability_worst_unseen_flagged", "energy_worst_unseen_flagged", "knn_worst_unseen_flagged",
               "probability_and_knn_worst_unseen_flagged", "energy_and_knn_worst_unseen_flagged"],
    "ood_kinds.py": [f"{detector}_{value}" for detector in ("energy", "probe", "probe_and_energy", "energy_and_probe")
                     for value in ("unseen_kinds_flagged", "worst_flagged")],
    "load.py": ["requests", "errors", "p50_ms", "p99_ms", "requests_per_s", "rss_before_mb", "rss_middle_mb", "rss_after_mb",
                "rss_growth_mb"],
}
NEEDS_APP = {"cold_start.py", "load.py", "hostile.py"}


def run_quick(script: str, tmp_path: Path, *args: str) -> dict[str, float]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{script} --quick failed:\n{done.stderr[-3000:]}"
    values = {}
    for line in done.stdout.splitlines():
        name, value = line.split(" ")          # every stdout line is exactly `NAME VALUE`
        values[name] = float(value)
    return values


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_quick_mode_reports_its_metrics(script, tmp_path):
    if script in NEEDS_APP and not HAS_APP:
        pytest.skip("app.py does not exist yet")
    values = run_quick(script, tmp_path)
    missing = [name for name in EXPECTED[script] if name not in values]
    assert not missing, f"{script} did not print {missing}; it printed {sorted(values)}"
    assert all(math.isfinite(values[name]) for name in EXPECTED[script])
    if script == "load.py":
        assert values["requests"] > 0 and values["errors"] == 0
    if script == "hostile.py":   # every bomb refused from its header, the ordinary photos answered
        refused = {name[:-len("_refused")] for name, v in values.items() if name.endswith("_refused") and v == 1}
        assert refused == {"thin_png", "gif_screen", "palette_png", "big_png_batch", "one_bit_zip", "references",
                           "empty_entries"}, refused
        assert values["worst_x4_accepted"] == 4
    if script == "batch.py":
        assert values["photos"] == 20 and values["same_label_fraction"] >= 0.9
    if script == "latency.py":  # every variant must compute the same function as the plain model
        diffs = {k: v for k, v in values.items() if k.endswith("_max_abs_diff")}
        assert diffs and all(v <= 1e-4 for v in diffs.values()), diffs


@pytest.mark.slow
def test_latency_bench_measures_the_bundled_model_and_one_whose_rule_reads_the_features(tmp_path):
    """The bundled model's energy rule reads the answer alone, so every variant serves it, the frozen TorchScript
    module too; a kNN rule hooks the last Linear layer, which that module hides: for it the variant is left out."""
    import shutil

    import torch

    from cnn import ood

    values = run_quick("latency.py", tmp_path, "--model", str(ROOT / "model"))
    assert "opt_default_jit_freeze_p50_ms" in values and values["opt_default_jit_freeze_max_abs_diff"] <= 1e-4
    assert values["opt_default_fused_bn_channels_last_max_abs_diff"] <= 1e-4 and values["latency_ratio"] > 0
    knn_model = tmp_path / "knn_model"
    shutil.copytree(ROOT / "model", knn_model)
    config = json.loads((knn_model / "config.json").read_text())
    config["metrics"].update(detector="energy+knn", unknown_distance_above=0.5)
    (knn_model / "config.json").write_text(json.dumps(config))
    ood.KnnDetector.fit(torch.randn(40, 256)).save(knn_model)
    values = run_quick("latency.py", tmp_path, "--model", str(knn_model))
    assert "opt_default_jit_freeze_p50_ms" not in values and "opt_basic_cnn_jit_freeze_p50_ms" in values


@pytest.mark.slow
def test_ood_bench_reports_every_rate_it_is_given(tmp_path):
    """--rate 0.05 0.2: the first rate's lines keep their names, the second's end in _at_0.2; flagging more
    real photos never catches fewer outliers."""
    values = run_quick("ood.py", tmp_path, "--rate", "0.05", "0.2", "--json", str(tmp_path / "ood.json"))
    rows = json.loads((tmp_path / "ood.json").read_text())
    assert {row["rate"] for row in rows} == {0.05, 0.2}
    for row in rows:
        assert abs(row["real_wrongly_flagged"] - row["rate"]) <= 0.1 and len(row["real_flagged_by_set"]) == 1   # 24 photos
    for name in ("energy", "probability_and_knn"):
        assert values[f"{name}_worst_unseen_flagged_at_0.2"] >= values[f"{name}_worst_unseen_flagged"]


@pytest.mark.slow
def test_gpu_check_packs_the_photos_and_trains_on_the_cpu_when_there_is_no_gpu(tmp_path):
    from imagegen import make_outlier_folder, make_shapes_folder

    src = tmp_path / "data"
    make_shapes_folder(src / "animals", per_class=20, size=120)
    make_shapes_folder(src / "animals-val", per_class=6, size=200)
    make_outlier_folder(src / "other", per_group=8, size=120)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def bench(*args: str) -> dict[str, float]:
        done = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
        return {name: float(value) for name, value in (line.split(" ") for line in done.stdout.splitlines())}

    photos = sorted(p.relative_to(src).as_posix() for p in src.rglob("*.*"))
    (src / "sources.csv").write_text("file,repo\n" + "".join(f"{name},web/{name.split('/')[1]}\n" for name in photos)
                                     + "animals/gone/photo.jpg,web/gone\n")       # a row of no photo is dropped
    pack = tmp_path / "packed" / "photos.zip"
    packed = bench("bench/pack_photos.py", str(src), str(pack), "--side", "40")
    assert packed["packed_photos"] == 60 + 18 + 16 and packed["packed_mib"] < 1
    from PIL import Image
    with zipfile.ZipFile(pack) as z:
        names = z.namelist()
        for part in ("animals/circle/", "animals-val/square/"):                  # 120 and 200 px photos
            first = next(n for n in names if n.startswith(part))
            assert Image.open(z.open(first)).size == (40, 40)                  # their centre squares, at --side
        table = list(csv.DictReader(io.StringIO(z.read("sources.csv").decode())))
    assert len(names) == 94 + 1 and all(n.endswith(".webp") for n in names if n != "sources.csv")
    assert sorted(row["file"] for row in table) == sorted(n for n in names if n != "sources.csv")
    assert {row["repo"] for row in table if row["file"].startswith("animals/circle/")} == {"web/circle"}

    result = bench("bench/gpu_train.py", str(pack), "--quick", "--run-dir", str(tmp_path / "run"))
    assert result["cuda"] == 0 and result["epochs"] == 1 and result["images_per_s"] > 0 and result["minutes"] > 0
    assert 0 <= result["real_val_accuracy"] <= 1 and 0 <= result["outliers_flagged"] <= 1
    assert (tmp_path / "run" / "model" / "config.json").is_file()

    too_big = subprocess.run([sys.executable, "bench/pack_photos.py", str(src), str(tmp_path / "big.zip"), "--max-mib",
                              "0.01"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert too_big.returncode == 1 and "over --max-mib" in too_big.stderr and not list(tmp_path.glob("big.zip*"))


@pytest.mark.slow
def test_the_ablation_sweep_trains_each_change_once_and_reports_both_real_photo_figures(tmp_path):
    from imagegen import make_web_photos
    from test_holdout import make_sourced_data, write_spec

    data = make_sourced_data(tmp_path / "data")
    make_web_photos(data / "animals-val", per_class=6)
    spec = write_spec(tmp_path / "held.json", ["web/shapes-b", "web/other-b"])
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    command = [sys.executable, "bench/ablations.py", "--data", str(data), "--holdout-sources", str(spec),
               "--runs", str(tmp_path / "runs"), "--parallel", "2", "--only", "base", "teacher", "distilled", "--",
               "--epochs", "1", "--image-size", "32", "--progressive-from", "0", "--batch-size", "32", "--workers", "1"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    values = {name: float(value) for name, value in (line.split(" ") for line in done.stdout.splitlines())}
    for name in ("base", "distilled"):
        assert 0 <= values[f"{name}.heldout"] <= 1 and 0 <= values[f"{name}.animals_val"] <= 1
        assert values[f"{name}.worse"] == min(values[f"{name}.heldout"], values[f"{name}.animals_val"])
        assert f"{name}.unseen_background" in values and values[f"{name}.minutes"] > 0
        assert f"{name} " in done.stderr and "held-out" in done.stderr
    runs = tmp_path / "runs"
    teacher = json.loads((runs / "teacher" / "model" / "config.json").read_text())
    assert teacher["model_args"] == {"widths": [48, 96, 192, 384], "depths": [2, 2, 2, 2]}
    distilled = (runs / "distilled" / "command.txt").read_text()
    assert f"--teacher {runs / 'teacher'}" in distilled                  # the sweep's own teacher run
    # two at a time, but the distilled run waited for its teacher's model (base and teacher started together)
    assert (runs / "distilled" / "command.txt").stat().st_mtime >= (runs / "teacher" / "model" / "config.json").stat().st_mtime
    started = (runs / "base" / "model" / "config.json").stat().st_mtime
    again = subprocess.run(command[:command.index("--only")] + ["--only", "base"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "$" not in again.stderr                 # read, not retrained
    assert (runs / "base" / "model" / "config.json").stat().st_mtime == started
    report = subprocess.run(command[:command.index("--only")] + ["--only", "base", "epochs-96", "--report"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=900)
    assert report.returncode == 0 and "$" not in report.stderr and not (runs / "epochs-96").exists()
    assert "base.worse" in report.stdout and "epochs-96" not in report.stdout   # what is not there is not trained


@pytest.mark.slow
@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with gloo is not available")
def test_the_gpu_session_checks_torchrun_and_resume_runs_the_sweep_and_leaves_what_comes_back(tmp_path):
    """bench/gpu_session.sh end to end on the CPU, tiny: a pack with its sources.csv, torchrun's DDP path, a run
    killed with SIGKILL after two epochs and resumed to its end, one ablation, and the files for $OUT."""
    from imagegen import make_web_photos
    from test_holdout import make_sourced_data, write_spec

    data = make_sourced_data(tmp_path / "data")
    make_web_photos(data / "animals-val", per_class=6)
    spec = write_spec(tmp_path / "held.json", ["web/shapes-b", "web/other-b"])
    pack = tmp_path / "packed" / "photos.zip"
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "OUT": str(tmp_path / "out"), "RUNS": str(tmp_path / "runs"), "HOLDOUT": str(spec), "SWEEP": "base", "KEEP": "base",
           "KILLED_EPOCHS": "12", "OMP_NUM_THREADS": "1",
           "EXTRA": "--epochs 1 --image-size 32 --progressive-from 0 --batch-size 16 --workers 1 --device cpu"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(name, None)
    packed = subprocess.run([sys.executable, "bench/pack_photos.py", str(data), str(pack), "--side", "40"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert packed.returncode == 0, packed.stderr[-3000:]
    done = subprocess.run(["bash", "bench/gpu_session.sh", str(pack)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "device cpu x1 (DistributedDataParallel, gloo)" in done.stdout
    killed = re.search(r"killed_exit (\d+) after_epochs (\d+)", done.stdout)
    assert killed and killed[1] == "137" and 2 <= int(killed[2]) < 12        # SIGKILL, two (or a few more) epochs in
    assert "resumed_exit 0" in done.stdout and "resuming" in done.stdout and f"resumed_epochs {list(range(1, 13))}" in done.stdout
    assert "base.worse" in done.stdout and "base " in done.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["base.tar", "runs.tar.gz"]
    with tarfile.open(tmp_path / "out" / "base.tar") as tar:
        assert "model/model.safetensors" in tar.getnames()
    with tarfile.open(tmp_path / "out" / "runs.tar.gz") as tar:
        names = tar.getnames()
    assert "./base/metrics.json" in names and "./killed/metrics.json" in names and not any(n.endswith(".pt") for n in names)
