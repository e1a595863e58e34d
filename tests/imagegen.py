"""Photos the test suite and benchmarks generate themselves: a learnable shapes task and every
awkward file a real folder can hold. No photo from ../shared is ever used here."""
from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLOURS = {"circle": (220, 40, 40), "square": (40, 160, 60), "triangle": (40, 70, 220)}


def shape_image(kind: str, size: int = 64, seed: int = 0) -> Image.Image:
    """A coloured shape of class `kind` at a random place and size on a noisy background."""
    rng = random.Random(f"{kind}-{size}-{seed}")
    noise = np.random.default_rng(rng.randrange(2**32)).integers(90, 170, (size, size, 3), dtype=np.uint8)
    img = Image.fromarray(noise)
    draw = ImageDraw.Draw(img)
    r = rng.uniform(0.22, 0.35) * size
    cx, cy = rng.uniform(r, size - r), rng.uniform(r, size - r)
    colour = tuple(min(255, max(0, c + rng.randint(-30, 30))) for c in COLOURS[kind])
    if kind == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif kind == "square":
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=colour)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    return img


def make_shapes_folder(root: Path, per_class: int = 40, size: int = 64, classes=SHAPES) -> Path:
    """root/<shape>/NNN.jpg|png: a small task a CNN learns in a few epochs."""
    for kind in classes:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = shape_image(kind, size, i)
            img.save(root / kind / (f"{i:03d}.png" if i % 4 == 0 else f"{i:03d}.jpg"))
    return root


def make_web_photos(root: Path, per_class: int = 20, first_seed: int = 1000) -> Path:
    """root/<shape>/N.jpg: bigger photos of the shapes, drawn with other seeds than the training folder's — a
    separate real-photo validation folder (like animals-val)."""
    for kind in SHAPES:
        (root / kind).mkdir(parents=True)
        for i in range(per_class):
            shape_image(kind, 96, first_seed + i).save(root / kind / f"{i}.jpg")
    return root


