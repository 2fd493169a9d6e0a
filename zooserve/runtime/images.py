"""Image decode for every image task, with a cost bounded by what the model needs.

1. The format is sniffed from the first bytes against an allowlist (JPEG, PNG, GIF, WebP, BMP,
   TIFF); only that format's Pillow plugin ever sees the bytes.
2. The declared size is read from the header alone and checked against the budgets before any
   pixel is decoded: ``max_pixels`` for what an image may declare, ``max_decoded_pixels`` for what
   may be decoded at full resolution (PNG, GIF, WebP, BMP, TIFF: formats without a reduced-size
   decode, whose cost is their pixel count). In ``exact`` mode JPEGs decode at full size, bounded
   by ``max_pixels`` alone: that mode's cost is the photo's, by choice.
3. One frame only (animated GIF/WebP, multi-page TIFF), decoded to uint8 CHW.

JPEGs in ``fast`` mode are decoded by libjpeg-turbo directly at the smallest DCT scale (1/2, 1/4,
1/8) whose shorter side still covers ``min_side`` (``FAST_MARGIN`` times the model's resize side),
through Pillow's ``draft``; ``exact`` mode decodes at full size with torchvision (the pixels torchvision's own
transforms see). Other formats have no reduced-size decode: in ``fast`` mode their pixels are
box-reduced right after decoding (``Image.reduce``) by the largest integer factor that keeps
``min_side``, which makes the model's resize nearly free. PNG goes through Pillow: torchvision
0.29's decode_png crashes the process (SIGSEGV) on some corrupt IDAT streams.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageStat
from torchvision.io import ImageReadMode, decode_jpeg

from zooserve.errors import EmptyBody, ImageTooLarge, InvalidImage, UnsupportedMediaType, client_text
from zooserve.manifest import ServingOptions
from zooserve.runtime.pipeline import Request
from zooserve.specs import Decode

# Pillow plugin name -> the signatures its files start with (offset 0; WebP also at 8)
SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "JPEG": (b"\xff\xd8\xff",),
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "GIF": (b"GIF87a", b"GIF89a"),
    "WEBP": (b"RIFF",),  # and b"WEBP" at offset 8
    "BMP": (b"BM",),
    "TIFF": (b"II*\x00", b"MM\x00*"),
}
SUPPORTED = "JPEG, PNG, GIF, WebP, BMP or TIFF"
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-www-form-urlencoded")

# torch.from_numpy warns on Pillow's read-only arrays; they are only ever read (resize makes new
# tensors). Set once: warnings.catch_warnings() swaps process-wide state, unsafe on decode threads.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)


# Fast mode keeps at least this many times the side the model resizes to; the model's own
# antialiased resize does the rest. A DCT-scaled pixel is the mean of its 2x2..8x8 block: a box
# filter on top of the resize's triangle, which blurs by up to 1 / (2 x margin^2) of the triangle's
# variance. Measured against an exact decode on 3-12 MP photos (docs/precision.md, fidelity gate:
# class probabilities within 0.02), largest probability change of a sharpened ResNet-50 / ResNet-18
# and the trained lenet5: margin 1: 0.053 / - / 0.042; 2: 0.019 / 0.022 / 0.042; 4: 0.004 / 0.010 /
# 0.006. A 12 MP photo for a 256 side then decodes at 1/2 (31 ms with the resize, 1 thread)
# instead of 1/8 (21 ms); exact: 53 ms. Photos under 4x the side decode exactly, bit-identical.
FAST_MARGIN = 4


@dataclass(frozen=True)
class DecodeLimits:
    channels: int  # 3 (RGB) or 1 (grey)
    max_pixels: int  # what an image may declare
    max_decoded_pixels: int  # what may be decoded at full resolution
    min_side: int | None = None  # fast decode: the shorter side kept (FAST_MARGIN x the model's); None: exact


@dataclass(frozen=True)
class Decoded:
    image: torch.Tensor  # uint8 (channels, H, W)
    declared_pixels: int  # width x height from the header (what batch budgets count)
    # (H, W) of the whole image when it was decoded smaller (fast mode): the model's resize then
    # gives the shape a full-size decode would get, so the crop lands on the same pixels
    full_size: tuple[int, int] | None = None


def limits_for(channels: int, opts: ServingOptions, cover: int) -> DecodeLimits:
    """A model's decode limits: ``cover`` is the shorter side its preprocessing resizes to; fast mode
    decodes to no less than ``FAST_MARGIN`` times that."""
    min_side = cover * FAST_MARGIN if opts.decode == Decode.FAST else None
    return DecodeLimits(channels, opts.max_pixels, opts.max_decoded_pixels, min_side)


def check_batch_pixels(declared: Sequence[int], budget: int) -> None:
    """A batch over the budget raises; run_batch then splits it (a single image is always let
    through here: its own limits were checked at decode)."""
    if len(declared) > 1 and sum(declared) > budget:
        total = sum(declared)
        raise ImageTooLarge(f"batch of {len(declared)} images declares {total} pixels; the limit is {budget}")


def warmup_image(limits: DecodeLimits, cover: int) -> torch.Tensor:
    """A photo as warm-up decodes it: photo-like 4:3 JPEGs a little over 2 x FAST_MARGIN and 1.5
    times the side the model resizes to (``cover``) go through ``decode_image_bytes``, so both JPEG
    paths (DCT-scaled at 1/2, full size) have run before the first request; the 1.5x one is
    returned for the stages that follow. Items made from it declare 0 pixels: warm-up is the
    model's fixed cost, not a request's."""
    rng = np.random.default_rng(0)
    image = torch.zeros(limits.channels, int(cover * 1.5), int(cover * 2), dtype=torch.uint8)
    for scale in (2 * FAST_MARGIN + 0.5, 1.5):
        side = int(cover * scale)
        noise = rng.integers(0, 256, (side // 8 + 1, side * 4 // 24 + 1, 3), dtype=np.uint8)
        photo = Image.fromarray(noise).resize((side * 4 // 3, side), Image.Resampling.BILINEAR)
        buf = io.BytesIO()
        photo.save(buf, "JPEG", quality=90)
        with contextlib.suppress(ImageTooLarge):  # a photo this model's limits refuse is not warmed
            image = decode_image_bytes(buf.getvalue(), limits).image
    return image


def image_bytes(request: Request) -> bytes:
    """The raw image from a request body (REST body, multipart field or gRPC input)."""
    body = request.body
    if body is None or (isinstance(body, (bytes, bytearray, str)) and len(body) == 0):
        raise EmptyBody("the request body is empty: send the image bytes (JPEG, PNG, ...)")
    if isinstance(body, (dict, list, str)) or request.content_type.startswith(_TEXT_TYPES):
        kind = request.content_type or type(body).__name__
        raise UnsupportedMediaType(f"expected image bytes, got {kind}: send the raw JPEG/PNG/... file")
    return bytes(body)


def sniff(data: bytes) -> str:
    """The Pillow format name of ``data`` from its signature, or InvalidImage."""
    for fmt, starts in SIGNATURES.items():
        if data.startswith(starts) and (fmt != "WEBP" or data[8:12] == b"WEBP"):
            return fmt
    raise InvalidImage(f"not an image this model reads ({len(data)} bytes): send {SUPPORTED}")


def probe(data: bytes, limits: DecodeLimits) -> tuple[str, int]:
    """(format, declared pixels) from the header alone, after the budget checks."""
    fmt = sniff(data)
    with _open(data, fmt) as im:
        width, height = im.size
    _check_budget(width, height, limits.max_pixels, "declares")
    return fmt, width * height


def decode_image_bytes(data: bytes, limits: DecodeLimits) -> Decoded:
    """The first frame as uint8 (channels, H, W); bad bytes raise InvalidImage, budgets ImageTooLarge."""
    fmt, declared = probe(data, limits)
    with _open(data, fmt) as im:
        reduction = jpeg_reduction(im.size, limits.min_side) if fmt == "JPEG" else 1
        if fmt == "JPEG" and reduction == 1 and limits.min_side and declared > limits.max_decoded_pixels:
            # too big to decode whole, too narrow for the margin (a panorama): the model's side alone
            reduction = jpeg_reduction(im.size, max(1, limits.min_side // FAST_MARGIN))
        if fmt == "JPEG" and reduction == 1:  # exact mode (its cost is the photo's), or too small to scale
            if limits.min_side is not None:
                _check_budget(*im.size, limits.max_decoded_pixels, "would decode to")
            return Decoded(_decode_jpeg_full(data, limits.channels), declared)
        width, height = im.size
        try:
            if reduction > 1:  # libjpeg-turbo decodes in the DCT domain at 1/reduction scale
                im.draft("RGB" if limits.channels == 3 else "L", (width // reduction, height // reduction))
            _check_budget(*im.size, limits.max_decoded_pixels, "would decode to")
            im.seek(0)  # first frame of an animation or of a multi-page TIFF
            image = _to_tensor(im, limits.channels, limits.min_side if fmt != "JPEG" else None)
            reduced = tuple(image.shape[1:]) != (height, width)
            return Decoded(image, declared, (height, width) if reduced else None)
        except (ImageTooLarge, InvalidImage):
            raise
        except Exception as e:  # noqa: BLE001 - Pillow raises many types for corrupt data
            raise InvalidImage(f"cannot decode {fmt} image: {client_text(e)}") from None


def jpeg_reduction(size: tuple[int, int], min_side: int | None) -> int:
    """The largest of libjpeg's scales 1/2, 1/4, 1/8 whose shorter side still covers ``min_side``
    (1: decode at full size)."""
    if min_side is None:
        return 1
    shorter = min(size)
    return next((r for r in (8, 4, 2) if shorter // r >= min_side), 1)


def _open(data: bytes, fmt: str) -> Image.Image:
    try:
        im = Image.open(io.BytesIO(data), formats=[fmt])
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"image declares too many pixels: {client_text(e)}") from None
    except Exception as e:  # noqa: BLE001 - Pillow raises many types for truncated headers
        raise InvalidImage(f"not a decodable {fmt} image ({len(data)} bytes): {client_text(e)}") from None
    return im


def _check_budget(width: int, height: int, budget: int, verb: str) -> None:
    if width < 1 or height < 1:
        raise InvalidImage(f"image {verb} an empty size {width}x{height}")
    if width * height > budget:
        raise ImageTooLarge(f"image {verb} {width}x{height} = {width * height} pixels; the limit is {budget}")


def _to_tensor(im: Image.Image, channels: int, min_side: int | None = None) -> torch.Tensor:
    """``min_side`` (fast mode): box-reduce by the largest integer factor that keeps the shorter
    side at least that long, as libjpeg's DCT scaling does for JPEG; the model's resize follows."""
    if im.mode.startswith("I"):  # 16/32-bit grey: Pillow clips on convert, so scale first
        im = im.convert("I").point(lambda v: v / 256)  # "I" first: point() refuses big-endian I;16B
    if channels == 1 and (im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info):
        im = _flatten_alpha(im)  # grey models read drawings; RGB models keep torchvision's pixels
    mode = "RGB" if channels == 3 else "L"
    if im.mode != mode:
        im = im.convert(mode)
    factor = min(im.size) // min_side if min_side else 1
    if factor >= 2:
        im = im.reduce(factor)
    array = np.asarray(im).reshape(im.height, im.width, channels)  # one copy out of Pillow
    return torch.from_numpy(array).permute(2, 0, 1)  # read-only memory, never written in place


def _flatten_alpha(im: Image.Image) -> Image.Image:
    """Transparent pixels onto plain paper that contrasts with the opaque ones: a drawing saved from
    a canvas (often black strokes on transparent black) keeps its strokes instead of vanishing."""
    im = im.convert("RGBA")
    alpha = im.getchannel("A")
    if alpha.getextrema()[0] == 255:
        return im.convert("RGB")
    opaque = alpha.point(lambda a: 255 if a >= 128 else 0)
    shade = ImageStat.Stat(im.convert("L"), opaque).mean[0] if opaque.getbbox() else 0.0
    paper = 255 if shade < 128 else 0
    return Image.alpha_composite(Image.new("RGBA", im.size, (paper, paper, paper, 255)), im).convert("RGB")


def _decode_jpeg_full(data: bytes, channels: int) -> torch.Tensor:
    """torchvision's decoder: the pixels torchvision's own transforms see."""
    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    try:
        return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
    except RuntimeError as e:
        raise InvalidImage(f"cannot decode JPEG image: {client_text(e)}") from None


def decode_jpegs_on_gpu(datas: Sequence[bytes], device: torch.device) -> list[torch.Tensor]:
    """nvJPEG: the whole batch's JPEGs in one ``decode_jpeg`` call, straight into GPU memory.
    A corrupt file fails the call; run_batch then splits the batch, which isolates the culprit."""
    buffers = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    try:
        return list(decode_jpeg(buffers, mode=ImageReadMode.RGB, device=device))
    except RuntimeError as e:
        raise InvalidImage(f"cannot decode JPEG image: {client_text(e)}") from None
