"""Training end to end: a learnable task, the run folder, exact resume (also after kill -9),
damaged checkpoints, unwritable folders, DDP on CPU, the evaluate command and the tutorial preset."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

import cnn.engine as engine
from cnn.config import TrainConfig, make_config
from cnn.engine import fit, load_checkpoint
from imagegen import make_awkward_folder, make_outlier_folder, make_shapes_folder, outlier_image, shape_image
from train.__main__ import main as train_main, parse_args
from cnn.data import map_labels
from cnn.wording import percent
from train.evaluate import main as evaluate_main

REPO = Path(__file__).resolve().parents[1]
TIMING = ("images_per_s", "seconds")  # the only history fields allowed to differ between equal runs


def history(run: Path) -> list[dict]:
    rows = json.loads((run / "metrics.json").read_text())["history"]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model" / "model.safetensors"))


def assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def subprocess_env() -> dict[str, str]:
    """The test's environment (its XDG cache), one thread per process, and this checkout importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("train-cache")


# --- (a) a real training run and its folder ---------------------------------------------------------

def test_training_learns_and_writes_the_run_folder(trained_run):
    for name in ("train_config.json", "split.json", "metrics.json", "curves.png", "confusion.png", "mistakes.png",
                 "checkpoints/last.pt", "checkpoints/best.pt", "model/config.json", "model/model.safetensors",
                 "model/README.md"):
        assert (trained_run / name).is_file(), name
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert {"best_val_accuracy", "epochs", "per_class", "confusion_matrix", "history"} <= metrics.keys()
    assert metrics["epochs"] == len(metrics["history"]) == 4
    assert metrics["best_val_accuracy"] >= 0.8        # chance is 1/3
    assert set(metrics["per_class"]) == {"circle", "square", "triangle"}

    split = json.loads((trained_run / "split.json").read_text())
    assert not set(split["train"]) & set(split["val"]) and len(split["train"]) + len(split["val"]) == 120
    assert sum(map(sum, metrics["confusion_matrix"])) == len(split["val"])
    assert not list(trained_run.rglob(".*.tmp-*"))   # atomic writes leave nothing behind
    assert not (trained_run / "model" / "mistakes.png").exists()   # the user's photos never travel with the model

    config = json.loads((trained_run / "model" / "config.json").read_text())
    assert config["label_names"] == ["circle", "square", "triangle"]
    assert config["metrics"]["val_accuracy"] == metrics["best_val_accuracy"]
    saved = TrainConfig.from_dict(json.loads((trained_run / "train_config.json").read_text()))
    assert saved.epochs == 4 and saved.image_size == 48


def test_same_seed_same_run(shapes_dir, tmp_path, cache_dir):
    common = dict(data=str(shapes_dir), epochs=1, image_size=32, batch_size=32, workers=1, cache_dir=str(cache_dir),
                  model_args={"widths": [8, 16, 32, 64]}, seed=11)
    a = fit(make_config(run_dir=str(tmp_path / "a"), **common))
    b = fit(make_config(run_dir=str(tmp_path / "b"), **common))
    assert history(a) == history(b)
    assert_same_tensors(weights(a), weights(b))


# --- (b) resume replays exactly what an uninterrupted run does -----------------------------------------

class Crash(Exception):
    pass


def test_resume_equals_uninterrupted(shapes_dir, tmp_path, cache_dir, monkeypatch):
    # EMA on, so its state is part of what must survive the restart.
    common = dict(data=str(shapes_dir), epochs=4, image_size=32, batch_size=16, lr=0.05, ema_decay=0.9,
                  workers=1, cache_dir=str(cache_dir), model_args={"widths": [8, 16, 32, 64]}, seed=5)
    full = fit(make_config(run_dir=str(tmp_path / "full"), **common))

    real_write_metrics = engine.write_metrics

    def crash_after_epoch_2(run_dir, rows, *args, **kwargs):
        real_write_metrics(run_dir, rows, *args, **kwargs)
        if len(rows) == 2:
            raise Crash  # the process dies right after epoch 2's checkpoint

    monkeypatch.setattr(engine, "write_metrics", crash_after_epoch_2)
    cut = tmp_path / "cut"
    with pytest.raises(Crash):
        fit(make_config(run_dir=str(cut), **common))
    monkeypatch.setattr(engine, "write_metrics", real_write_metrics)
    assert json.loads((cut / "metrics.json").read_text())["epochs"] == 2
    assert not (cut / "model").exists()
    leftover = cut / "checkpoints" / ".last.pt.tmp-123"     # a write cut short by an earlier crash
    leftover.write_bytes(b"PK\x03\x04 half a checkpoint")

    cfg = TrainConfig.from_dict(json.loads((cut / "train_config.json").read_text()))
    fit(cfg, resume=cut)
    # On CPU the replay is bit-exact: no tolerance.
    assert history(cut) == history(full)
    assert_same_tensors(weights(cut), weights(full))
    a, b = load_checkpoint(cut / "checkpoints" / "last.pt"), load_checkpoint(full / "checkpoints" / "last.pt")
    assert_same_tensors(a["model"], b["model"])
    assert_same_tensors(a["ema"], b["ema"])
    assert a["optimizer"]["state"].keys() == b["optimizer"]["state"].keys()
    for k in a["optimizer"]["state"]:
        assert torch.equal(a["optimizer"]["state"][k]["momentum_buffer"], b["optimizer"]["state"][k]["momentum_buffer"])
    assert leftover.read_bytes().startswith(b"PK")          # ignored, never read as a checkpoint


# --- (c) kill -9 in the middle of training, then --resume -----------------------------------------------

def cli_args(data: Path, cache: Path, run: Path, epochs: int) -> list[str]:
    return ["--data", str(data), "--image-size", "32", "--batch-size", "16", "--epochs", str(epochs),
            "--lr", "0.05", "--seed", "3", "--workers", "1", "--cache-dir", str(cache), "--run-dir", str(run)]


