"""Generate the bad-input corpus (no hand-made binaries in git).

    python tests/data/make_bad_inputs.py [OUT_DIR]     # writes tests/data/bad_inputs/ by default

Each case: payload bytes, the content type to send, and the expected outcome: an HTTP status and
error type, or ``None`` when the input is valid and must get a prediction.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

OCTET = "application/octet-stream"


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    content_type: str
    status: int | None  # None: valid input, expect 200
    error_type: str | None = None


def _photo(w: int = 160, h: int = 120) -> Image.Image:
    rng = np.random.default_rng(0)
    grad = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
    return Image.fromarray(np.clip(grad + rng.normal(0, 30, (h, w, 3)), 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_bomb(side: int = 30000) -> bytes:
    """A valid 1-bit PNG declaring side x side pixels (~100 KB on disk, 900 M pixels decoded)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row * 1000) for _ in range(side // 1000)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def corrupt_entropy(jpeg: bytes) -> bytes:
    """Keep the headers, scramble the entropy-coded data after the start-of-scan marker."""
    sos = jpeg.index(b"\xff\xda")
    body = bytearray(jpeg)
    rng = np.random.default_rng(1)
    start = sos + 20
    body[start:-2] = (
        rng.integers(0, 255, len(body) - 2 - start, dtype=np.uint8).tobytes().replace(b"\xff", b"\x00")
    )
    return bytes(body[: start + 200]) + b"\xff\xd9"


def image_cases() -> list[Case]:
    photo = _photo()
    jpeg, png = encode(photo, "JPEG", quality=90), encode(photo, "PNG")
    gray16 = Image.fromarray((np.linspace(0, 65535, 160 * 120).reshape(120, 160)).astype(np.uint16))
    return [
        Case("empty_body", b"", OCTET, 400, "EmptyBody"),
        Case("one_byte", b"\xff", OCTET, 400, "InvalidImage"),
        Case("truncated_jpeg", jpeg[: len(jpeg) // 3], OCTET, 400, "InvalidImage"),
        Case("truncated_png", png[: len(png) // 3], OCTET, 400, "InvalidImage"),
        # libjpeg-turbo recovers from corrupt entropy data (grey blocks), as browsers do: answered
        Case("corrupt_entropy_jpeg", corrupt_entropy(jpeg), OCTET, None),
        Case("png_bomb_30000", png_bomb(), OCTET, 413, "ImageTooLarge"),
        Case("plain_text", b"hello, this is not an image", OCTET, 400, "InvalidImage"),
        Case("text_content_type", b"hello", "text/plain", 415, "UnsupportedMediaType"),
        Case("json_to_image_model", b'{"text": "hi"}', "application/json", 415, "UnsupportedMediaType"),
        Case(
            "html_to_image_model", b"<html><body>hi</body></html>", "text/html", 415, "UnsupportedMediaType"
        ),
        Case("malformed_json", b'{"text": ', "application/json", 415, "UnsupportedMediaType"),
        Case(
            "svg_image",
            b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>',
            OCTET,
            400,
            "InvalidImage",
        ),
        # valid inputs: must be answered with a prediction
        Case("gif", encode(photo.convert("P"), "GIF"), OCTET, None),
        Case("bmp", encode(photo, "BMP"), OCTET, None),
        Case("tiff", encode(photo, "TIFF"), OCTET, None),
        Case("webp", encode(photo, "WEBP"), OCTET, None),
        Case("cmyk_jpeg", encode(photo.convert("CMYK"), "JPEG"), OCTET, None),
        Case("grayscale_png", encode(photo.convert("L"), "PNG"), OCTET, None),
        Case("png_16bit", encode(gray16, "PNG"), OCTET, None),
        Case("rgba_png", encode(photo.convert("RGBA"), "PNG"), OCTET, None),
        Case("one_pixel", encode(Image.new("RGB", (1, 1), (200, 10, 10)), "PNG"), OCTET, None),
        Case(
            "huge_10000x10000",
            encode(Image.new("L", (10000, 10000), 128), "PNG"),
            OCTET,
            413,
            "ImageTooLarge",
        ),
    ]


def write(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for case in image_cases():
        (out / f"{case.name}.bin").write_bytes(case.data)
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "bad_inputs"
    print(f"wrote {len(image_cases())} cases to {write(target)}")
