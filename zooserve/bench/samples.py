"""Sample request bodies made from what packages ship (nothing downloaded): scikit-learn's two
bundled photos and digits, digits drawn with Pillow, generated JPEGs of other sizes, short and
long texts.

Benchmarks, ``zooserve tune``, the demo, the Locust load test and the tests all take their bodies
from here. Only numpy, Pillow and scikit-learn: the Locust image imports it without torch.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits, load_sample_image

TEXTS = (
    "great match",
    "the central bank kept interest rates unchanged on thursday",
    "scientists reported a new method to grow crystals at room temperature, which could cut the cost "
    "of solar panels and batteries in the coming decade according to the paper",
    " ".join(["the team won again after a long season of injuries and close defeats"] * 12),
)


def _encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def photo_jpegs() -> dict[str, bytes]:
    """scikit-learn's china.jpg and flower.jpg (640x427), plus generated JPEGs of varied sizes."""
    out = {
        name: _encode(Image.fromarray(load_sample_image(name)), "JPEG", quality=90)
        for name in ("china.jpg", "flower.jpg")
    }
    rng = np.random.default_rng(0)
    for w, h in ((320, 240), (800, 600), (1280, 720), (97, 131)):
        grad = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
        img = np.clip(grad + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
        out[f"generated_{w}x{h}.jpg"] = _encode(Image.fromarray(img), "JPEG", quality=85)
    return out


def digit_pngs(count: int = 20) -> list[tuple[bytes, int]]:
    """(PNG bytes, true label): the last ``count`` of scikit-learn's 8x8 digits as 32x32
    white-on-black images, as LeNet-5 was trained."""
    d = load_digits()
    return [
        (_encode(Image.fromarray((img * 255 / 16).astype(np.uint8)).resize((32, 32)), "PNG"), int(label))
        for img, label in zip(d.images[-count:], d.target[-count:], strict=True)
    ]


# pen strokes of a few digits, in fractions of the canvas: how a person draws them with a mouse
STROKES: dict[int, list[list[tuple[float, float]]]] = {
    1: [[(0.38, 0.28), (0.56, 0.12), (0.56, 0.88)]],
    4: [[(0.62, 0.88), (0.62, 0.12), (0.18, 0.62), (0.82, 0.62)]],
    7: [[(0.22, 0.16), (0.8, 0.16), (0.42, 0.88)], [(0.38, 0.52), (0.72, 0.52)]],
}


def drawn_digits() -> list[tuple[str, bytes, int]]:
    """(name, PNG bytes, true digit) for digits drawn with Pillow as a user would make them: pen
    strokes, off-centre on a white page, and digits typed in Pillow's own font (a font the model
    never saw), white on black and black on grey, at sizes unlike the training set's."""
    from PIL import ImageDraw, ImageFont

    out = []
    for d, strokes in STROKES.items():
        img = Image.new("L", (240, 200), 255)
        draw = ImageDraw.Draw(img)
        for line in strokes:  # the digit in the left part of the page, 60 % of its height
            draw.line([(30 + 120 * x, 30 + 120 * y) for x, y in line], fill=20, width=9, joint="curve")
        out.append((f"drawn_pen_{d}.png", _encode(img, "PNG"), d))
    for d, (ink, paper, side) in {
        1: (0, 255, 90),
        2: (255, 0, 64),
        5: (30, 190, 150),
        9: (0, 255, 300),
    }.items():
        img = Image.new("L", (side, side), paper)
        font = ImageFont.load_default(side // 2)
        ImageDraw.Draw(img).text((side * 0.55, side * 0.45), str(d), fill=ink, font=font, anchor="mm")
        out.append((f"drawn_font_{d}.png", _encode(img, "PNG"), d))
    return out


def body_for(channels: int | None) -> tuple[bytes, str]:
    """One representative body and its content type: a photo for RGB models, a digit for 1-channel
    models, a sentence for text models (``channels`` None)."""
    if channels is None:
        return TEXTS[1].encode(), "text/plain"
    if channels == 1:
        return digit_pngs(1)[0][0], "application/octet-stream"
    return photo_jpegs()["china.jpg"], "application/octet-stream"


def write_body(folder: Path, channels: int | None) -> Path:
    """``body_for`` written to a file (ApacheBench posts a file)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "body.bin"
    path.write_bytes(body_for(channels)[0])
    return path


PHONE_12MP = (4032, 3024)  # a phone camera's 12 MP frame, 4:3


def camera_photo(size: tuple[int, int] = PHONE_12MP, quality: int = 90, source: str = "china.jpg") -> bytes:
    """A camera-sized JPEG made from a bundled photo: its centre 4:3 cut, upscaled (Lanczos) to
    ``size``, with a fixed +-4 luminance grain so that the file costs what a camera's does to
    entropy-decode (12 MP q90: 2.3 MB; a smooth upscale alone is 1.4 MB)."""
    a = load_sample_image(source)
    h, w = a.shape[:2]
    cw, ch = (h * size[0] // size[1], h) if w * size[1] >= h * size[0] else (w, w * size[1] // size[0])
    left, top = (w - cw) // 2, (h - ch) // 2
    img = np.asarray(Image.fromarray(a[top : top + ch, left : left + cw]).resize(size, Image.LANCZOS))
    grain = np.random.default_rng(0).integers(-4, 5, size=img.shape[:2], dtype=np.int16)[..., None]
    img = np.clip(img + grain, 0, 255).astype(np.uint8)
    return _encode(Image.fromarray(img), "JPEG", quality=quality)


# photo workloads of ``zooserve bench``: what an application sends; one file each, posted as is
WORKLOADS = {
    "small": ("scikit-learn's china.jpg, 640x427", lambda: photo_jpegs()["china.jpg"]),
    "12mp": ("china.jpg upscaled to 4032x3024 (12 MP), q90", camera_photo),
}


def write_workloads(folder: Path, names: list[str]) -> dict[str, Path]:
    """name -> file with that workload's body (generated afresh: the 12 MP one takes ~3 s)."""
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        raise ValueError(f"unknown workloads {unknown}: choose from {sorted(WORKLOADS)}")
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name in names:
        path = folder / f"body_{name}.jpg"
        path.write_bytes(WORKLOADS[name][1]())
        out[name] = path
    return out


def write_samples(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (png, label) in enumerate(digit_pngs(5)):
        (folder / f"digit_{i}_label{label}.png").write_bytes(png)
    for name, png, _ in drawn_digits():
        (folder / name).write_bytes(png)
    for name, data in photo_jpegs().items():
        (folder / name).write_bytes(data)
    return folder