def run_train(args: list[str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "train", *args], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_kill_9_then_resume_matches_an_uninterrupted_run(shapes_dir, tmp_path, cache_dir):
    epochs = 4
    reference = run_train(cli_args(shapes_dir, cache_dir, tmp_path / "reference", epochs))
    assert reference.returncode == 0, reference.stderr[-3000:]

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "train", *cli_args(shapes_dir, cache_dir, run, epochs)], cwd=REPO,
                            env=subprocess_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoints" / "last.pt").exists():
            assert proc.poll() is None, "training exited before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 120 s"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)   # no cleanup, no atexit: as if the machine died
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done = load_checkpoint(run / "checkpoints" / "last.pt")["epoch"]
    assert 1 <= done < epochs, "the run finished before it could be killed; the test proves nothing"
    assert not (run / "model").exists()

    resumed = run_train(["--resume", str(run)])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {run} after epoch {done}" in resumed.stderr
    # Same seed, same data, same thread count: the CPU replay is exact (tolerance zero), so the
    # validation history and the exported weights must match the uninterrupted run bit for bit.
    assert history(run) == history(tmp_path / "reference")
    assert_same_tensors(weights(run), weights(tmp_path / "reference"))
    final = json.loads((run / "metrics.json").read_text())
    assert final["epochs"] == epochs
    assert final["best_val_accuracy"] == json.loads((tmp_path / "reference" / "metrics.json").read_text())["best_val_accuracy"]


# --- (d) damaged checkpoints ------------------------------------------------------------------------

