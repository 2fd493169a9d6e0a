"""Small bodies (at most 1 MB) that declare or cause much more work than they weigh, and the
"normal photo" they are measured against: a 12 MP camera-sized JPEG."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image
from sklearn.datasets import load_sample_image

MAX_BODY = 1_000_000


def _encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def camera_photo(width: int = 4032, height: int = 3024) -> bytes:
    """A 12 MP JPEG at quality 90 that compresses like a photo (upscaled photo plus sensor noise)."""
    rng = np.random.default_rng(0)
    base = Image.fromarray(load_sample_image("china.jpg")).resize((width, height), Image.Resampling.BILINEAR)
    noisy = np.asarray(base).astype(np.int16) + rng.normal(0, 4, (height, width, 3)).astype(np.int16)
    return _encode(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), "JPEG", quality=90)


def png_declaring(width: int, height: int) -> bytes:
    """A valid header and a zlib stream of zero rows: a few KB for any declared size."""
    raw = b"".join(b"\x00" + b"\x00" * width for _ in range(min(height, 64)))  # grey rows, filter 0

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def animated_gif(side: int, frames: int) -> bytes:
    images = [Image.new("P", (side, side), i % 200) for i in range(frames)]
    return _encode(images[0], "GIF", save_all=True, append_images=images[1:], duration=10)


def animated_webp(side: int, frames: int) -> bytes:
    images = [Image.new("RGB", (side, side), (i % 250, 0, 0)) for i in range(frames)]
    return _encode(images[0], "WEBP", save_all=True, append_images=images[1:], lossless=True, quality=0)


def multipage_tiff(side: int, pages: int) -> bytes:
    images = [Image.new("L", (side, side), i) for i in range(pages)]
    return _encode(images[0], "TIFF", save_all=True, append_images=images[1:], compression="tiff_deflate")


def bombs() -> dict[str, bytes]:
    """name -> body, each at most MAX_BODY bytes."""
    out = {
        "png 7.9 MP of zeros (decoded in full, under the cap)": _encode(
            Image.new("RGB", (2800, 2800)), "PNG"
        ),
        "png 30 MP of zeros (over the decode cap)": _encode(Image.new("L", (5500, 5500)), "PNG"),
        "png declaring 400 MP": png_declaring(20000, 20000),
        "png 1 x 500000 strip": _encode(Image.new("L", (500_000, 1)), "PNG"),
        "png 500000 x 1 strip": _encode(Image.new("L", (1, 500_000)), "PNG"),
        "png 64 x 131072 (1:2048)": _encode(Image.new("RGB", (64, 131_072), (200, 10, 10)), "PNG"),
        "jpeg 36 MP of grey": _encode(Image.new("RGB", (6000, 6000), (128, 128, 128)), "JPEG", quality=30),
        "gif 60 frames of 1500 x 1500": animated_gif(1500, 60),
        "webp 40 frames of 1200 x 1200": animated_webp(1200, 40),
        "tiff 100 pages of 1500 x 1500": multipage_tiff(1500, 100),
        "bmp 16 MP declared, truncated": _encode(Image.new("RGB", (4000, 4000)), "BMP")[:MAX_BODY],
    }
    for name, body in out.items():
        assert len(body) <= MAX_BODY, (name, len(body))
    return out
