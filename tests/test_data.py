"""cnn.data: scanning awkward folders, robust decoding, the uint8 cache, the split, batch augmentation."""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import cnn.data
from cnn.data import (DataError, augment_batch, center_crop, eval_view, gaussian_blur, normalize, hash_split, load_image, load_images, scan_folder, scan_folders,
                      scan_photos, split_folders, split_of, stratified_split)
from imagegen import (exif_rotated_jpeg, gif_claiming_screen, io_bytes, make_awkward_folder, make_shapes_folder,
                      png_claiming_size, shape_image)

SIDE = 24


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    return make_awkward_folder(tmp_path_factory.mktemp("awkward"))


def skip_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno == logging.WARNING and "unreadable" in r.getMessage()]


def small_folder(root: Path, classes=("a", "b"), per_class: int = 3) -> Path:
    for k in classes:
        (root / k).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape_image("circle", 16, seed=100 * classes.index(k) + i).save(root / k / f"{i}.png")
    return root


# --- scanning and decoding ---------------------------------------------------------------------------

def test_scan_lists_visible_files_and_translates_italian(awkward):
    root, good, bad = awkward
    listing = scan_folder(root)
    assert listing.classes == ["dog", "cat"]  # cane, gatto (folder order), in English
    assert set(listing.paths) == good | bad   # hidden files, __MACOSX and .git are not photos
    assert all(listing.classes[label] == {"cane": "dog", "gatto": "cat"}[p.split("/")[0]]
               for p, label in zip(listing.paths, listing.labels))


def test_load_images_keeps_every_good_photo_and_warns_once(awkward, tmp_path, caplog):
    root, good, bad = awkward
    with caplog.at_level(logging.WARNING, logger="cnn.data"):
        data = load_images(scan_folder(root), SIDE, tmp_path, workers=1)
    assert set(data.paths) == good
    assert data.images.dtype == torch.uint8 and data.images.shape == (len(good), 3, SIDE, SIDE)
    assert data.labels.dtype == torch.int64 and len(data.labels) == len(good)
    warnings = skip_warnings(caplog)
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    message = warnings[0].getMessage()
    assert "skipped 2 unreadable" in message
    assert all(path in message for path in bad)