def copy_run(trained_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


def test_truncated_checkpoint_is_refused(trained_run, tmp_path, caplog, monkeypatch):
    run = copy_run(trained_run, tmp_path)
    last = run / "checkpoints" / "last.pt"
    blob = last.read_bytes()
    last.write_bytes(blob[: len(blob) // 2])
    before = (run / "model" / "model.safetensors").read_bytes()
    monkeypatch.setattr(engine, "train_one_epoch", lambda *a, **k: pytest.fail("trained on a damaged checkpoint"))
    assert train_main(["--resume", str(run)]) == 1
    message = "\n".join(r.getMessage() for r in caplog.records)
    assert "damaged or incomplete" in message and str(last) in message and "not loaded" in message
    assert (run / "model" / "model.safetensors").read_bytes() == before
    with pytest.raises(RuntimeError, match="damaged or incomplete"):
        load_checkpoint(last)


def test_resume_without_a_checkpoint_says_so(trained_run, tmp_path, caplog):
    run = copy_run(trained_run, tmp_path)
    shutil.rmtree(run / "checkpoints")
    assert train_main(["--resume", str(run)]) == 1
    assert "stopped before its first epoch ended" in caplog.text


def test_resume_of_a_finished_run_keeps_its_results(trained_run, tmp_path):
    run = copy_run(trained_run, tmp_path)
    (run / "checkpoints" / ".last.pt.tmp-123").write_bytes(b"junk")
    assert train_main(["--resume", str(run)]) == 0
    assert history(run) == history(trained_run)
    assert_same_tensors(weights(run), weights(trained_run))
    card = (run / "model" / "README.md").read_text()   # re-exported, still showing how the run began
    assert "--resume" not in card and (run / "command.txt").read_text().strip() in card


def test_resume_of_a_finished_run_can_export_another_detector(real_run, tmp_path):
    """--resume RUN --detector probability+knn re-exports the same weights with another "none of the ten" rule,
    and back: the kNN bank comes and goes with the rule."""
    run = copy_run(real_run, tmp_path)
    before = json.loads((run / "model" / "config.json").read_text())["metrics"]
    assert train_main(["--resume", str(run), "--detector", "probability+knn"]) == 0
    after = json.loads((run / "model" / "config.json").read_text())["metrics"]
    assert after["detector"] == "probability+knn" and "unknown_energy_above" not in after
    assert after["unknown_below"] > 0 and after["unknown_distance_above"] > 0
    assert after["real_val_accuracy"] == before["real_val_accuracy"]         # the same weights
    assert (run / "model" / "detector.safetensors").is_file()                # the kNN bank, for this rule
    assert json.loads((run / "train_config.json").read_text())["detector"] == "probability+knn"
    assert train_main(["--resume", str(run), "--detector", "energy"]) == 0
    again = json.loads((run / "model" / "config.json").read_text())["metrics"]
    assert again["detector"] == "energy" and not (run / "model" / "detector.safetensors").exists()
    assert history(run) == history(real_run)


def test_the_export_keeps_the_softening_under_which_the_worse_set_is_most_accurate():
    """Two sets of two photos (labels 0, 1, 0, 1): without softening the second set is half wrong, at σ 0.5 the
    first, at σ 1 neither: the worse set decides, and of equally good softenings the least blur is kept."""
    from cnn.ood import Outputs

    right, wrong = [1.0, 0.0], [0.0, 1.0]             # probabilities that answer label 0
    answers = {0.0: [right, [0.0, 1.0], right, right], 0.5: [wrong, [0.0, 1.0], right, [1.0, 0.0]],
               1.0: [right, [0.0, 1.0], right, [0.0, 1.0]]}
    targets = torch.tensor([0, 1, 0, 1])

    def outputs_at(blur):
        probs = torch.tensor(answers[blur])
        return Outputs(probs, probs.log(), torch.zeros(4, 2))

    assert engine.pick_blur_sigma((0.0, 0.5), [2, 2], targets, outputs_at)[0] == 0.0      # a tie: no blur
    best, tried = engine.pick_blur_sigma((1.0, 0.5, 0.0), [2, 2], targets, outputs_at)
    assert best == 1.0 and list(tried) == [0.0, 0.5, 1.0]
    assert engine.worst_accuracy(tried[0.5].probs, targets, [2, 2]) == 0.5


def test_resume_of_a_finished_run_can_export_another_softening(trained_run, tmp_path):
    """The run exported with the default softenings tried (the best one kept); --resume RUN --blur-sigmas 0
    re-exports the same weights without softening."""
    run = copy_run(trained_run, tmp_path)
    config = json.loads((run / "model" / "config.json").read_text())
    tried = config["metrics"]["accuracy_by_blur_sigma"]
    assert list(tried) == ["0", "0.5"]
    assert config["pretrained_cfg"]["blur_sigma"] == float(max(tried, key=tried.get))
    assert train_main(["--resume", str(run), "--blur-sigmas", "0"]) == 0
    again = json.loads((run / "model" / "config.json").read_text())
    assert again["pretrained_cfg"]["blur_sigma"] == 0.0 and list(again["metrics"]["accuracy_by_blur_sigma"]) == ["0"]
    assert again["metrics"]["val_accuracy"] == config["metrics"]["val_accuracy"]     # the same weights
    assert json.loads((run / "train_config.json").read_text())["blur_sigmas"] == [0.0]
    for bad in ("-0.5", "9"):                      # a model folder refuses more than 8 px (cnn.hub.MAX_BLUR_SIGMA)
        with pytest.raises(SystemExit):
            parse_args(["--data", "x", "--blur-sigmas", "0", bad])


def test_resume_of_a_finished_run_can_export_another_budget(real_run, tmp_path):
    """--resume RUN --unknown-rate 0.2 moves the "none of the ten" threshold so that about a fifth of the real
    photos is flagged (the same weights, the same rule)."""
    run = copy_run(real_run, tmp_path)
    before = json.loads((run / "model" / "config.json").read_text())["metrics"]
    assert train_main(["--resume", str(run), "--unknown-rate", "0.2"]) == 0
    after = json.loads((run / "model" / "config.json").read_text())["metrics"]
    assert after["detector"] == before["detector"] and after["real_val_accuracy"] == before["real_val_accuracy"]
    assert before["val_flagged_unknown"] < 0.12 and 0.15 <= after["val_flagged_unknown"] <= 0.25
    assert json.loads((run / "train_config.json").read_text())["unknown_rate"] == 0.2


# --- (e) an unwritable run folder fails before any work -----------------------------------------------

def test_unwritable_run_folder_fails_early(shapes_dir, tmp_path, caplog, monkeypatch):
    (tmp_path / "a_file").write_text("not a folder")
    run = tmp_path / "a_file" / "run"
    monkeypatch.setattr(engine, "load_images", lambda *a, **k: pytest.fail("decoded photos before checking the run folder"))
    assert train_main(["--data", str(shapes_dir), "--run-dir", str(run), "--device", "cpu"]) == 1
    assert f"cannot write to run folder {str(run)!r}" in caplog.text


def test_full_disk_fails_early(shapes_dir, tmp_path, caplog, monkeypatch):
    import cnn.io

    monkeypatch.setattr(cnn.io.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10 * 2**30, 10 * 2**30, 2**20))
    monkeypatch.setattr(engine, "load_images", lambda *a, **k: pytest.fail("decoded photos before checking the disk"))
    assert train_main(["--data", str(shapes_dir), "--run-dir", str(tmp_path / "run"), "--device", "cpu"]) == 1
    assert "only 1 MiB free under" in caplog.text and "training needs at least 50 MiB" in caplog.text


def test_a_messy_folder_trains_with_one_warning(tmp_path, cache_dir, caplog):
    """Corrupt files, wrong extensions, hidden files and nested junk folders: a warning, not a crash."""
    root, readable, unreadable = make_awkward_folder(tmp_path / "messy")
    run = tmp_path / "run"
    args = ["--data", str(root), "--run-dir", str(run), "--epochs", "1", "--image-size", "32", "--batch-size", "4",
            "--device", "cpu", "--workers", "1", "--cache-dir", str(cache_dir)]
    assert train_main(args) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
                and "optimiser steps" not in r.getMessage()              # (a 1-epoch run is also told it is short,
                and "should scale with the batch" not in r.getMessage()]  # and that batch 4 wants a smaller --lr)
    assert len(warnings) == 1 and f"{len(unreadable)} " in warnings[0], warnings
    assert json.loads((run / "model" / "config.json").read_text())["label_names"] == ["dog", "cat"]  # cane, gatto
    split = json.loads((run / "split.json").read_text())
    assert len(split["train"]) + len(split["val"]) == len(readable)


def test_cli_errors_are_one_line_and_exit_1(tmp_path, caplog):
    assert train_main(["--data", str(tmp_path / "missing"), "--run-dir", str(tmp_path / "run")]) == 1
    assert "does not exist or is not a folder" in caplog.text
    assert not (tmp_path / "run").exists()            # issue 14 item 10: nothing left behind
    with pytest.raises(SystemExit) as e:
        train_main([])
    assert e.value.code == 2


def test_a_run_that_stops_before_training_leaves_no_run_folder(shapes_dir, tmp_path, cache_dir, caplog, monkeypatch):
    """Issue 14 item 10: the default runs/<time>-<arch> is not left behind by bad data, nor by a failure once
    the folder is written (no checkpoint yet: nothing to resume); a folder that was there already stays."""
    monkeypatch.chdir(tmp_path)
    assert train_main(["--data", "/tmp/does-not-exist-cnn"]) == 1
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    common = ["--data", str(shapes_dir), "--epochs", "1", "--image-size", "32", "--workers", "1",
              "--cache-dir", str(cache_dir)]
    assert train_main(common + ["--val-data", str(tmp_path / "nowhere")]) == 1
    assert "nowhere" in caplog.text
    assert not list((tmp_path / "runs").iterdir())
    (tmp_path / "mine").mkdir()
    assert train_main(common + ["--val-data", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "mine")]) == 1
    assert (tmp_path / "mine").is_dir()


def test_few_steps_warning_says_what_to_change():
    """Issue 14 item 14: 81 photos at batch 128 for 2 epochs is 2 optimiser steps."""
    text = engine.few_steps_warning(81, make_config(epochs=2, batch_size=128))
    assert text.startswith("this run takes only 2 optimiser steps in all") and "--epochs 50" in text
    assert "--batch-size" not in text                  # no batch size small enough would do
    assert "--batch-size 16" in engine.few_steps_warning(400, make_config(epochs=2, batch_size=128))
    assert engine.few_steps_warning(1000, make_config(epochs=10, batch_size=128)) == ""   # 7 x 10 = 70 steps


