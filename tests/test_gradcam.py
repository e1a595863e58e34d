"""Grad-CAM ("where the model looked"): the map covers the whole photo and points at the object."""
import numpy as np
import pytest
from PIL import Image, ImageDraw

from cnn.inference import Classifier
from imagegen import COLOURS

CENTRES = [(22, 22), (42, 22), (22, 42), (42, 42), (32, 32)]


def circle_photo(cx: int, cy: int, r: int = 17, side: int = 64) -> tuple[Image.Image, np.ndarray]:
    """A red circle (the shapes task's 'circle') at a known place on noise, and the circle's mask."""
    rng = np.random.default_rng(cx * side + cy)
    img = Image.fromarray(rng.integers(90, 170, (side, side, 3), dtype=np.uint8))
    ImageDraw.Draw(img).ellipse([cx - r, cy - r, cx + r, cy + r], fill=COLOURS["circle"])
    yy, xx = np.mgrid[:side, :side]
    return img, (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2


@pytest.fixture(scope="module")
def clf(model_dir) -> Classifier:
    return Classifier.from_pretrained(model_dir)


def test_map_has_the_photos_shape_and_range(clf):
    photo = Image.new("RGB", (90, 50), (128, 128, 128))   # not square: the map is mapped back uncropped
    cam = clf.gradcam(photo)
    assert cam.shape == (50, 90) and cam.dtype == np.float32
    assert 0 <= cam.min() and cam.max() <= 1
    assert clf.overlay(photo).size == photo.size


def test_map_points_at_the_object(clf):
    ratios = []
    for cx, cy in CENTRES:
        photo, inside = circle_photo(cx, cy)
        assert clf.predict(photo, k=1)[0][0] == "circle"
        cam = clf.gradcam(photo)
        assert inside.flat[cam.argmax()], f"the hottest point is off the circle at {(cx, cy)}"
        ratios.append(cam[inside].mean() / max(cam[~inside].mean(), 1e-6))
    assert np.mean(ratios) > 2, ratios   # on average the circle is far hotter than the background


def test_map_for_another_label(clf):
    photo, _ = circle_photo(32, 32)
    assert not np.array_equal(clf.gradcam(photo, "square"), clf.gradcam(photo))


def test_maps_and_predictions_can_run_at_the_same_time(clf):
    """The app serves two requests at once: a Grad-CAM must never disturb a prediction running beside it."""
    import threading

    photo, _ = circle_photo(32, 32)
    expected = clf.predict(photo, k=3)
    errors: list[BaseException] = []

    def repeat(call, times: int) -> None:
        try:
            for _ in range(times):
                call()
        except BaseException as e:  # noqa: BLE001 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=repeat, args=(lambda: clf.gradcam(photo), 30)),
               threading.Thread(target=repeat, args=(lambda: clf.gradcam(photo), 30)),
               threading.Thread(target=repeat, args=(lambda: errors.append(AssertionError("changed answer"))
                                                     if clf.predict(photo, k=3) != expected else None, 200))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def test_a_big_photo_is_mapped_and_overlaid_at_display_size_never_full_size(clf, monkeypatch):
    """Issue 13: Grad-CAM of a 36 MP photo took 4 GB at its full resolution; the map and the overlay are at
    most DISPLAY_SIDE a side, from one forward pass on the model-sized input."""
    from cnn.inference import DISPLAY_SIDE

    photo, _ = circle_photo(32, 32)
    big = photo.resize((3000, 2000))
    inputs = []
    forward = clf.preprocess
    monkeypatch.setattr(clf, "preprocess", lambda x: inputs.append(tuple(x.shape)) or forward(x))
    cam = clf.gradcam(big)
    shown = clf.overlay(big)
    assert cam.shape == (341, DISPLAY_SIDE) and shown.size == (DISPLAY_SIDE, 341)
    assert inputs == [(3, clf.resize_side, clf.resize_side)] * 2
