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

ROOT = Path(__file__).resolve().parents[1]


def test_knn_scores_far_photos_higher_and_keeps_every_class():
    g = torch.Generator().manual_seed(0)
    centres = torch.eye(8)[:3] * 5
    labels = torch.arange(3).repeat_interleave(200)
    features = centres[labels] + 0.3 * torch.randn(600, 8, generator=g)
    bank = ood.bank_sample(labels, per_class=50)
    assert labels[bank].bincount().tolist() == [50, 50, 50]                  # every class equally present
    assert torch.equal(bank, ood.bank_sample(labels, per_class=50))          # the same photos for the same seed
    assert torch.equal(ood.bank_sample(labels[:60], per_class=100), torch.arange(60))  # a small class: all of it
    knn = ood.KnnDetector.fit(features[bank], k=5)
    assert knn.bank.shape == (150, 8)
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


@pytest.mark.parametrize("names", [["energy"], ["probability", "knn"], ["probability", "energy", "knn"]])
def test_fit_thresholds_flag_the_budget_and_share_it(names):
    g = torch.Generator().manual_seed(1)
    scores = {name: torch.rand(3000, generator=g) for name in names}
    thresholds = ood.fit_thresholds(scores, rate=0.1)
    union = ood.unknown_mask(scores, thresholds)
    assert abs(union.double().mean().item() - 0.10) < 0.002
    for name in names[:-1]:                                     # each of the others flags its share alone
        assert abs((scores[name] > thresholds[name]).double().mean().item() - 0.1 / len(names)) < 0.005
    assert ood.threshold_at_rate(scores[names[0]], 0.0) == float("inf")


def test_unknown_mask_is_any_rule_and_the_config_keeps_a_top_probability():
    scores = {"probability": torch.tensor([0.1, 0.45, 0.1]), "knn": torch.tensor([0.1, 0.1, 0.8])}
    thresholds = ood.thresholds_from_config({"unknown_below": 0.6, "unknown_distance_above": 0.5})
    assert thresholds == {"probability": pytest.approx(0.4), "knn": 0.5}
    assert ood.unknown_mask(scores, thresholds).tolist() == [False, True, True]
    assert ood.unknown_mask(scores, {"probability": 0.4}).tolist() == [False, True, False]
    assert ood.thresholds_to_config(thresholds) == {"unknown_below": 0.6, "unknown_distance_above": 0.5}
    assert ood.thresholds_from_config({"unknown_below": 0.0}) == {"probability": 1.0}   # older models: never flags


def test_detector_specs_are_checked():
    assert ood.parse_detector("energy+knn") == ["energy", "knn"]
    with pytest.raises(ValueError, match="unknown detector"):
        ood.parse_detector("energy+mahalanobis")


def test_energy_of_the_mean_logits_is_the_last_layer_on_the_mean_features():
    """With flip TTA the energy reads the two views' mean logits: the same as the last Linear layer applied to
    the mean features (what it read before), so thresholds set either way agree, and no feature hook is needed."""
    model = create_model("resnet_small", 3, widths=(8, 16, 32, 64)).eval()
    x = torch.randn(4, 3, 32, 32)
    with ood.feature_tap(model) as found, torch.no_grad():
        probs, logits = ood.forward_views(model, x, tta_flip=True)
    assert len(found) == 2
    with torch.no_grad():
        through_head = model.head[-1]((found[0] + found[1]) / 2)
    scores = ood.compute_scores(["energy"], probs, logits, torch.zeros(4, 0), None)
    assert torch.allclose(scores["energy"], ood.energy_score(through_head), atol=1e-5)
    assert torch.allclose(probs, (model(x).softmax(1) + model(x.flip(3)).softmax(1)) / 2, atol=1e-6)