@pytest.fixture
def fake_hub_for_training(tmp_path, monkeypatch):
    """tests/test_hub.py's stand-in Hub, for `--push-to-hub` runs."""
    from huggingface_hub import constants
    from test_hub import FakeHub

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "hf-home" / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "hf-home" / "stored_tokens"))
    server = FakeHub()
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    yield server
    server.close()


def test_push_to_hub_without_a_token_stops_before_training(shapes_dir, tmp_path, cache_dir, caplog,
                                                            fake_hub_for_training):
    """Issue 14 item 9: the token is checked first, and the run exits 1 without training."""
    args = ["--data", str(shapes_dir), "--epochs", "1", "--image-size", "32", "--workers", "1",
            "--cache-dir", str(cache_dir), "--run-dir", str(tmp_path / "run"), "--push-to-hub", "you/x"]
    assert train_main(args) == 1
    assert "--push-to-hub you/x: no Hugging Face token" in caplog.text and "nothing was trained" in caplog.text
    assert "epoch 1/1" not in caplog.text and not (tmp_path / "run").exists()
    assert not fake_hub_for_training.calls()


def test_a_push_that_fails_after_training_exits_1_and_keeps_the_run(shapes_dir, tmp_path, cache_dir, caplog,
                                                                    fake_hub_for_training, monkeypatch):
    """Issue 14 item 9: the repo is created before training; a commit the Hub refuses at the end is an error
    (exit 1) that says how to push later, and the run is kept. The run is short: item 14's warning is logged."""
    hub = fake_hub_for_training
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_tests")
    hub.refuse["/api/models/you/x/commit/main"] = (500, {"error": "storage is down"})
    args = ["--data", str(shapes_dir), "--epochs", "1", "--image-size", "32", "--workers", "1",
            "--cache-dir", str(cache_dir), "--run-dir", str(tmp_path / "run"), "--push-to-hub", "you/x"]
    assert train_main(args) == 1
    calls = hub.calls()
    assert calls[:2] == ["/api/whoami-v2", "/api/repos/create"] and calls.count("/api/repos/create") == 2
    assert "storage is down" in caplog.text and "NOT pushed" in caplog.text
    assert f"python -m train.push {tmp_path / 'run'} you/x" in caplog.text
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()
    assert "optimiser steps in all" in caplog.text and "Try --epochs" in caplog.text


