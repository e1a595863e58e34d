"""The benchmark scripts run (their --quick modes) and print their `NAME VALUE` lines.

Only that they work and report is checked here, never how fast anything is: timings belong to
the benchmarks' output, not to assertions.
"""
from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HAS_APP = (ROOT / "app.py").exists()

EXPECTED = {
    "batch.py": ["photos", "single_photos_per_s", "batch_photos_per_s", "batch_speedup", "same_label_fraction"],
    "train_speed.py": ["default_images_per_s", "tutorial_images_per_s", "speedup"],
    "latency.py": ["default_p50_ms", "default_p95_ms", "basic_cnn_p50_ms", "basic_cnn_p95_ms", "latency_ratio",
                   "default_model_mb", "basic_cnn_model_mb", "opt_default_fused_bn_channels_last_speedup"],
    "cold_start.py": ["cold_start_s", "app_rss_mb", "import_cnn_s", "import_app_s"],
    "load.py": ["requests", "errors", "p50_ms", "p99_ms", "requests_per_s", "rss_before_mb", "rss_middle_mb", "rss_after_mb",
                "rss_growth_mb"],
}
NEEDS_APP = {"cold_start.py", "load.py"}


def run_quick(script: str, tmp_path: Path) -> dict[str, float]:
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
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
    if script == "batch.py":
        assert values["photos"] == 20 and values["same_label_fraction"] >= 0.9
    if script == "latency.py":  # every variant must compute the same function as the plain model
        diffs = {k: v for k, v in values.items() if k.endswith("_max_abs_diff")}
        assert diffs and all(v <= 1e-4 for v in diffs.values()), diffs