def test_the_energy_rule_serves_from_a_frozen_torchscript_model():
    """The bundled model's energy rule reads the answer alone: swapped for a frozen TorchScript module (no
    Linear layer left to hook), the model gives the same probabilities and the same "none of the ten" flags."""
    clf = Classifier.from_pretrained(ROOT / "model")
    assert list(clf.unknown_thresholds) == ["energy"] and not clf.reads_features
    photos = [shape_image("circle", 160, 1), outlier_image("stripes", 160, 2), outlier_image("noise", 160, 3)]
    probs, unknown = clf.analyse_batch(photos)
    example = clf.preprocess(photos[0])
    with torch.no_grad():
        clf.model = torch.jit.freeze(torch.jit.trace(clf.model, example).eval())
    assert not [m for m in clf.model.modules() if isinstance(m, torch.nn.Linear)]
    frozen_probs, frozen_unknown = clf.analyse_batch(photos)
    assert torch.allclose(frozen_probs, probs, atol=1e-5) and torch.equal(frozen_unknown, unknown)


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


def test_the_probe_tells_photos_of_other_things_from_the_training_photos_and_round_trips(tmp_path):
    g = torch.Generator().manual_seed(0)
    inside = torch.randn(200, 16, generator=g) + 3 * torch.eye(16)[0]        # training photos' features
    outside = torch.randn(60, 16, generator=g) + 3 * torch.eye(16)[1]       # outlier photos': fewer, elsewhere
    probe = ood.ProbeDetector.fit(inside, outside)
    near = torch.randn(50, 16, generator=g) + 3 * torch.eye(16)[0]
    other = torch.randn(50, 16, generator=g) + 3 * torch.eye(16)[1]
    assert (probe.score(other) > 0).float().mean() > 0.9 and (probe.score(near) < 0).float().mean() > 0.9
    probe.save(tmp_path)
    again = ood.ProbeDetector.load(tmp_path, feature_dim=16)
    assert torch.allclose(again.score(near), probe.score(near), atol=1e-5)
    scores = ood.compute_scores(["energy", "probe"], near.softmax(1), near, near, None, again)
    assert set(scores) == {"energy", "probe"} and torch.allclose(scores["probe"], probe.score(near), atol=1e-5)
    with pytest.raises(ood.DetectorError, match="16-dimensional"):
        ood.ProbeDetector.load(tmp_path, feature_dim=32)
    (tmp_path / ood.PROBE_FILE).write_bytes(b"\x80\x04pickle")
    with pytest.raises(ood.DetectorError, match="damaged"):
        ood.ProbeDetector.load(tmp_path, feature_dim=16)
    ood.KnnDetector(torch.nn.functional.normalize(torch.randn(40, 16), dim=1), k=3).save(tmp_path)
    (tmp_path / ood.DETECTOR_FILE).rename(tmp_path / ood.PROBE_FILE)         # a kNN bank is no probe
    with pytest.raises(ood.DetectorError, match="not a linear probe detector"):
        ood.ProbeDetector.load(tmp_path, feature_dim=16)
    with pytest.raises(ood.DetectorError, match="needs at least 2"):
        ood.ProbeDetector.fit(inside, outside[:1])


def shapes_model(root: Path, detector: str, epochs: int) -> Path:
    """A shapes model trained with outlier exposure, whose "none of the ten" is `detector`."""
    from cnn.config import make_config
    from cnn.engine import fit
    from imagegen import make_outlier_folder, make_shapes_folder

    data = make_shapes_folder(root / "shapes", per_class=30)
    cfg = make_config(data=str(data), outliers=str(make_outlier_folder(root / "other", per_group=20)),
                      run_dir=str(root / "run"), epochs=epochs, image_size=48, batch_size=32, lr=0.1, workers=1,
                      cache_dir=str(root / "cache"), model_args={"widths": [16, 32, 64, 128]}, detector=detector)
    return fit(cfg) / "model"


@pytest.fixture(scope="module")
def probe_model(tmp_path_factory) -> Path:
    """The probe beside the energy score."""
    return shapes_model(tmp_path_factory.mktemp("probe"), "probe+energy", epochs=3)


