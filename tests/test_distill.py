"""Knowledge distillation (cnn.distill, --teacher): the loss, how the teacher reads a batch, a teacher that cannot
serve is refused before training, and a teacher at full weight is followed over the labels."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cnn import distill, hub
from cnn.data import normalize
from cnn.engine import load_checkpoint
from imagegen import make_shapes_folder
from train.__main__ import main as train_main
from train.evaluate import main as evaluate_main


def test_distillation_loss_is_zero_on_the_teacher_s_answers_and_pulls_towards_them():
    """T² · KL: zero when the student answers as the teacher does; its gradient is T · (p_student - p_teacher) / N
    at temperature T, so a larger T does not shrink the push."""
    torch.manual_seed(0)
    teacher = torch.randn(5, 4)
    assert distill.distillation_loss(teacher, teacher, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    for t in (1.0, 4.0):
        student = torch.randn(5, 4, requires_grad=True)
        loss = distill.distillation_loss(student, teacher, t)
        loss.backward()
        expected = t * ((student.detach() / t).softmax(1) - (teacher / t).softmax(1)) / len(teacher)
        assert loss.item() > 0 and torch.allclose(student.grad, expected, atol=1e-6)


def test_the_teacher_reads_a_batch_at_its_own_size_and_answers_in_the_student_s_class_order(model_dir):
    """The shapes model (48 px, circle / square / triangle) as a teacher for a run whose classes come in another
    order and at another side: its logits are its own forward pass on the resized batch, reordered."""
    teacher = distill.load_teacher(str(model_dir), ["triangle", "circle"], torch.device("cpu"))
    model, config = hub.load_pretrained(model_dir)
    x = torch.rand(3, 3, 64, 64)
    pre = config["pretrained_cfg"]
    resized = F.interpolate(x, size=(48, 48), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        own = model(normalize(resized, pre["mean"], pre["std"]))
    assert teacher.size == 48 and not any(p.requires_grad for p in teacher.model.parameters())
    assert torch.allclose(teacher.logits(x), own[:, [2, 0]], atol=1e-5)
    assert torch.allclose(teacher.logits(x, channels_last=True), own[:, [2, 0]], atol=1e-4)


def run_args(data: Path, run: Path, cache: Path, *extra: str, epochs: int = 4) -> list[str]:
    return ["--data", str(data), "--image-size", "48", "--epochs", str(epochs), "--batch-size", "32", "--lr", "0.1",
            "--workers", "1", "--model-args", "widths=(16,32,64,128)", "--cache-dir", str(cache),
            "--run-dir", str(run), *extra]


def test_a_teacher_that_cannot_serve_stops_the_run_before_training(model_dir, tmp_path, caplog, capsys):
    data = make_shapes_folder(tmp_path / "data", per_class=4)
    (data / "circle").rename(data / "hexagon")
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    cases = [(("--teacher", str(model_dir)), "does not know the class(es) hexagon; it knows circle, square, triangle"),
             (("--teacher", str(pickled)), "pickled weights (pytorch_model.bin), which are never loaded"),
             (("--teacher", str(model_dir), "--distill-weight", "1.5"), "distill_weight must be between 0 and 1"),
             (("--teacher", str(model_dir), "--distill-temperature", "0"), "distill_temperature must be positive")]
    for i, (extra, message) in enumerate(cases):
        caplog.clear()
        run = tmp_path / f"run{i}"
        assert train_main(run_args(data, run, tmp_path / "cache", *extra)) == 1, extra
        assert message in caplog.text, extra
        assert not run.exists()   # nothing trained, nothing left behind
    with pytest.raises(SystemExit) as e:   # a missing folder: refused as the command is read (issue 35 item 9)
        train_main(run_args(data, tmp_path / "run", tmp_path / "cache", "--teacher", str(tmp_path / "missing")))
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err and not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def relabelled_shapes(shapes_dir, tmp_path_factory) -> Path:
    """The shapes task with every label wrong: circles filed as squares, squares as triangles, triangles as
    circles."""
    root = tmp_path_factory.mktemp("relabelled")
    for shape, label in (("circle", "square"), ("square", "triangle"), ("triangle", "circle")):
        shutil.copytree(shapes_dir / shape, root / label)
    return root


@pytest.mark.parametrize("weight", ["0", "1"])
def test_a_teacher_at_full_weight_is_followed_over_the_labels(weight, relabelled_shapes, shapes_dir, model_dir,
                                                               tmp_path, caplog):
    """A student trained on wrong labels learns them (weight 0: the teacher is loaded but not followed); with the
    whole loss on a teacher that knows the shapes, it names the shapes as the teacher does, whatever the labels
    said. Measured on the last epoch's weights (the exported best epoch is picked on the wrong labels) with
    train.evaluate on the correctly labelled photos."""
    caplog.set_level(logging.INFO)
    run = tmp_path / "run"
    assert train_main(run_args(relabelled_shapes, run, tmp_path / "cache", "--teacher", str(model_dir),
                               "--distill-weight", weight, epochs=8)) == 0
    assert f"distilling from local folder {model_dir}" in caplog.text
    assert json.loads((run / "train_config.json").read_text())["teacher"] == str(model_dir)
    card = (run / "model" / "README.md").read_text()
    assert f"answers of a teacher model, *{model_dir.parent.name}* (distillation: {int(weight) * 100}% of the loss" in card
    student, config = hub.load_pretrained(run / "model")
    student.load_state_dict(load_checkpoint(run / "checkpoints" / "last.pt")["model"])
    hub.save_pretrained(student, tmp_path / "last", config)
    assert evaluate_main(["--model", str(tmp_path / "last"), "--data", str(shapes_dir), "--workers", "1",
                          "--cache-dir", str(tmp_path / "cache"), "--json", str(tmp_path / "eval.json")]) == 0
    on_the_true_shapes = json.loads((tmp_path / "eval.json").read_text())["accuracy"]
    if weight == "0":
        assert on_the_true_shapes <= 0.2      # it learnt the wrong labels
    else:
        assert on_the_true_shapes >= 0.7      # it learnt the teacher's answers (the teacher: >= 0.8)