# --- (f) DistributedDataParallel on CPU -----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with gloo is not available")
def test_ddp_two_cpu_processes_write_one_run(shapes_dir, tmp_path, cache_dir):
    # No --run-dir: both ranks must agree on rank 0's time-stamped default (runs/ under cwd).
    # 99 training photos split 50/49 between the ranks: with batches of 25 a per-rank step count
    # would be 2 against 1 and hang the gradient all-reduce; both must take the same steps.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "train",
           "--data", str(shapes_dir), "--device", "cpu", "--image-size", "32", "--batch-size", "25",
           "--val-fraction", "0.175", "--epochs", "2", "--workers", "1", "--cache-dir", str(cache_dir)]
    done = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-4000:]
    (run,) = (tmp_path / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == len(metrics["history"]) == 2
    assert [row["epoch"] for row in metrics["history"]] == [1, 2]
    split = json.loads((run / "split.json").read_text())
    assert (len(split["train"]), len(split["val"])) == (99, 21)
    # validation is sharded across the ranks and gathered: every photo counted once
    assert sum(map(sum, metrics["confusion_matrix"])) == len(split["val"])
    assert sum(c["support"] for c in metrics["per_class"].values()) == len(split["val"])
    assert "cpu x2 (DistributedDataParallel, gloo)" in done.stderr
    assert (run / "model" / "model.safetensors").is_file() and (run / "checkpoints" / "last.pt").is_file()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == 2


@pytest.mark.slow
@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with gloo is not available")
def test_torchrun_with_one_process_still_takes_the_distributed_path(shapes_dir, tmp_path, cache_dir):
    """`torchrun --nproc_per_node 1` joins a process group of one (NCCL on one GPU, gloo here), so that a
    one-GPU machine can check the DDP path; a plain `python -m train` never does."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m", "train",
           "--data", str(shapes_dir), "--device", "cpu", "--image-size", "32", "--epochs", "1", "--workers", "1",
           "--cache-dir", str(cache_dir), "--run-dir", str(tmp_path / "run")]
    done = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "cpu x1 (DistributedDataParallel, gloo)" in done.stderr
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_device_auto_says_loudly_when_a_cuda_build_finds_no_gpu(monkeypatch, caplog):
    """Issue 36 item 6: a CUDA build that sees no GPU (no driver, a driver too old, CUDA_VISIBLE_DEVICES) would
    otherwise train on the CPU for hours in silence."""
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert engine.setup_runtime("auto").device == torch.device("cpu")
    assert "NO GPU: training on the CPU" in caplog.text and "CUDA 12.8 build" in caplog.text
    assert "nvidia-smi" in caplog.text
    caplog.clear()
    monkeypatch.setattr(torch.version, "cuda", None)           # a CPU build: the CPU is all it can use
    assert engine.setup_runtime("auto").device == torch.device("cpu") and "NO GPU" not in caplog.text
    with pytest.raises(RuntimeError, match="sees no CUDA GPU: this PyTorch .* is a CPU build"):
        engine.setup_runtime("cuda")


def test_photos_that_do_not_fit_on_the_gpu_stay_in_cpu_memory_with_the_sizes(monkeypatch, caplog):
    """Issue 36 item 6: the whole uint8 set goes onto each GPU only when it fits beside the model's headroom;
    otherwise a warning with the sizes, and batches are copied from CPU memory, instead of a CUDA OOM."""
    rt = engine.Runtime(torch.device("cuda", 0))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10 * 2**30, 80 * 2**30))
    assert engine.photos_device(10 * 2**30 - engine.GPU_HEADROOM, 146, rt) == rt.device
    assert not caplog.text
    assert engine.photos_device(7 * 2**30, 146, rt) == torch.device("cpu")
    assert "the photos take 7.0 GiB (uint8, 146 px)" in caplog.text
    assert "only 10.0 of the GPU's 80.0 GiB are free" in caplog.text
    assert engine.photos_device(10**12, 146, engine.Runtime(torch.device("cpu"))) == torch.device("cpu")


@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with gloo is not available")
def test_the_ranks_wait_for_rank_0_alone_on_a_gloo_group_with_a_long_timeout(monkeypatch):
    """Issue 36 item 6: while rank 0 decodes a large set into the cache, the others wait at a barrier; on the
    NCCL group they would give up after its 10 minutes. A process group of one, gloo, in this process."""
    import socket
    from datetime import timedelta

    dist = torch.distributed
    made, waited = [], []
    real_new_group, real_barrier = dist.new_group, dist.barrier
    monkeypatch.setattr(dist, "new_group", lambda **kw: made.append(kw) or real_new_group(**kw))
    monkeypatch.setattr(dist, "barrier", lambda group=None: waited.append(group) or real_barrier(group=group))
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    for name, value in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                            MASTER_PORT=str(port)).items():
        monkeypatch.setenv(name, value)
    rt = engine.setup_runtime("cpu")
    try:
        engine.barrier(rt)
        assert rt.distributed and rt.waits is not None
        assert made == [{"backend": "gloo", "timeout": engine.WAIT_TIMEOUT}] and waited == [rt.waits]
        assert engine.WAIT_TIMEOUT >= timedelta(hours=1)
    finally:
        dist.destroy_process_group()


# --- (g) the evaluate command, and the tutorial preset ---------------------------------------------------

def test_evaluate_prints_accuracy_and_per_class(model_dir, shapes_dir, tmp_path, capsys):
    out_json = tmp_path / "eval.json"
    code = evaluate_main(["--model", str(model_dir), "--data", str(shapes_dir), "--workers", "1", "--k", "2",
                          "--cache-dir", str(tmp_path / "cache"), "--json", str(out_json)])
    assert code == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "top-2" in out and "ECE" in out
    for name in ("circle", "square", "triangle"):
        assert any(line.startswith(name) for line in out.splitlines()), out
    result = json.loads(out_json.read_text())
    assert result["images"] == 120 and result["accuracy"] >= 0.8
    assert result["top_k_accuracy"] >= result["accuracy"]
    wrong = result["wrong_answers"]                       # every wrong answer, with the file to look at
    assert len(wrong) == round(120 * (1 - result["accuracy"]))
    assert all(w["label"] != w["answer"] and Path(w["photo"]).is_file() and 0 < w["confidence"] <= 1 for w in wrong)


def test_evaluate_draws_the_wrong_answers(model_dir, tmp_path, capsys):
    """--mistakes: one row per class with wrong answers. Photos of circles filed under square and triangle are all
    wrong answers for a model that knows circles, so the sheet has those two rows."""
    data = tmp_path / "mislabelled"
    for name in ("square", "triangle"):
        (data / name).mkdir(parents=True)
        for i in range(3):
            shape_image("circle", 48, seed=i).save(data / name / f"{i}.png")
    sheet = tmp_path / "sheet.png"
    assert evaluate_main(["--model", str(model_dir), "--data", str(data), "--workers", "1", "--cache-dir",
                          str(tmp_path / "cache"), "--mistakes", str(sheet), "--json", str(tmp_path / "e.json")]) == 0
    assert f"drawn in {sheet}" in capsys.readouterr().out
    wrong = json.loads((tmp_path / "e.json").read_text())["wrong_answers"]
    assert sorted(w["label"] for w in wrong) == ["square"] * 3 + ["triangle"] * 3
    with Image.open(sheet) as image:
        assert image.format == "PNG" and image.height > image.width / 2   # two rows of three photos


def test_evaluate_can_judge_with_another_softening(model_dir, shapes_dir, tmp_path, capsys):
    """--blur-sigma S: the same photos judged softened by S instead of the model's own softening."""
    common = ["--model", str(model_dir), "--data", str(shapes_dir), "--workers", "1", "--cache-dir", str(tmp_path / "c")]
    assert evaluate_main(common + ["--json", str(tmp_path / "own.json")]) == 0
    assert evaluate_main(common + ["--blur-sigma", "2", "--json", str(tmp_path / "soft.json")]) == 0
    assert "softened by a Gaussian blur of σ 2 px" in capsys.readouterr().out
    own, soft = (json.loads((tmp_path / name).read_text()) for name in ("own.json", "soft.json"))
    assert own["blur_sigma"] == json.loads((model_dir / "config.json").read_text())["pretrained_cfg"]["blur_sigma"]
    assert soft["blur_sigma"] == 2.0
    assert soft["ece"] != own["ece"]                # other pixels, other answers
    for bad in ("-1", "9"):                        # the bound a model folder has (cnn.hub.MAX_BLUR_SIGMA)
        with pytest.raises(SystemExit):
            evaluate_main(common + ["--blur-sigma", bad])


def test_evaluate_on_the_validation_photos_reproduces_training(trained_run, model_dir, shapes_dir, tmp_path):
    val = json.loads((trained_run / "split.json").read_text())["val"]
    for rel in val:
        (tmp_path / "val" / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shapes_dir / rel, tmp_path / "val" / rel)
    assert evaluate_main(["--model", str(model_dir), "--data", str(tmp_path / "val"), "--workers", "1",
                          "--cache-dir", str(tmp_path / "cache"), "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert result["accuracy"] == metrics["best_val_accuracy"]
    assert result["confusion_matrix"] == metrics["confusion_matrix"]


def class_folders(root: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        (root / name).mkdir(parents=True)
        shape_image("circle", 16).save(root / name / "0.png")
    return root


def test_evaluate_takes_a_run_folder_and_reports_one_threshold(trained_run, model_dir, shapes_dir, tmp_path, capsys):
    """Issue 14 items 11 and 15: `--model runs/mine` reads runs/mine/model; one "not sure" threshold (the
    model's), every share as a whole percent."""
    from cnn.inference import Classifier

    assert evaluate_main(["--model", str(trained_run), "--data", str(shapes_dir), "--workers", "1",
                          "--cache-dir", str(tmp_path / "cache"), "--json", str(tmp_path / "e.json")]) == 0
    out = capsys.readouterr().out
    result = json.loads((tmp_path / "e.json").read_text())
    assert str(trained_run / "model") in result["model"] and "unsure_below" not in result
    clf = Classifier.from_pretrained(model_dir)
    assert out.count("not sure") == 1 and f"not sure under {percent(clf.unsure_below)}" in out
    assert f"accuracy  {percent(result['accuracy'])}\n" in out
    assert not re.search(r"\d\.\d+ ?%", out)                 # no "87.50%" beside "88%"


def test_evaluate_says_when_every_answer_carried_a_warning():
    from train.evaluate import warning_lines

    w = {"unsure_below": 0.6, "unknown_below": 0.0, "wrong_warned": 1.0, "right_passed": 0.0,
         "accuracy_when_confident": None, "val_flagged_unknown": 0.0}
    text = "\n".join(warning_lines(w, 3))
    assert "every answer carried a warning" in text and "0%" not in text.split(";")[-1]
    assert "none of the 3: no rule" in text
    w.update(accuracy_when_confident=0.9166, unknown_below=0.34, val_flagged_unknown=0.05, flagged_were_wrong=0.6)
    text = "\n".join(warning_lines(w, 10))
    assert "right 92% of the time" in text and "none of the 10 when top probability under 34%" in text
    assert "5% of these photos flagged none of the 10 (60% of them answered wrongly anyway)" in text


def test_evaluate_rejects_unknown_classes(model_dir, tmp_path, caplog):
    class_folders(tmp_path / "data", ("circle", "hexagon"))
    assert evaluate_main(["--model", str(model_dir), "--data", str(tmp_path / "data"), "--workers", "1"]) == 1
    assert "hexagon" in caplog.text and "not labels of this model" in caplog.text
    assert evaluate_main(["--model", str(tmp_path / "no-model"), "--data", str(tmp_path / "data")]) == 1


def test_evaluate_maps_italian_folders_to_english_labels(tmp_path):
    from cnn.data import scan_folder

    class_folders(tmp_path, ("cane", "gatto", "Ragno"))
    assert map_labels(scan_folder(tmp_path), ["cat", "Dog", "spider", "horse"]) == [2, 1, 0]  # Ragno, cane, gatto


def test_tutorial_preset_resolves_to_the_tutorial_recipe():
    cfg = make_config("tutorial")
    assert (cfg.arch, cfg.optimizer, cfg.lr, cfg.batch_size, cfg.epochs) == ("basic_cnn", "adam", 1e-4, 16, 50)
    assert cfg.image_size == 256 and round(cfg.image_size / cfg.crop_pct) == 300
    assert (cfg.flip_p, cfg.rotation, cfg.schedule, cfg.tta_flip) == (0.3, 40.0, "constant", False)
    assert make_config("tutorial", epochs=3).epochs == 3
    with pytest.raises(ValueError, match="unknown preset"):
        make_config("nope")


@pytest.mark.parametrize("native", [True, False])
def test_cpu_training_is_bf16_only_where_the_cpu_multiplies_bf16(monkeypatch, native):
    assert engine.cpu_has_bf16() in (True, False)   # the probes exist in this torch
    monkeypatch.setattr(engine, "cpu_has_bf16", lambda: native)
    cpu = engine.Runtime(torch.device("cpu"))
    assert engine.autocast_dtype(cpu, TrainConfig()) == (torch.bfloat16 if native else None)
    assert engine.autocast_dtype(cpu, TrainConfig(amp=False)) is None       # --no-amp, and the tutorial preset
    assert make_config("tutorial").amp is False


@pytest.mark.slow
def test_tutorial_preset_trains(tmp_path, cache_dir):
    data = make_shapes_folder(tmp_path / "data", per_class=6, classes=("circle", "square"))
    run = tmp_path / "run"
    assert train_main(["--preset", "tutorial", "--data", str(data), "--image-size", "160", "--epochs", "1",
                       "--workers", "1", "--cache-dir", str(cache_dir), "--run-dir", str(run)]) == 0
    saved = json.loads((run / "train_config.json").read_text())
    assert (saved["arch"], saved["optimizer"], saved["preset"], saved["epochs"]) == ("basic_cnn", "adam", "tutorial", 1)
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["architecture"] == "basic_cnn" and config["model_args"] == {"image_size": 160}


def test_model_args_reach_the_architecture_and_its_config(tmp_path, cache_dir):
    """--model-args depths='(1,2,1,1)' widths='(8,16,32,64)': the run trains that network, and config.json keeps
    the arguments that rebuild it (the model loads back with them)."""
    data = make_shapes_folder(tmp_path / "data", per_class=6, classes=("circle", "square"))
    run = tmp_path / "run"
    assert train_main(["--data", str(data), "--image-size", "48", "--epochs", "1", "--workers", "1",
                       "--model-args", "depths=(1,2,1,1)", "widths=(8,16,32,64)",
                       "--cache-dir", str(cache_dir), "--run-dir", str(run)]) == 0
    config = json.loads((run / "model" / "config.json").read_text())
    assert config["model_args"] == {"depths": [1, 2, 1, 1], "widths": [8, 16, 32, 64]}
    from cnn.inference import Classifier

    clf = Classifier.from_pretrained(run / "model")
    assert len(clf.model.features) == 1 + 5 and clf.head.in_features == 64   # the stem, then 1+2+1+1 blocks


def test_model_args_are_checked_before_training(tmp_path, caplog, capsys):
    with pytest.raises(SystemExit):
        train_main(["--data", str(tmp_path), "--model-args", "depths"])          # not KEY=VALUE
    with pytest.raises(SystemExit):
        train_main(["--data", str(tmp_path), "--model-args", "depths=os.system('x')"])   # not a literal
    assert "is not a Python literal" in capsys.readouterr().err
    data = make_shapes_folder(tmp_path / "data", per_class=4, classes=("circle", "square"))
    assert train_main(["--data", str(data), "--model-args", "depth=3", "--workers", "1",
                       "--run-dir", str(tmp_path / "run")]) == 1
    assert "resnet_small takes no argument depth; it takes: depths, dropout, widths" in caplog.text


def test_help_groups_every_flag_with_its_default_and_two_examples():
    """Issue 35 item 9: --help in groups, a help line (not just a default) for every flag, defaults read from
    TrainConfig, and two examples; a flag left out overrides nothing."""
    from train.__main__ import build_parser

    parser = build_parser()
    groups = {group.title: group for group in parser._action_groups}
    assert {"data", "model", "schedule", "augmentation", "export", "Hub", "run"} <= groups.keys()
    flags = [a for a in parser._actions if a.dest != "help"]
    assert all(a in groups["options"]._group_actions for a in parser._actions if a.dest == "help")
    assert not [a.dest for a in flags if a in groups["options"]._group_actions]   # every flag is in a group
    assert not [a.dest for a in flags if not a.help or a.help.startswith("(default")]
    d = TrainConfig()
    text = parser.format_help()
    for flag, default in (("--epochs", d.epochs), ("--lr", d.lr), ("--image-size", d.image_size),
                          ("--detector", d.detector), ("--blur-sigmas", " ".join(f"{b:g}" for b in d.blur_sigmas))):
        (action,) = [a for a in flags if flag in a.option_strings]
        assert action.help.endswith(f"(default {default:g})" if isinstance(default, float) else f"(default {default})")
    examples = text.split("examples:")[1]
    assert examples.count("python -m train --data") + examples.count("torchrun --nproc_per_node") == 2
    assert {k for k, v in vars(parse_args(["--data", "x"])).items() if v is not None} == {"data", "preset"}


@pytest.mark.parametrize("flag, typo, meant", [
    ("--arch", "resnet_smal", "'resnet_small'"), ("--preset", "tutorail", "'tutorial'"),
    ("--detector", "enrgy+knn", "'energy+knn'"),
    ("--teacher", "runs/mine/modle", "'runs/mine/model'"), ("--teacher", "runs/mien", "'runs/mine'"),
    ("--resume", "runs/mien", "'runs/mine'")])
def test_a_mistyped_name_or_folder_is_refused_with_the_closest_match(flag, typo, meant, tmp_path, monkeypatch,
                                                                     capsys):
    """Issue 35 item 9: a typo stops the command when it is read, naming what was meant; a --detector typo no
    longer waits for the export, after the whole run; a folder's no longer reaches for the Hub."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "mine" / "model").mkdir(parents=True)
    monkeypatch.setattr(engine, "fit", lambda *a, **k: pytest.fail("the typo reached training"))
    with pytest.raises(SystemExit) as e:
        train_main(["--data", str(tmp_path), flag, typo])
    assert e.value.code == 2
    assert f"did you mean {meant}?" in capsys.readouterr().err


def test_a_batch_changed_without_the_learning_rate_is_warned(tmp_path, caplog):
    """Issue 35 item 9: the preset's --lr is tuned for its batch; a smaller (or larger) batch should scale it."""
    from cnn.config import lr_batch_warning

    text = lr_batch_warning("default", {"batch_size": 16})
    assert "--lr 0.2, which is tuned for batch 128" in text and text.endswith("try --lr 0.025")
    assert lr_batch_warning("default", {"batch_size": 16, "lr": 0.05}) == ""      # the user chose the rate
    assert lr_batch_warning("default", {"batch_size": 128}) == lr_batch_warning("default", {}) == ""
    assert lr_batch_warning("tutorial", {"batch_size": 16}) == ""                  # the tutorial's own batch
    assert lr_batch_warning("tutorial", {"batch_size": 32}).endswith("try --lr 0.0002")
    assert train_main(["--data", str(tmp_path / "missing"), "--batch-size", "16", "--epochs", "1"]) == 1
    assert "the learning rate should scale with the batch; try --lr 0.025" in caplog.text


def test_evaluate_refuses_a_mistyped_model_folder_with_the_closest(model_dir, shapes_dir, caplog):
    typo = str(model_dir)[:-1] + "x"      # .../modex
    assert evaluate_main(["--model", typo, "--data", str(shapes_dir)]) == 1
    assert f"model folder {typo!r} does not exist; did you mean {str(model_dir)!r}?" in caplog.text


# --- (g) real-photo validation, outlier exposure, progressive resizing ------------------------------------

def test_val_data_picks_the_best_epoch_and_calibrates(real_run):
    metrics = json.loads((real_run / "metrics.json").read_text())
    real_acc = [row["real_val_accuracy"] for row in metrics["history"]]
    keys = [(row["real_val_accuracy"], -row["real_val_loss"]) for row in metrics["history"]]
    assert metrics["best_epoch"] == keys.index(max(keys)) + 1   # picked on the real-photo set (ties: lower loss)
    assert metrics["real_val"]["accuracy"] == max(real_acc) >= 0.8
    assert sum(map(sum, metrics["real_val"]["confusion_matrix"])) == 60
    found = json.loads((real_run / "model" / "config.json").read_text())["metrics"]
    assert found["real_val_accuracy"] == max(real_acc) and found["real_val_data"] == "web-photos"
    assert found["val_accuracy"] == metrics["best_val_accuracy"]            # the in-split figure, beside it
    assert found["calibrated_on"] == "web-photos" and set(found["real_val_per_class"]) == {"circle", "square", "triangle"}
    assert 0 <= found["val_ece"] <= 1 and 0 <= found["val_ece_before_calibration"] <= 1
    card = (real_run / "model" / "README.md").read_text()
    assert "top-1 accuracy, web-photos (real photos)" in card and "top-1 accuracy, held-out split" in card
    assert "value: " + str(found["real_val_accuracy"]) in card and "name: accuracy on web-photos" in card


def test_progressive_resizing_grows_to_the_final_size(real_run):
    sizes = [row["image_size"] for row in json.loads((real_run / "metrics.json").read_text())["history"]]
    assert sizes[0] == 32 and sizes[-1] == 48 and sizes == sorted(sizes)
    cfg = make_config(epochs=20, image_size=128, progressive_from=64)
    sizes = [engine.epoch_image_size(cfg, e) for e in range(20)]
    assert sizes[0] == 64 and sizes[14:] == [128] * 6 and all(s % 8 == 0 for s in sizes) and sizes == sorted(sizes)
    assert {engine.epoch_image_size(make_config(epochs=20, image_size=96), e) for e in range(20)} == {96}


def test_outlier_exposure_learns_to_say_none_of_these(real_run):
    from cnn.inference import Classifier

    found = json.loads((real_run / "model" / "config.json").read_text())["metrics"]
    assert found["detector"] == "energy" and "unknown_below" not in found     # the default rule
    assert found["val_flagged_unknown"] <= 0.1                  # about unknown_rate (5 %) of the real photos
    assert found["outliers_flagged"] >= 0.7                     # measured on the held-out 40 %, never trained on
    clf = Classifier.from_pretrained(real_run / "model")
    assert clf.unknown_thresholds == {"energy": found["unknown_energy_above"]}
    assert clf.is_known(shape_image("circle", 96, 5000)) and clf.is_known(shape_image("square", 96, 5001))
    assert not clf.is_known(outlier_image("background", 96, 5000))
    assert not clf.is_known(outlier_image("stripes", 96, 5001))


def test_evaluate_reports_the_warnings_and_outliers(real_run, tmp_path, capsys):
    from train.evaluate import evaluate, format_report

    outliers = make_outlier_folder(tmp_path / "other", per_group=10, size=96)
    result = evaluate(str(real_run / "model"), str(real_run.parent / "web-photos"), workers=1, outliers=str(outliers))
    w = result["warnings"]
    assert {"wrong_warned", "right_passed", "accuracy_when_confident", "val_flagged_unknown", "outliers_flagged"} <= w.keys()
    assert w["outliers_flagged"] >= 0.5 and w["right_passed"] >= 0.5
    report = format_report(result)
    assert "of wrong answers warned" in report and "flagged none of the 3" in report and "outliers" in report
    assert evaluate_main(["--model", str(real_run / "model"), "--data", str(real_run.parent / "web-photos"),
                          "--workers", "1"]) == 0
    assert "outliers" not in capsys.readouterr().out.split("warnings")[1].split("class")[0]


def test_val_data_and_outliers_must_be_usable(shapes_dir, tmp_path, cache_dir, caplog):
    class_folders(tmp_path / "val", ("circle", "hexagon"))
    common = ["--data", str(shapes_dir), "--epochs", "1", "--image-size", "32", "--workers", "1",
              "--cache-dir", str(cache_dir)]
    assert train_main(common + ["--val-data", str(tmp_path / "val"), "--run-dir", str(tmp_path / "a")]) == 1
    assert "hexagon" in caplog.text and "not labels of this model" in caplog.text
    assert train_main(common + ["--outliers", str(tmp_path / "nowhere"), "--run-dir", str(tmp_path / "b")]) == 1
    assert "nowhere" in caplog.text and "does not exist" in caplog.text


def test_a_sources_none_folder_feeds_outlier_exposure(shapes_dir, tmp_path, cache_dir, caplog):
    """Visitors' "none of these" corrections (a source's none/) train and measure "none of the ten" too."""
    caplog.set_level("INFO")
    corrections = make_outlier_folder(tmp_path / "feedback" / "none", per_group=6)
    shape_image("circle", 64, 900).save(tmp_path / "feedback" / "circle.jpg")   # a loose file, not a class folder
    (tmp_path / "feedback" / "circle").mkdir()
    shape_image("circle", 64, 901).save(tmp_path / "feedback" / "circle" / "901.jpg")
    run = fit(make_config(data=[str(shapes_dir), str(tmp_path / "feedback")], run_dir=str(tmp_path / "run"), epochs=1,
                          image_size=32, batch_size=32, workers=1, cache_dir=str(cache_dir),
                          model_args={"widths": [8, 16, 32, 64]}))
    found = json.loads((run / "model" / "config.json").read_text())["metrics"]
    assert "unknown_energy_above" in found and "outliers_flagged" in found   # measured on the held-out part
    assert json.loads((run / "model" / "config.json").read_text())["label_names"] == ["circle", "square", "triangle"]
    trained, held = map(int, re.search(r"outlier exposure: (\d+) photos .*\((\d+) more held out", caplog.text).groups())
    assert trained + held == len(list(corrections.rglob("*.jpg"))) == 12 and held > 0


def test_validation_under_bf16_autocast_answers_in_fp32_as_fp32_does():
    """Per-epoch validation runs in the training's autocast type (twice as fast on a bf16 CPU): its outputs are
    fp32 tensors that agree with the fp32 pass, so the epoch it picks is the one fp32 would pick."""
    torch.manual_seed(0)
    net = engine.create_model("resnet_small", num_classes=4).eval()
    images = torch.randint(0, 256, (12, 3, 40, 40), dtype=torch.uint8)
    args = (images, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), True, torch.device("cpu"))
    conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    seen = []
    conv.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    exact = engine.predict_outputs(net, *args)
    fast = engine.predict_outputs(net, *args, amp=torch.bfloat16)
    assert seen == [torch.float32] * 2 + [torch.bfloat16] * 2     # photo and mirror, in each pass
    for a, b in zip(exact, fast):
        assert b.dtype == torch.float32 and b.shape == a.shape
    assert (fast.probs - exact.probs).abs().max() < 0.02
    assert (fast.features - exact.features).abs().max() < 0.05 * exact.features.abs().max()


def test_training_passes_grayscale_and_erasing_to_every_batch(shapes_dir, tmp_path, monkeypatch):
    seen, real = [], engine.augment_batch
    monkeypatch.setattr(engine, "augment_batch", lambda *a, **kw: seen.append(kw) or real(*a, **kw))
    args = parse_args(["--data", str(shapes_dir), "--grayscale", "0.1", "--erasing", "0.25"])
    cfg = make_config(data=[str(shapes_dir)], grayscale=args.grayscale, erasing=args.erasing, epochs=1,
                      image_size=32, batch_size=32, workers=1, cache_dir=str(tmp_path / "cache"),
                      run_dir=str(tmp_path / "run"), model_args={"widths": [8, 16, 32, 64]})
    run = fit(cfg)
    assert seen and all((kw["grayscale"], kw["erasing"]) == (0.1, 0.25) for kw in seen)
    card = (run / "model" / "README.md").read_text()
    assert "in grey 10% of the time" in card and "replaced by noise 25% of the time" in card
