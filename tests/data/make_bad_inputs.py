"""Generate the bad-input corpus (no hand-made binaries in git).

    python tests/data/make_bad_inputs.py [OUT_DIR]     # writes tests/data/bad_inputs/ by default

Each case: payload bytes, the content type to send, and the expected outcome on the task it was
written for (``image_cases``: image models, ``text_cases``: BERT): an HTTP status and error type,
or ``None`` when the input is valid and must get a prediction. ``expected(case, task, grpc)`` gives
the outcome of any case on any task (a text sent to an image model, an image sent to BERT) and over
gRPC, whose input map carries no content type (the handler then sees raw bytes).
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
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"
IMAGE_TASKS = ("classify", "caption")
TEXT_TASK = "classify-text"
MAX_TEXT_BYTES = 65536  # zooserve.runtime.text.DEFAULT_MAX_TEXT_BYTES


@dataclass(frozen=True)
class Case:
    name: str
    data: bytes
    content_type: str
    status: int | None  # None: valid input, expect 200
    error_type: str | None = None
    task: str = "image"  # "image" (image_cases) or "text" (text_cases)


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


def text_cases() -> list[Case]:
    """Inputs for BERT (``classify-text``): raw UTF-8 text or JSON ``{"text": ...}``."""
    ten_mb = b"lorem ipsum " * (10 * 1024 * 1024 // 12)
    return [
        Case("text_empty", b"", TEXT, 400, "EmptyBody", "text"),
        Case("text_whitespace", b" \n\t ", TEXT, 400, "InvalidText", "text"),
        Case(
            "text_non_utf8",
            "caf\u00e9 cr\u00e8me".encode("latin-1") + b"\xff\xfe",
            TEXT,
            400,
            "InvalidText",
            "text",
        ),
        Case("text_non_utf8_octet", b"\xc3\x28 \xa0\xa1 invalid", OCTET, 400, "InvalidText", "text"),
        Case("text_10mb", ten_mb, TEXT, 413, "PayloadTooLarge", "text"),
        Case("text_json_malformed", b'{"text": "unterminated', JSON, 400, "InvalidJSON", "text"),
        Case("text_json_without_text", b'{"sentence": "no text field"}', JSON, 400, "InvalidJSON", "text"),
        Case("text_json_text_not_string", b'{"text": 42}', JSON, 400, "InvalidJSON", "text"),
        Case("text_json_text_list", b'{"text": ["one", "two"]}', JSON, 400, "InvalidJSON", "text"),
        Case("text_json_array", b'["just", "a", "list"]', JSON, 400, "InvalidJSON", "text"),
        Case("text_json_lone_surrogate", b'{"text": "bad \\ud800 half"}', JSON, 400, "InvalidText", "text"),
        Case("text_json_bad_topk", b'{"text": "fine", "topk": 0}', JSON, 400, "InvalidParameter", "text"),
        # wrong content type: image bytes declared as an image (not text) are not UTF-8
        Case("text_png_content_type", encode(_photo(16, 16), "PNG"), "image/png", 400, "InvalidText", "text"),
        # valid inputs: answered with a prediction
        Case(
            "text_plain",
            "a calm and pleasant film \u2014 na\u00efve, caf\u00e9 \U0001f600".encode(),
            TEXT,
            None,
            task="text",
        ),
        Case("text_json", b'{"text": "a calm and pleasant film"}', JSON, None, task="text"),
        Case("text_nul_and_controls", b"tab\there\x00nul\x1bescape", TEXT, None, task="text"),
        Case("text_60kb_truncated", b"word " * (60 * 1024 // 5), TEXT, None, task="text"),
    ]


def all_cases() -> list[Case]:
    return image_cases() + text_cases()


def _as_text(case: Case, grpc: bool) -> tuple[int | None, str | None]:
    """An image case sent to BERT: the text pipeline's rules applied to its bytes."""
    data, ctype = case.data, "" if grpc else case.content_type
    if not data:
        return 400, "EmptyBody"
    parse_json = ctype.startswith(JSON)
    if not ctype.startswith(("text", JSON)) and len(data) > MAX_TEXT_BYTES:
        return 413, "PayloadTooLarge"  # raw bytes: size checked before decoding
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return 400, "InvalidText"
    if parse_json:
        import json

        try:
            body = json.loads(text)
        except ValueError:
            return 400, "InvalidJSON"
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str):
            return 400, "InvalidJSON"
    if len(text.encode("utf-8")) > MAX_TEXT_BYTES:
        return 413, "PayloadTooLarge"
    return (400, "InvalidText") if not text.strip() else (None, None)


def expected(case: Case, task: str, grpc: bool = False) -> tuple[int | None, str | None]:
    """(status, error type) for ``case`` on a model of ``task`` (None, None: a prediction)."""
    home = "text" if task == TEXT_TASK else "image"
    if case.task == home and not grpc:
        return case.status, case.error_type
    if home == "text":
        if case.task == "text":  # gRPC: no content type, so JSON is not parsed: the text is the JSON source
            return _as_text(Case(case.name, case.data, OCTET, None), grpc=True)
        return _as_text(case, grpc)
    # an image model: empty stays EmptyBody; a text/JSON content type is a 415 over REST; over gRPC
    # (no content type) and for octet-stream the bytes go to the image decoder
    if not case.data:
        return 400, "EmptyBody"
    if task == "classify" and not grpc and b'"topk": 0' in case.data and case.content_type == JSON:
        return 400, "InvalidParameter"  # options are checked before the body's type
    if case.content_type.startswith("image/"):
        return None, None  # an image sent to an image model is what it expects
    if case.task == "image" and case.content_type == OCTET:
        return case.status, case.error_type
    if not grpc and case.content_type.startswith(("text", JSON)):
        return 415, "UnsupportedMediaType"
    if case.task == "image" and case.status is None:
        return None, None  # a valid image is valid whatever it is called
    return 400, "InvalidImage"


def write(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for case in all_cases():
        (out / f"{case.name}.bin").write_bytes(case.data)
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent / "bad_inputs"
    print(f"wrote {len(all_cases())} cases to {write(target)}")