def outlier_image(kind: str, size: int = 64, seed: int = 0) -> Image.Image:
    """A photo that is none of the shapes: the noisy background alone, or grey stripes."""
    rng = np.random.default_rng([seed, size, kind == "stripes"])
    noise = rng.integers(90, 170, (size, size, 3), dtype=np.uint8)
    if kind == "stripes":
        period = int(rng.integers(4, 12))
        noise[(np.arange(size) // period) % 2 == 0] //= 3
    return Image.fromarray(noise)


def make_outlier_folder(root: Path, per_group: int = 30, size: int = 64) -> Path:
    """root/{background,stripes}/NNN.jpg: photos of none of the shapes, in groups (not classes)."""
    for kind in ("background", "stripes"):
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_group):
            outlier_image(kind, size, i).save(root / kind / f"{i:03d}.jpg")
    return root


RED, BLUE = (255, 0, 0), (0, 0, 255)


def exif_rotated_jpeg(path: Path) -> Path:
    """An 80×40 JPEG stored sideways with EXIF orientation 6 (shown rotated 90° clockwise): the
    stored top-left red block shows at the top-right of a 40×80 upright photo."""
    img = Image.new("RGB", (80, 40), (255, 255, 255))
    img.paste(RED, (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, quality=95, exif=exif.tobytes())
    return path


def make_awkward_folder(root: Path) -> tuple[Path, set[str], set[str]]:
    """Two Italian-named classes holding every awkward file a real folder has.

    Returns (root, readable, unreadable): paths relative to root that should decode, and the
    visible ones that should be skipped. Hidden files and folders belong to neither.
    """
    dog, cat = root / "cane", root / "gatto"          # Animals-10 names: dog, cat
    for d in (dog / "nested" / "deeper", cat / "__MACOSX", root / ".git"):
        d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def rgb(w: int, h: int) -> Image.Image:
        return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))

    rgb(50, 40).save(dog / "rgb.jpg")
    rgb(41, 33).convert("L").save(dog / "gray.JPG", format="JPEG")
    Image.new("CMYK", (30, 30), (0, 255, 255, 0)).save(dog / "cmyk.jpg")
    rgb(1, 1).save(dog / "one_pixel.png")
    rgb(37, 501).save(dog / "tall.Png", format="PNG")
    Image.new("RGBA", (20, 20), (255, 0, 0, 128)).save(dog / "rgba.png")
    palette = Image.new("P", (20, 20), 1)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.save(dog / "palette.png", transparency=1)  # fully transparent: white after compositing
    ramp = np.tile(np.array([0, 32768, 65535], dtype=np.uint16).repeat(10), (30, 1))
    Image.fromarray(ramp).save(dog / "gray16.png")  # mode I;16
    Image.new("LA", (20, 20), (100, 255)).save(dog / "la.png")
    exif_rotated_jpeg(dog / "exif6.jpg")
    rgb(20, 20).save(dog / "nested" / "deeper" / "inner.webp")
    good = io_bytes(rgb(64, 64), "JPEG")
    (dog / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (dog / "notes.jpg").write_text("this is not a photo\n")
    rgb(20, 20).save(dog / ".hidden.jpg")
    (dog / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")

    rgb(30, 20).save(cat / "a.webp")
    rgb(30, 20).save(cat / "b.bmp")
    rgb(30, 20).save(cat / "c.JPEG", format="JPEG")
    frames = [Image.new("RGB", (20, 20), c) for c in (RED, BLUE)]
    frames[0].save(cat / "anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    rgb(20, 20).save(cat / "__MACOSX" / "junk.jpg")
    rgb(20, 20).save(root / ".git" / "x.jpg")

    readable = {"cane/rgb.jpg", "cane/gray.JPG", "cane/cmyk.jpg", "cane/one_pixel.png", "cane/tall.Png",
                "cane/rgba.png", "cane/palette.png", "cane/gray16.png", "cane/la.png", "cane/exif6.jpg",
                "cane/nested/deeper/inner.webp", "gatto/a.webp", "gatto/b.bmp", "gatto/c.JPEG", "gatto/anim.gif"}
    return root, readable, {"cane/truncated.jpg", "cane/notes.jpg"}


def io_bytes(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def png_claiming_size(path: Path, width: int, height: int, mode: str = "L") -> Path:
    """A tiny PNG of `mode` whose header claims width×height pixels: a decompression bomb, cheap to make
    (its pixel data is one pixel's, so decoding it fails as truncated)."""
    data = bytearray(io_bytes(Image.new(mode, (1, 1)), "PNG"))
    ihdr = 8 + 8                                   # signature, then the IHDR chunk's length and type
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4:ihdr + 13]))  # type + 13 data bytes
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


def gif_claiming_screen(path: Path, width: int, height: int) -> Path:
    """A 35-byte GIF whose logical screen is width×height around one 1×1 frame: Pillow decodes the screen."""
    data = (b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
            + b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00;")
    path.write_bytes(data)
    return path


def make_upload_matrix(root: Path) -> dict[str, Path]:
    """Every kind of file a public demo receives, by name: photos in awkward modes and non-photos."""
    root.mkdir(parents=True, exist_ok=True)
    photo = shape_image("circle", 96, 0)
    photo.save(root / "rgb.jpg")
    photo.convert("L").save(root / "grayscale.png")
    photo.convert("RGBA").save(root / "rgba.png")
    photo.convert("CMYK").save(root / "cmyk.jpg")
    photo.convert("P", palette=Image.Palette.ADAPTIVE).save(root / "palette_transparent.png", transparency=0)
    Image.fromarray((np.asarray(photo.convert("L"), dtype=np.uint16) * 257)).save(root / "sixteen_bit.png")
    frames = [photo, shape_image("square", 96, 0)]
    frames[0].save(root / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    exif = Image.Exif()
    exif[0x0112] = 6                                # stored sideways, shown upright
    photo.rotate(90, expand=True).save(root / "exif_rotated.jpg", exif=exif.tobytes())
    photo.resize((1, 1)).save(root / "one_pixel.png")
    photo.resize((12000, 9000), Image.NEAREST).save(root / "huge_12000x9000.jpg", quality=50)
    png_claiming_size(root / "decompression_bomb.png", 40000, 40000)
    (root / "empty.jpg").write_bytes(b"")
    (root / "text.jpg").write_text("this is a text file with a photo's name\n")
    (root / "document.jpg").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << >>\n%%EOF\n")
    good = io_bytes(photo, "JPEG")
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    return {p.name: p for p in root.iterdir()}


def dds_of_unknown_format(path: Path) -> Path:
    """A DDS header whose pixel format Pillow does not know: its plugin raises NotImplementedError on open."""
    path.write_bytes(b"DDS " + struct.pack("<7I", 124, 0x1007, 4, 4, 0, 0, 0) + b"\0" * 44 + struct.pack("<2I", 32, 4)
                     + b"ZZZZ" + b"\0" * 20 + struct.pack("<5I", 0x1000, 0, 0, 0, 0) + b"\0" * 64)
    return path
