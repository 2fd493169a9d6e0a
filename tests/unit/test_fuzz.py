"""Fuzzing the request entry points: nothing but a typed RequestError may escape decode/tokenize.

Bounded in the suite (ZOOSERVE_FUZZ_EXAMPLES, default 200 per test); run longer on demand:
    ZOOSERVE_FUZZ_EXAMPLES=20000 pytest tests/unit/test_fuzz.py
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image

from zooserve.errors import RequestError
from zooserve.runtime.bundle import load_bundle
from zooserve.runtime.images import DecodeLimits, decode_image_bytes, image_bytes
from zooserve.runtime.pipeline import Request, run_batch
from zooserve.runtime.tasks import make_pipeline

EXAMPLES = int(os.environ.get("ZOOSERVE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="ZOOSERVE_FUZZ_EXAMPLES" not in os.environ,  # reproducible in CI, exploring on demand
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
MAX_PIXELS = 1_000_000  # a mutated header can declare anything up to this: keeps each example fast
CLIENT_STATUSES = {200, 400, 413, 415}
# decode + preprocess + forward per example: fewer, smaller images
FUZZ_FORWARD = settings(FUZZ, max_examples=max(20, EXAMPLES // 2))
FORWARD_MAX_PIXELS = 250_000


def _seed_images() -> list[bytes]:
    """Small valid files of every format we accept, to mutate."""
    g = torch.Generator().manual_seed(0)
    arr = torch.randint(0, 256, (24, 32, 3), dtype=torch.uint8, generator=g).numpy()
    img = Image.fromarray(arr)
    out = []
    for fmt, im in [
        ("JPEG", img),
        ("PNG", img),
        ("PNG", img.convert("L")),
        ("GIF", img.convert("P")),
        ("BMP", img),
        ("TIFF", img),
        ("WEBP", img),
        ("JPEG", img.convert("CMYK")),
    ]:
        buf = io.BytesIO()
        im.save(buf, fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_images()


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    """A valid image with bit flips, byte overwrites, truncation, an insertion or a spliced tail."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 8))):
        i = draw(st.integers(0, len(data) - 1))
        if draw(st.booleans()):
            data[i] ^= 1 << draw(st.integers(0, 7))
        else:
            data[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.integers(0, 4)) == 0:
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=64))
    return bytes(data)


image_payloads = st.one_of(mutated_images(), st.binary(max_size=2048), st.sampled_from(SEEDS))
bodies = st.one_of(
    st.none(),
    st.binary(max_size=512),
    st.text(max_size=256),
    st.dictionaries(
        st.sampled_from(["text", "topk", "attention", "beam_size", "x"]),
        st.one_of(st.none(), st.integers(), st.text(max_size=64), st.lists(st.text(max_size=8))),
        max_size=4,
    ),
    st.lists(st.integers(), max_size=4),
)
content_types = st.sampled_from(
    [
        "",
        "application/octet-stream",
        "image/jpeg",
        "text/plain",
        "text/plain; charset=latin-1",
        "application/json",
        "application/json; charset=utf-8",
        "text/html",
        "multipart/form-data",
    ]
)
option_headers = st.dictionaries(
    st.sampled_from(["x-topk", "x-attention", "x-beam-size", "x-max-length", "x-length-norm"]),
    st.text(max_size=12),
    max_size=3,
)


# ---- a known crash: torchvision 0.29's decode_png segfaults on corrupt IDAT data ---------------
def png_with_bad_zlib_checksum() -> bytes:
    """A small PNG whose chunk CRCs are valid but whose zlib stream fails its Adler-32 check:
    libpng reports "IDAT: incorrect data check" and torchvision's decoder crashes the process."""
    png = bytearray(SEEDS[1])
    i = 8
    while i < len(png):
        (n,), kind = struct.unpack(">I", png[i : i + 4]), bytes(png[i + 4 : i + 8])
        if kind == b"IDAT":
            png[i + 8 + n - 1] ^= 0xFF  # last byte of the Adler-32
            png[i + 8 + n : i + 12 + n] = struct.pack(">I", zlib.crc32(png[i + 4 : i + 8 + n]) & 0xFFFFFFFF)
            return bytes(png)
        i += 12 + n
    raise AssertionError("no IDAT chunk")


