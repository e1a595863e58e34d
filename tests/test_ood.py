"""'None of the ten' (cnn.ood): the nearest-neighbour detector, its stored file, the shared rule."""
from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
import torch

from cnn import ood
from cnn.inference import Classifier
from cnn.models import create_model
from imagegen import outlier_image, shape_image


def test_knn_scores_far_photos_higher_and_keeps_every_class():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(8)[:3] * 5
    labels = torch.arange(3).repeat_interleave(200)
    features = centres[labels] + 0.3 * torch.randn(600, 8, generator=g)
    knn = ood.KnnDetector.fit(features, labels, k=5, per_class=50)
    assert knn.bank.shape == (150, 8)                                        # 50 of each class
    near = centres + 0.3 * torch.randn(3, 8, generator=g)
    far = torch.eye(8)[5:] * 5
    assert knn.score(far).min() > knn.score(near).max()


def test_the_stored_detector_round_trips(tmp_path):
    bank = torch.nn.functional.normalize(torch.randn(40, 16), dim=1)
    knn = ood.KnnDetector(bank, k=7)
    knn.save(tmp_path)
    again = ood.KnnDetector.load(tmp_path, feature_dim=16)
    assert again.k == 7
    x = torch.randn(5, 16)
    assert torch.allclose(knn.score(x), again.score(x), atol=2e-3)        # the bank is stored in fp16


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.unlink(), "missing"),
    (lambda p: p.write_bytes(p.read_bytes()[:50]), "damaged"),
    (lambda p: p.write_bytes(b"\x80\x04pickle"), "damaged"),
])
def test_a_damaged_detector_is_refused_clearly(tmp_path, damage, message):
    ood.KnnDetector(torch.nn.functional.normalize(torch.randn(40, 16), dim=1), k=3).save(tmp_path)
    damage(tmp_path / ood.DETECTOR_FILE)
    with pytest.raises(ood.DetectorError, match=message):
        ood.KnnDetector.load(tmp_path, feature_dim=16)


def test_a_detector_for_another_model_is_refused(tmp_path):
    ood.KnnDetector(torch.nn.functional.normalize(torch.randn(40, 16), dim=1), k=3).save(tmp_path)
    with pytest.raises(ood.DetectorError, match="16-dimensional"):
        ood.KnnDetector.load(tmp_path, feature_dim=32)


def test_union_thresholds_flag_the_budget_and_share_it():
    g = torch.Generator().manual_seed(1)
    first, second = torch.rand(1000, generator=g), torch.rand(1000, generator=g)
    t1, t2 = ood.union_thresholds(first, second, rate=0.1, share=0.5)
    alone = first > t1
    union = alone | (second > t2)
    assert abs(alone.double().mean().item() - 0.05) < 0.005
    assert abs(union.double().mean().item() - 0.10) < 0.005
    assert ood.threshold_at_rate(first, 0.0) == float("inf")


def test_unknown_mask_is_either_rule():
    probs = torch.tensor([[0.9, 0.1], [0.55, 0.45], [0.9, 0.1]])
    distances = torch.tensor([0.1, 0.1, 0.8])
    assert ood.unknown_mask(probs, distances, 0.6, 0.5).tolist() == [False, True, True]
    assert ood.unknown_mask(probs, None, 0.6, 0.5).tolist() == [False, True, False]


def test_feature_tap_records_only_its_own_thread():
    model = create_model("resnet_small", 3, widths=(8, 16, 32, 64)).eval()
    x = torch.randn(2, 3, 32, 32)
    others = threading.Event()

    def busy():
        while not others.is_set():
            with torch.no_grad():
                model(x)

    thread = threading.Thread(target=busy)
    thread.start()
    try:
        with ood.feature_tap(model) as found, torch.no_grad():
            for _ in range(5):
                model(x)
    finally:
        others.set()
        thread.join()
    assert len(found) == 5 and found[0].shape == (2, 64)


@pytest.fixture(scope="module")
def knn_model(tmp_path_factory) -> Path:
    """A shapes model trained with the nearest-neighbour detector beside outlier exposure."""
    from cnn.config import make_config
    from cnn.engine import fit
    from imagegen import make_outlier_folder, make_shapes_folder

    root = tmp_path_factory.mktemp("knn")
    data = make_shapes_folder(root / "shapes", per_class=30)
    cfg = make_config(data=str(data), outliers=str(make_outlier_folder(root / "other", per_group=20)),
                      run_dir=str(root / "run"), epochs=4, image_size=48, batch_size=32, lr=0.1, workers=1,
                      cache_dir=str(root / "cache"), model_args={"widths": [16, 32, 64, 128]})
    return fit(cfg) / "model"


def test_a_trained_model_carries_its_detector_and_threshold(knn_model):
    metrics = json.loads((knn_model / "config.json").read_text())["metrics"]
    assert (knn_model / ood.DETECTOR_FILE).is_file()
    assert metrics["detector"] == "knn+probability" and metrics["unknown_distance_above"] > 0
    clf = Classifier.from_pretrained(knn_model)
    assert clf.detector is not None and clf.detector.bank.shape[1] == 128
    photos = [shape_image("circle", 64, 500), outlier_image("stripes", 64, 7)]
    probs, distances = clf.analyse_batch(photos)
    again = Classifier.from_pretrained(knn_model).analyse_batch(photos)
    assert torch.equal(probs, again[0]) and torch.equal(distances, again[1])    # same scores after a reload
    assert clf.is_known(photos[0]) == clf.known(probs[0], float(distances[0]))


def test_a_damaged_detector_file_falls_back_to_the_top_probability(knn_model, tmp_path, caplog):
    folder = tmp_path / "model"
    shutil.copytree(knn_model, folder)
    (folder / ood.DETECTOR_FILE).write_bytes(b"garbage")
    clf = Classifier.from_pretrained(folder)
    assert clf.detector is None and "falls back to the top probability" in caplog.text
    probs, distances = clf.analyse_batch([shape_image("square", 64, 3)])
    assert distances is None and clf.warning(probs[0]) in ("", "unsure", "unknown")