def test_decoded_colours(awkward, tmp_path):
    root, _, _ = awkward
    data = load_images(scan_folder(root), SIDE, tmp_path, workers=1)
    pixel = {p: data.images[i, :, SIDE // 2, SIDE // 2].tolist() for i, p in enumerate(data.paths)}
    assert pixel["gatto/anim.gif"] == [255, 0, 0]           # the first frame (red), not the blue one
    assert pixel["cane/palette.png"] == [255, 255, 255]     # transparent → composited on white
    assert pixel["cane/la.png"] == [100, 100, 100]
    r, g, b = pixel["cane/rgba.png"]                        # half-transparent red on white
    assert r == 255 and 120 <= g == b <= 135
    r, g, b = pixel["cane/cmyk.jpg"]                        # CMYK red stays red
    assert r > 200 and g < 50 and b < 50
    ramp = data.images[data.paths.index("cane/gray16.png"), 0, SIDE // 2]  # 16-bit 0 / 32768 / 65535
    assert ramp[0] < 10 and 110 < ramp[SIDE // 2] < 145 and ramp[-1] > 245


def test_exif_orientation_is_applied(tmp_path):
    img = load_image(exif_rotated_jpeg(tmp_path / "sideways.jpg"))
    assert img.size == (40, 80)                             # stored 80×40, shown upright 40×80
    r, g, b = img.getpixel((35, 5))                         # the stored top-left block, now top-right
    assert r > 200 and g < 60 and b < 60
    assert min(img.getpixel((5, 5))) > 200                  # and the top-left is white


def test_load_image_from_bytes_and_errors(tmp_path):
    from cnn.data import ImageError

    path = exif_rotated_jpeg(tmp_path / "x.jpg")
    assert load_image(path.read_bytes()).size == (40, 80)
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(b"hello")


# --- the pixel budget (issue 13): refused from the header, before decoding ---------------------------

def test_long_thin_images_are_refused_before_decoding(tmp_path):
    """A 1×50,000 PNG and a GIF whose screen is 1×65,535 (35 bytes) are refused by their shape; their pixel
    data is a single pixel's, so had they been decoded the error would be a truncated file instead."""
    from cnn.data import ImageShapeError

    for path in (png_claiming_size(tmp_path / "thin.png", 1, 50_000), gif_claiming_screen(tmp_path / "screen.gif", 1, 65_535)):
        with pytest.raises(ImageShapeError, match="too long and thin"):
            load_image(path)
    wide = Image.new("RGB", (cnn.data.MAX_SIDE_RATIO * 4, 4))   # at the cap: still a photo
    assert load_image(io_bytes(wide, "PNG")).size == wide.size


def test_the_budget_counts_the_decoded_mode_and_the_conversion_to_rgb(tmp_path):
    """The same 5,000² size fits as grayscale (1 byte a pixel, then RGB) but not as a palette image (1 byte,
    then RGBA and compositing): it is the memory of the whole decode that is budgeted, not the pixels."""
    from cnn.data import ImageError, ImageTooLargeError

    with pytest.raises(ImageTooLargeError, match="too many pixels to open safely"):
        load_image(png_claiming_size(tmp_path / "palette.png", 5_000, 5_000, mode="P"))
    with pytest.raises(ImageError, match="not a readable image") as gray:
        load_image(png_claiming_size(tmp_path / "gray.png", 5_000, 5_000, mode="L"))
    assert not isinstance(gray.value, ImageTooLargeError)       # allowed: it got as far as decoding
    with pytest.raises(ImageTooLargeError):
        load_image(png_claiming_size(tmp_path / "palette_13300.png", 13_300, 13_300, mode="P"))
    with pytest.raises(ImageTooLargeError):
        load_image(png_claiming_size(tmp_path / "one_bit.png", 13_300, 13_300, mode="1"))


def test_a_jpeg_over_the_budget_decodes_at_reduced_scale(tmp_path, monkeypatch):
    from cnn.data import ImageTooLargeError

    monkeypatch.setattr(cnn.data, "DECODE_BUDGET_MB", 1)           # 1600×1200 at full size needs ~23 MB
    path = tmp_path / "big.jpg"
    Image.new("RGB", (1600, 1200), (200, 30, 30)).save(path)
    assert min(load_image(path, draft_side=110).size) >= 110         # 1/8 scale: 200×150
    with pytest.raises(ImageTooLargeError):
        load_image(path)


def test_big_decodes_take_turns_and_ordinary_photos_do_not_wait_for_them(tmp_path):
    """While one big decode holds the heavy turn, another big image waits for it, and a small photo is
    decoded at once (so a few of the biggest accepted images cannot hold up ordinary visitors)."""
    import threading

    big = tmp_path / "big.png"
    Image.new("RGB", (2_000, 2_000), (10, 200, 10)).save(big)      # 4 MP: 48 MB to decode, over HEAVY_DECODE_MB
    small = io_bytes(shape_image("circle", 400, 0), "JPEG")
    done: dict[str, tuple[int, int]] = {}
    threads = {name: threading.Thread(target=lambda n=name, src=src: done.update({n: load_image(src).size}))
               for name, src in (("big", big), ("small", small))}
    with cnn.data.HEAVY_DECODES:                                      # a big decode in progress
        for t in threads.values():
            t.start()
        threads["small"].join(timeout=60)
        assert done == {"small": (400, 400)}                          # the small photo did not wait
        threads["big"].join(timeout=0.5)
        assert threads["big"].is_alive() and "big" not in done        # the big one waits for its turn
    threads["big"].join(timeout=60)
    assert done["big"] == (2_000, 2_000)


def test_the_resize_never_makes_an_image_larger_than_the_square_it_needs(monkeypatch):
    """A 1×20 image is not stretched to side×20·side before cropping: only the centre square is resampled."""
    from cnn.data import image_to_uint8

    asked = []
    resize = Image.Image.resize
    monkeypatch.setattr(Image.Image, "resize", lambda self, size, *a, **k: asked.append(tuple(size)) or
                        resize(self, size, *a, **k))
    thin = Image.new("RGB", (1, 20), (10, 200, 10))
    assert image_to_uint8(thin, 64).shape == (3, 64, 64) and asked == [(64, 64)]


def test_the_centre_square_resize_matches_resize_then_crop():
    from cnn.data import resize_short_side

    photo = shape_image("circle", 300, 3).resize((300, 200))
    ours = np.asarray(resize_short_side(photo, 60), dtype=np.float32)
    scaled = photo.resize((90, 60), Image.BICUBIC)
    reference = np.asarray(scaled.crop((15, 0, 75, 60)), dtype=np.float32)
    assert np.abs(ours - reference).mean() < 2


def test_any_decoder_exception_is_an_unreadable_image(tmp_path, monkeypatch):
    """Pillow's DDS plugin raises NotImplementedError on some files, others raise what they like: every
    one of them is 'not a readable image', never a crash of the caller."""
    from cnn.data import ImageError

    path = tmp_path / "odd.png"
    shape_image("circle", 16, 0).save(path)
    monkeypatch.setattr(Image.Image, "load", lambda self: (_ for _ in ()).throw(NotImplementedError("DDS")))
    with pytest.raises(ImageError, match="not a readable image"):
        load_image(path)


# --- clear errors ------------------------------------------------------------------------------------

def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist or is not a folder"):
        scan_folder(tmp_path / "nope")


def test_file_instead_of_folder(tmp_path):
    (tmp_path / "photos.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match="not a folder"):
        scan_folder(tmp_path / "photos.zip")


def test_fewer_than_two_classes(tmp_path):
    small_folder(tmp_path, classes=("only",))
    (tmp_path / ".hidden").mkdir()
    with pytest.raises(DataError, match="at least two classes; found 1 \\(only\\)"):
        scan_folder(tmp_path)


def test_empty_class_folder(tmp_path):
    small_folder(tmp_path)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"x")
    with pytest.raises(DataError, match="class folder .*empty.* is empty"):
        scan_folder(tmp_path)


def test_class_with_only_unreadable_files(tmp_path):
    small_folder(tmp_path)
    (tmp_path / "broken").mkdir()
    for i in range(2):
        (tmp_path / "broken" / f"{i}.jpg").write_text("not a photo")
    with pytest.raises(DataError, match="no readable image in class\\(es\\): broken"):
        load_images(scan_folder(tmp_path), SIDE, tmp_path / "cache", workers=1)


def test_two_folders_with_the_same_class(tmp_path):
    small_folder(tmp_path, classes=("cane", "dog"))
    with pytest.raises(DataError, match="same class"):
        scan_folder(tmp_path)


def test_none_folder_is_not_a_class_its_photos_are_outliers(tmp_path):
    small_folder(tmp_path, classes=("cat", "dog"))
    small_folder(tmp_path, classes=("none",), per_class=2)
    listing = scan_folder(tmp_path)
    assert listing.classes == ["cat", "dog"]
    assert listing.outliers == ["none/0.png", "none/1.png"]
    assert not any(p.startswith("none/") for p in listing.paths)
    assert listing.file(listing.outliers[0]) == tmp_path / "none" / "0.png"
    only_none = small_folder(tmp_path / "x", classes=("cat", "none"))
    with pytest.raises(DataError, match="at least two classes; found 1 \\(cat\\)"):
        scan_folder(only_none)


def test_several_roots_merge_by_class_name(tmp_path):
    base = small_folder(tmp_path / "base", classes=("gatto", "cane"))       # cat, dog (folder order: cane, gatto)
    more = small_folder(tmp_path / "more", classes=("horse",), per_class=2)  # one class alone is fine here
    fixes = small_folder(tmp_path / "fixes", classes=("cat", "none"), per_class=1)
    listing = scan_folders([base, more, fixes])
    assert listing.classes == ["dog", "cat", "horse"]        # first root's order, then the new ones
    by_class = {c: [p for p, k in zip(listing.paths, listing.labels) if listing.classes[k] == c] for c in listing.classes}
    assert by_class["cat"] == ["0:gatto/0.png", "0:gatto/1.png", "0:gatto/2.png", "2:cat/0.png"]
    assert by_class["horse"] == ["1:horse/0.png", "1:horse/1.png"]
    assert listing.outliers == ["2:none/0.png"]
    assert all(listing.file(p).is_file() for p in listing.paths + listing.outliers)
    assert listing.file("2:cat/0.png") == fixes / "cat" / "0.png"
    with pytest.raises(DataError, match="at least two classes"):
        scan_folders([more, small_folder(tmp_path / "same", classes=("horse",))])


# --- the cache ---------------------------------------------------------------------------------------

class CountingDecode:
    def __init__(self):
        self.calls = 0
        self.real = cnn.data._decode

    def __call__(self, job):
        self.calls += 1
        return self.real(job)


def _refuse(job):
    raise AssertionError("the cache should have been used")


def test_cache_is_reused(tmp_path, monkeypatch):
    root = small_folder(tmp_path / "data")
    first = load_images(scan_folder(root), SIDE, tmp_path / "cache", workers=1)
    monkeypatch.setattr(cnn.data, "_decode", _refuse)
    second = load_images(scan_folder(root), SIDE, tmp_path / "cache", workers=1)
    assert torch.equal(first.images, second.images) and torch.equal(first.labels, second.labels)
    assert first.paths == second.paths


def test_several_roots_decode_through_one_cache(tmp_path, monkeypatch):
    a = small_folder(tmp_path / "a", classes=("cat", "dog"))
    b = small_folder(tmp_path / "b", classes=("dog",), per_class=2)
    counter = CountingDecode()
    first = load_images(scan_folders([a, b]), SIDE, tmp_path / "cache", workers=1)
    assert first.paths[-2:] == ["1:dog/0.png", "1:dog/1.png"] and first.labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    monkeypatch.setattr(cnn.data, "_decode", _refuse)            # the same roots again: the cache answers
    assert torch.equal(load_images(scan_folders([a, b]), SIDE, tmp_path / "cache", workers=1).images, first.images)
    monkeypatch.setattr(cnn.data, "_decode", counter)            # another order of roots is another cache entry
    assert len(load_images(scan_folders([b, a]), SIDE, tmp_path / "cache", workers=1).paths) == 8
    assert counter.calls == 8


def test_cache_is_keyed_by_side(tmp_path, monkeypatch):
    root = small_folder(tmp_path / "data")
    load_images(scan_folder(root), SIDE, tmp_path / "cache", workers=1)
    monkeypatch.setattr(cnn.data, "_decode", counter := CountingDecode())
    assert load_images(scan_folder(root), SIDE + 8, tmp_path / "cache", workers=1).images.shape[-1] == SIDE + 8
    assert counter.calls == 6


def test_touching_or_adding_a_file_rebuilds_the_cache(tmp_path, monkeypatch):
    root = small_folder(tmp_path / "data")
    load_images(scan_folder(root), SIDE, tmp_path / "cache", workers=1)
    monkeypatch.setattr(cnn.data, "_decode", counter := CountingDecode())

    stat = (root / "a" / "0.png").stat()
    os.utime(root / "a" / "0.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    load_images(scan_folder(root), SIDE, tmp_path / "cache", workers=1)
    assert counter.calls == 6

    shape_image("square", 16).save(root / "b" / "new.png")
    data = load_images(scan_folder(root), SIDE, tmp_path / "cache", workers=1)
    assert counter.calls == 6 + 7 and "b/new.png" in data.paths and len(data.paths) == 7


def test_truncated_cache_is_rebuilt_not_trusted(tmp_path, monkeypatch, caplog):
    root = small_folder(tmp_path / "data")
    first = load_images(scan_folder(root), SIDE, tmp_path / "cache", workers=1)
    (cache_file,) = (tmp_path / "cache").glob("*.safetensors")
    blob = cache_file.read_bytes()
    cache_file.write_bytes(blob[: len(blob) - 100])  # as if the write had been cut short
    monkeypatch.setattr(cnn.data, "_decode", counter := CountingDecode())
    with caplog.at_level(logging.WARNING, logger="cnn.data"):
        again = load_images(scan_folder(root), SIDE, tmp_path / "cache", workers=1)
    assert counter.calls == 6
    assert torch.equal(first.images, again.images)
    assert any("damaged cache" in r.getMessage() for r in caplog.records)
    assert cache_file.read_bytes() == blob  # rewritten whole


def test_cache_that_disagrees_with_its_index_is_rebuilt(tmp_path, monkeypatch):
    root = small_folder(tmp_path / "data")
    load_images(scan_folder(root), SIDE, tmp_path / "cache", workers=1)
    (index,) = (tmp_path / "cache").glob("*.json")
    index.write_text('{"paths": ["a/0.png"]}')
    monkeypatch.setattr(cnn.data, "_decode", counter := CountingDecode())
    assert len(load_images(scan_folder(root), SIDE, tmp_path / "cache", workers=1).paths) == 6
    assert counter.calls == 6


def test_decoding_with_worker_processes_matches_inline(tmp_path):
    root = small_folder(tmp_path / "data")
    inline = load_images(scan_folder(root), SIDE, tmp_path / "c1", workers=1)
    pooled = load_images(scan_folder(root), SIDE, tmp_path / "c2", workers=2)
    assert torch.equal(inline.images, pooled.images)


# --- the split ---------------------------------------------------------------------------------------

def test_stratified_split():
    labels = [0] * 20 + [1] * 7 + [2] * 2 + [3] * 40
    train, val = stratified_split(labels, 0.2, seed=1)
    assert (train, val) == stratified_split(labels, 0.2, seed=1)          # seeded and deterministic
    assert (train, val) != stratified_split(labels, 0.2, seed=2)
    assert not set(train) & set(val) and sorted(train + val) == list(range(len(labels)))
    for k in range(4):
        assert any(labels[i] == k for i in train) and any(labels[i] == k for i in val)
    assert sum(labels[i] == 0 for i in val) == 4 and sum(labels[i] == 3 for i in val) == 8


# --- augmentation ------------------------------------------------------------------------------------

def batch(n: int = 4, side: int = 32) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, side, side), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


AUG = dict(scale=(0.35, 1.0), ratio=(0.75, 1.333), rotation=15.0, flip_p=0.5, color_jitter=0.3)


def test_augment_batch_shape_range_and_determinism():
    x = batch()
    a = augment_batch(x, 24, torch.Generator().manual_seed(5), **AUG)
    b = augment_batch(x, 24, torch.Generator().manual_seed(5), **AUG)
    c = augment_batch(x, 24, torch.Generator().manual_seed(6), **AUG)
    assert a.shape == (4, 3, 24, 24) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert x.dtype == torch.uint8  # the cached batch is not modified


@pytest.mark.parametrize("size", [32, 20])
def test_augment_batch_pure_flip_is_the_mirrored_resample(size):
    x = batch()
    out = augment_batch(x, size, torch.Generator().manual_seed(0), scale=(1, 1), ratio=(1, 1), rotation=0.0,
                        flip_p=1.0, color_jitter=0.0)
    expected = F.interpolate(x.float() / 255, size=(size, size), mode="bilinear", align_corners=False).flip(3)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    if size == 32:
        torch.testing.assert_close(out, x.flip(3).float() / 255, atol=1e-5, rtol=0)


PLAIN = dict(scale=(1, 1), ratio=(1, 1), rotation=0.0, flip_p=0.0, color_jitter=0.0)   # the bare resample


def test_grayscale_turns_its_share_of_photos_grey_each_photo_drawn_on_its_own():
    x = batch(n=400, side=8)
    out = augment_batch(x, 8, torch.Generator().manual_seed(1), **PLAIN, grayscale=0.5)
    grey = (out.amax(1) - out.amin(1)).flatten(1).amax(1) < 1e-6        # all three channels equal
    untouched = (out - x.float() / 255).abs().flatten(1).amax(1) < 1e-5
    assert torch.equal(grey, ~untouched) and 150 < grey.sum() < 250
    expected = (x[grey].float() / 255 * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    torch.testing.assert_close(out[grey][:, 0], expected, atol=1e-5, rtol=0)


def test_erasing_replaces_one_rectangle_per_chosen_photo_with_noise():
    x = torch.full((300, 3, 32, 32), 128, dtype=torch.uint8)
    out = augment_batch(x, 32, torch.Generator().manual_seed(2), **PLAIN, erasing=0.5)
    erased = (out - 128 / 255).abs().amax(1) > 1e-5                      # n × 32 × 32: where the noise went
    touched = erased.flatten(1).any(1)
    assert 100 < touched.sum() < 200
    for mask in erased[touched]:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert len(rows) == rows[-1] - rows[0] + 1 and len(cols) == cols[-1] - cols[0] + 1   # one block...
        box = mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        assert box.float().mean() > 0.98 and 0.01 < box.numel() / mask.numel() < 0.4      # ...filled, 2–33 %
    corners = {tuple(m.nonzero()[0].tolist()) for m in erased[touched]}
    assert len(corners) > 0.8 * touched.sum()                               # each photo its own rectangle


def test_grayscale_and_erasing_follow_the_seed_and_leave_the_rest_as_it_was():
    x = batch()
    a, b, c = (augment_batch(x, 24, torch.Generator().manual_seed(s), **AUG, grayscale=0.5, erasing=0.5)
               for s in (5, 5, 6))
    assert a.shape == (4, 3, 24, 24) and torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(augment_batch(x, 24, torch.Generator().manual_seed(5), **AUG, grayscale=0, erasing=0),
                       augment_batch(x, 24, torch.Generator().manual_seed(5), **AUG))   # off draws nothing


# --- photos of none of the classes, and the held-out part of them -------------------------------------------

def test_scan_photos_takes_every_photo_whatever_the_layout(tmp_path):
    small_folder(tmp_path / "other", classes=("people", "cars"))
    (tmp_path / "other" / "loose.jpg").write_bytes((tmp_path / "other" / "cars" / "0.png").read_bytes())
    (tmp_path / "other" / ".hidden.jpg").write_bytes(b"x")
    listing = scan_photos(tmp_path / "other", "none")
    assert listing.classes == ["none"] and set(listing.labels) == {0}
    assert "loose.jpg" in listing.paths and not any(p.startswith(".") for p in listing.paths)
    assert len(load_images(listing, SIDE, tmp_path / "cache", workers=1).paths) == len(listing.paths)
    with pytest.raises(DataError, match="does not exist"):
        scan_photos(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no files"):
        scan_photos(tmp_path / "empty")


def test_hash_split_is_stable_whatever_else_the_folder_holds():
    paths = [f"group/{i}.jpg" for i in range(1000)]
    kept, held = hash_split(paths, 0.4)
    assert sorted(kept + held) == list(range(1000)) and 350 < len(held) < 450
    more = paths + [f"new/{i}.jpg" for i in range(500)]
    _, held_more = hash_split(more, 0.4)
    assert {more[i] for i in held_more if i < 1000} == {paths[i] for i in held}


def test_eval_view_is_the_centre_crop_normalised_and_softened_only_when_asked():
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    x = torch.randint(0, 256, (2, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    assert torch.equal(eval_view(x, 32, mean, std), normalize(center_crop(x, 32), mean, std))
    soft = eval_view(x, 32, mean, std, blur_sigma=0.5)
    sharp = eval_view(x, 32, mean, std)
    assert soft.shape == sharp.shape == (2, 3, 32, 32)

    def roughness(t: torch.Tensor) -> float:     # how much neighbouring pixels differ
        return (t[..., 1:] - t[..., :-1]).abs().mean().item()
    assert roughness(soft) < 0.7 * roughness(sharp)                          # noise is smoothed ...
    assert torch.allclose(soft.mean((2, 3)), sharp.mean((2, 3)), atol=0.05)  # ... and the colours stay
    flat = torch.full((1, 3, 40, 40), 90, dtype=torch.uint8)
    assert torch.allclose(eval_view(flat, 32, mean, std, 0.5), eval_view(flat, 32, mean, std), atol=1e-6)


@pytest.mark.parametrize("sigma", [0.3, 0.5, 1.7])
def test_our_gaussian_blur_is_torchvisions(sigma):
    from torchvision.transforms.v2.functional import gaussian_blur as torchvision_blur

    x = torch.randn(2, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    side = 2 * math.ceil(3 * sigma) + 1
    assert torch.allclose(gaussian_blur(x, sigma), torchvision_blur(x, [side, side], [sigma, sigma]), atol=1e-5)


# --- split folders (train/, test/ ...) ------------------------------------------------------------------------

def test_split_folders_are_told_from_class_folders(tmp_path):
    assert [split_of(name) for name in ("Train", "training", "val", "dev", "Validation", "testing", "cat")] == [
        "train", "train", "validation", "validation", "validation", "test", None]
    for name in ("train", "Test", "none", ".hidden"):
        (tmp_path / "splits" / name).mkdir(parents=True)
    assert split_folders(tmp_path / "splits") == {"train": tmp_path / "splits" / "train",
                                                  "test": tmp_path / "splits" / "Test"}
    make_shapes_folder(tmp_path / "classes", per_class=1, size=16, classes=("circle", "square"))
    assert split_folders(tmp_path / "classes") == {}
    (tmp_path / "classes" / "train").mkdir()
    with pytest.raises(DataError, match=r"split folders \(train\) beside class folders \(circle, square\)"):
        split_folders(tmp_path / "classes")
    (tmp_path / "splits" / "val").mkdir()
    (tmp_path / "splits" / "dev").mkdir()
    with pytest.raises(DataError, match="name the same split twice"):
        split_folders(tmp_path / "splits")


def test_a_root_of_split_folders_is_not_read_as_classes(tmp_path):
    for split in ("train", "test"):
        make_shapes_folder(tmp_path / "shapes" / split, per_class=1, size=16, classes=("circle", "square"))
    with pytest.raises(DataError, match=r"is split into test/, train/ rather than one folder per class: name the "
                                        r"split to read \(e\.g\. .*shapes/test\)"):
        scan_folder(tmp_path / "shapes")