def test_a_model_trained_with_the_probe_carries_it_and_the_page_applies_it(probe_model, tmp_path, caplog):
    metrics = json.loads((probe_model / "config.json").read_text())["metrics"]
    assert (probe_model / ood.PROBE_FILE).is_file() and not (probe_model / ood.DETECTOR_FILE).exists()
    assert metrics["detector"] == "probe+energy" and "unknown_probe_above" in metrics
    clf = Classifier.from_pretrained(probe_model)
    assert clf.probe is not None and clf.probe.weight.shape == (128,) and clf.reads_features
    photos = [shape_image("circle", 64, 500), outlier_image("stripes", 64, 7)]
    probs, unknown = clf.analyse_batch(photos)
    x = torch.cat([clf.preprocess(photo) for photo in photos])
    with ood.feature_tap(clf.model) as found, torch.no_grad():
        logits = (clf.model(x) + clf.model(x.flip(3))) / 2
    expected = ((clf.probe.score((found[0] + found[1]) / 2) > clf.unknown_thresholds["probe"])
                | (ood.energy_score(logits) > clf.unknown_thresholds["energy"]))
    assert unknown.tolist() == expected.tolist()
    assert "looks more like the photos of other things it was shown" in (probe_model / "README.md").read_text()
    folder = tmp_path / "model"
    shutil.copytree(probe_model, folder)
    (folder / ood.PROBE_FILE).unlink()
    lost = Classifier.from_pretrained(folder)                          # served on with the energy score alone
    assert lost.probe is None and list(lost.unknown_thresholds) == ["energy"] and "without the probe" in caplog.text


def test_without_outlier_photos_the_probe_is_left_out_with_a_warning(tmp_path, caplog):
    from cnn.config import make_config
    from cnn.engine import fit
    from imagegen import make_shapes_folder

    cfg = make_config(data=str(make_shapes_folder(tmp_path / "shapes", per_class=20)), run_dir=str(tmp_path / "run"),
                      epochs=1, image_size=32, batch_size=16, workers=1, cache_dir=str(tmp_path / "cache"),
                      model_args={"widths": [8, 16, 32, 64]}, detector="probe+energy")
    folder = fit(cfg) / "model"
    assert "no probe detector: it learns from the outlier photos" in caplog.text
    assert not (folder / ood.PROBE_FILE).exists()
    assert "unknown_probe_above" not in json.loads((folder / "config.json").read_text())["metrics"]


@pytest.fixture(scope="module")
def knn_model(tmp_path_factory) -> Path:
    """The nearest-neighbour detector beside the top probability."""
    return shapes_model(tmp_path_factory.mktemp("knn"), "probability+knn", epochs=4)


def test_a_trained_model_carries_its_detector_and_threshold(knn_model):
    metrics = json.loads((knn_model / "config.json").read_text())["metrics"]
    assert (knn_model / ood.DETECTOR_FILE).is_file()
    assert metrics["detector"] == "probability+knn" and metrics["unknown_distance_above"] > 0
    clf = Classifier.from_pretrained(knn_model)
    assert clf.detector is not None and clf.detector.bank.shape[1] == 128
    photos = [shape_image("circle", 64, 500), outlier_image("stripes", 64, 7)]
    probs, unknown = clf.analyse_batch(photos)
    x = torch.cat([clf.preprocess(photo) for photo in photos])
    with ood.feature_tap(clf.model) as found, torch.no_grad():
        clf.model(x)
        clf.model(x.flip(3))
    distances = clf.detector.score((found[0] + found[1]) / 2)
    again = Classifier.from_pretrained(knn_model)
    assert torch.allclose(again.detector.score((found[0] + found[1]) / 2), distances)   # same scores after a reload
    assert torch.equal(again.analyse_batch(photos)[1], unknown)
    expected = (distances > clf.unknown_thresholds["knn"]) | (probs.max(1).values < clf.unknown_below)
    assert unknown.tolist() == expected.tolist()
    assert clf.is_known(photos[0]) == clf.known(probs[0], bool(unknown[0]))


def test_a_damaged_detector_file_falls_back_to_the_top_probability(knn_model, tmp_path, caplog):
    folder = tmp_path / "model"
    shutil.copytree(knn_model, folder)
    (folder / ood.DETECTOR_FILE).write_bytes(b"garbage")
    clf = Classifier.from_pretrained(folder)
    assert clf.detector is None and "without the feature distance" in caplog.text
    assert list(clf.unknown_thresholds) == ["probability"]        # the top-probability rule still serves
    probs, unknown = clf.analyse_batch([shape_image("square", 64, 3)])
    assert bool(unknown[0]) == (float(probs[0].max()) < clf.unknown_below)
    clf.unknown_thresholds = {}                                        # a model without any rule: never flagged
    assert clf.analyse_batch([shape_image("square", 64, 3)] * 2)[1].tolist() == [False, False]
