"""Sample request bodies made from what packages ship (nothing downloaded): scikit-learn's two
bundled photos and digits, generated JPEGs of other sizes, short and long texts.

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


def write_samples(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (png, label) in enumerate(digit_pngs(5)):
        (folder / f"digit_{i}_label{label}.png").write_bytes(png)
    for name, data in photo_jpegs().items():
        (folder / name).write_bytes(data)
    return folder