def _decode_in_subprocess(data: bytes) -> subprocess.CompletedProcess:
    code = (
        "import sys\nfrom zooserve.errors import RequestError\nfrom zooserve.runtime.images import "
        "DecodeLimits, decode_image_bytes\ntry:\n    decode_image_bytes(sys.stdin.buffer.read(), "
        "DecodeLimits(3, 40_000_000, 40_000_000, None))\nexcept RequestError:\n    pass"
    )
    return subprocess.run([sys.executable, "-c", code], input=data, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def png_decode_crashes() -> bool:
    """Whether decode_image_bytes still hands corrupt PNGs to the crashing decoder (probed once)."""
    return _decode_in_subprocess(png_with_bad_zlib_checksum()).returncode != 0


def _crashing_png(data: bytes) -> bool:
    """A PNG whose pixel data PIL refuses: the inputs that reach the crash above."""
    if not data.startswith(b"\x89PNG"):
        return False
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception:  # noqa: BLE001 - any PIL failure
        return True
    return False


def _skip_known_crash(crashes: bool, data: Any) -> None:
    if crashes and isinstance(data, (bytes, bytearray)):
        assume(not _crashing_png(bytes(data)))


def test_corrupt_png_is_an_invalid_image_not_a_crash() -> None:
    result = _decode_in_subprocess(png_with_bad_zlib_checksum())
    assert result.returncode == 0, f"decoder crashed (exit {result.returncode}): {result.stderr[-300:]!r}"


def test_valid_images_decode_to_the_requested_channels() -> None:
    """GIF/WebP decoders ignore GRAY mode: 1-channel models (lenet5) must still get 1 channel."""
    for data in SEEDS:
        for channels in (1, 3):
            img = decode_image_bytes(data, DecodeLimits(channels, MAX_PIXELS, MAX_PIXELS, None)).image
            assert img.shape[0] == channels and img.dtype == torch.uint8


def _only_request_errors(call: Any) -> Any:
    try:
        return call()
    except RequestError as e:
        assert 400 <= e.status < 500 and str(e)
        return e


@pytest.fixture(scope="module")
def pipelines(build_cache) -> dict[str, Any]:
    out = {}
    for name in ("tiny_resnet", "tiny_bert", "tiny_show_attend_tell"):
        pipe = make_pipeline(load_bundle(build_cache(name, format="torchscript").bundle_dir, device="cpu"))
        if hasattr(pipe, "max_pixels"):
            pipe.max_pixels = FORWARD_MAX_PIXELS
        out[name] = pipe
    return out


@FUZZ
@given(data=image_payloads, channels=st.sampled_from([1, 3]))
def test_decode_image_bytes(png_decode_crashes: bool, data: bytes, channels: int) -> None:
    _skip_known_crash(png_decode_crashes, data)
    limits = DecodeLimits(channels, MAX_PIXELS, MAX_PIXELS, None)
    img = _only_request_errors(lambda: decode_image_bytes(data, limits).image)
    if isinstance(img, torch.Tensor):
        assert img.dtype == torch.uint8 and img.ndim == 3 and img.shape[0] == channels
        assert img.shape[1] * img.shape[2] <= MAX_PIXELS


@FUZZ
@given(body=st.one_of(bodies, image_payloads), ctype=content_types)
def test_image_bytes(body: Any, ctype: str) -> None:
    out = _only_request_errors(lambda: image_bytes(Request(body, content_type=ctype)))
    assert isinstance(out, (bytes, RequestError))


@FUZZ_FORWARD
@given(data=image_payloads, headers=option_headers)
def test_classify_batch_never_a_server_error(
    pipelines: dict[str, Any], png_decode_crashes: bool, data: bytes, headers: dict
) -> None:
    """decode -> preprocess -> forward: a bad image is a 4xx, never a 500 (InferenceFailed)."""
    _skip_known_crash(png_decode_crashes, data)
    good = Request(SEEDS[0])
    out = run_batch(pipelines["tiny_resnet"], [Request(data, headers=headers), good])
    assert out[0].status in CLIENT_STATUSES, out[0].body
    assert out[1].status == 200  # the batch-mate is unaffected


@FUZZ
@given(body=st.one_of(bodies, image_payloads), ctype=content_types, headers=option_headers)
def test_caption_decode(
    pipelines: dict[str, Any], png_decode_crashes: bool, body: Any, ctype: str, headers: dict
) -> None:
    _skip_known_crash(png_decode_crashes, body)
    pipe = pipelines["tiny_show_attend_tell"]
    _only_request_errors(lambda: pipe.decode(Request(body, headers=headers, content_type=ctype)))


@st.composite
def text_bodies(draw: st.DrawFn) -> tuple[Any, str]:
    kind = draw(st.integers(0, 4))
    if kind == 0:  # raw UTF-8 (or not) bytes
        return draw(st.one_of(st.binary(max_size=1024), st.text(max_size=512).map(str.encode))), draw(
            content_types
        )
    if kind == 1:  # JSON text, valid or cut
        doc = json.dumps(
            {
                "text": draw(st.text(max_size=256)),
                **draw(st.dictionaries(st.text(max_size=5), st.integers(), max_size=2)),
            }
        )
        return doc[: draw(st.integers(0, len(doc)))], "application/json"
    if kind == 2:  # lone surrogates, as a JSON "\ud800" escape decodes to
        return {
            "text": draw(st.text(max_size=32)) + chr(draw(st.integers(0xD800, 0xDFFF)))
        }, "application/json"
    return draw(bodies), draw(content_types)


@FUZZ_FORWARD
@given(req=text_bodies(), headers=option_headers)
def test_text_decode_and_tokenize(pipelines: dict[str, Any], req: tuple[Any, str], headers: dict) -> None:
    """decode (request_text) and the batched tokenizer + forward: only 4xx, and a batch-mate is served."""
    body, ctype = req
    pipe = pipelines["tiny_bert"]
    out = run_batch(pipe, [Request(body, headers=headers, content_type=ctype), Request("a fine sentence")])
    assert out[0].status in CLIENT_STATUSES, out[0].body
    assert out[1].status == 200
