"""Decode cost bounded by what the model needs (``runtime/images.py``, ``models/preprocess.py``):
the sniffed allowlist, header-only budget checks (before any pixel is decoded), the first frame
only, DCT-scaled JPEGs (and bit-identical torchvision pixels when no scaling applies), and the
aspect cut that makes a 1 x 100 000 strip cheap while leaving photos' pixels untouched."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg, encode_jpeg
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from zooserve.errors import ImageTooLarge, InvalidImage
from zooserve.manifest import ServingOptions
from zooserve.models.preprocess import MAX_ASPECT, _resized_shape, resize_batch
from zooserve.runtime.images import (
    FAST_MARGIN,
    SIGNATURES,
    DecodeLimits,
    check_batch_pixels,
    decode_image_bytes,
    jpeg_reduction,
    limits_for,
    probe,
    sniff,
)
from zooserve.specs import Decode, InputSpec

PROPS = settings(max_examples=100, deadline=None, derandomize=True)
ROOMY = DecodeLimits(channels=3, max_pixels=50_000_000, max_decoded_pixels=20_000_000)


def smooth(h: int, w: int, channels: int = 3) -> torch.Tensor:
    """A photo-like uint8 image (gradients and a few waves): JPEG-friendly and cheap to encode."""
    y = torch.linspace(0, 1, h).view(h, 1)
    x = torch.linspace(0, 1, w).view(1, w)
    planes = [
        (128 + 100 * torch.sin(6 * x + 3 * y) + 20 * torch.cos(17 * y)).clamp(0, 255),
        255 * x * (1 - y) + 0 * y,
        255 * (0.5 + 0.5 * torch.cos(9 * x * y)),
    ][:channels]
    return torch.stack([p.expand(h, w) for p in planes]).round().to(torch.uint8)


def jpeg(h: int, w: int, quality: int = 90) -> bytes:
    return bytes(encode_jpeg(smooth(h, w), quality=quality).numpy())


def pil_bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny valid-looking PNG whose IHDR declares width x height (its IDAT is far too short)."""
    data = bytearray(pil_bytes(Image.new("RGB", (4, 4), (10, 20, 30)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])) & 0xFFFFFFFF)
    return bytes(data)


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small baseline JPEG whose SOF0 declares width x height."""
    data = bytearray(jpeg(16, 16))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


# ---- sniffing ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "data, fmt",
    [
        (b"\xff\xd8\xff\xe0rest", "JPEG"),
        (b"\x89PNG\r\n\x1a\n....", "PNG"),
        (b"GIF87a...", "GIF"),
        (b"GIF89a...", "GIF"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WEBP"),
        (b"BM......", "BMP"),
        (b"II*\x00....", "TIFF"),
        (b"MM\x00*....", "TIFF"),
    ],
)
def test_sniff_names_the_one_plugin_allowed(data: bytes, fmt: str) -> None:
    assert sniff(data) == fmt


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",  # a WAV file is RIFF too
        b"\x00\x00\x01\x00",  # ICO: Pillow reads it, we do not
        b"%PDF-1.7",
        b"<svg xmlns=",
        b"P6\n4 4\n255\n",  # PPM
        b"\x89PNG\r\n",  # a cut signature
        b"\xff\xd8",
        b"8BPS",  # PSD
    ],
)
def test_sniff_refuses_everything_outside_the_allowlist(data: bytes) -> None:
    with pytest.raises(InvalidImage) as exc:
        sniff(data)
    assert exc.value.status == 400 and f"({len(data)} bytes)" in str(exc.value)


@PROPS
@given(data=st.binary(max_size=16))
def test_sniff_is_the_signature_table(data: bytes) -> None:
    try:
        fmt = sniff(data)
    except InvalidImage:
        assert not any(
            data.startswith(SIGNATURES[f]) and (f != "WEBP" or data[8:12] == b"WEBP") for f in SIGNATURES
        )
        return
    assert data.startswith(SIGNATURES[fmt])


def test_a_bmp_signature_on_text_is_an_invalid_image() -> None:
    with pytest.raises(InvalidImage):
        decode_image_bytes(b"BMW drivers say hello", ROOMY)


# ---- header-only budgets -------------------------------------------------------------------------
def test_probe_reads_the_header_only() -> None:
    data = png_declaring(300, 200)  # its pixel data is missing: only a decode would notice
    assert probe(data, ROOMY) == ("PNG", 60_000)
    with pytest.raises(InvalidImage):
        decode_image_bytes(data, ROOMY)


@pytest.mark.parametrize(
    "data",
    [
        png_declaring(10_000, 5_000),  # 50 M: over our max_pixels, under Pillow's bomb limit
        png_declaring(30_000, 30_000),  # 900 M: Pillow's own DecompressionBombError
        png_declaring(2**31 - 1, 2**31 - 1),
        jpeg_declaring(65_535, 65_535),
    ],
)
def test_a_declared_bomb_is_refused_from_its_header_at_once(data: bytes) -> None:
    limits = DecodeLimits(channels=3, max_pixels=40_000_000, max_decoded_pixels=16_000_000, min_side=224)
    t0 = time.perf_counter()
    for call in (probe, decode_image_bytes):
        with pytest.raises(ImageTooLarge) as exc:
            call(data, limits)
        assert exc.value.status == 413 and exc.value.grpc_code == "RESOURCE_EXHAUSTED"
    assert time.perf_counter() - t0 < 2.0  # header work only: a decode would take far longer or fail


def test_a_gif_declaring_a_huge_screen_is_too_large() -> None:
    data = bytearray(pil_bytes(Image.new("P", (4, 4)), "GIF"))
    data[6:10] = struct.pack("<HH", 65_535, 65_535)
    with pytest.raises(ImageTooLarge):
        probe(bytes(data), ROOMY)


def test_an_empty_declared_size_is_an_invalid_image() -> None:
    with pytest.raises(InvalidImage):
        probe(jpeg_declaring(0, 16), ROOMY)


def test_full_size_decodes_are_held_to_max_decoded_pixels_before_decoding() -> None:
    limits = DecodeLimits(channels=3, max_pixels=10_000_000, max_decoded_pixels=1_000_000, min_side=224)
    with pytest.raises(ImageTooLarge, match="would decode to 2000x1500"):
        decode_image_bytes(png_declaring(2000, 1500), limits)  # PNG: no reduced decode exists


def test_a_big_jpeg_decodes_at_the_reduced_scale_within_the_decoded_budget() -> None:
    data = jpeg(1500, 2000)
    fast = DecodeLimits(channels=3, max_pixels=10_000_000, max_decoded_pixels=1_000_000, min_side=224)
    got = decode_image_bytes(data, fast)
    assert got.declared_pixels == 3_000_000  # what batch budgets count: the header's size
    assert tuple(got.image.shape) == (3, 375, 500)  # 1/4: 1500/8 = 187 would not cover 224
    # a JPEG too narrow for the margin but over the decoded budget is scaled to cover the model's
    # own side (224 // FAST_MARGIN here): 440 // 4 = 110 >= 56
    assert tuple(decode_image_bytes(jpeg(440, 2500), fast).image.shape) == (3, 110, 625)
    # one too narrow to scale at all is decoded at full size, so it is held to max_decoded_pixels
    with pytest.raises(ImageTooLarge, match="would decode to 12000x100"):
        decode_image_bytes(jpeg(100, 12000), fast)  # 100 // 2 = 50 would not cover 56


def test_a_panorama_over_the_decoded_budget_still_decodes_at_the_models_side() -> None:
    """Fast mode keeps FAST_MARGIN x the model's side where it can; a 7.5 MP panorama whose short
    side cannot keep that margin at any scale is not refused but scaled to cover the side itself."""
    opts = ServingOptions(max_decoded_pixels=5_000_000)
    limits = limits_for(3, opts, 256)
    got = decode_image_bytes(jpeg(1500, 5000), limits).image
    assert tuple(got.shape) == (3, 375, 1250)  # 1/4: 375 >= 256, while 1500 < 4 x 256 x 2
    small = decode_image_bytes(jpeg(1500, 2000), limits).image  # 3 MP, within budget: exact decode
    assert tuple(small.shape) == (3, 1500, 2000)


def test_exact_mode_jpegs_are_bounded_by_max_pixels_alone() -> None:
    """By choice (images.py docstring): exact mode's cost is the photo's."""
    data = jpeg(1500, 2000)
    exact = DecodeLimits(channels=3, max_pixels=3_000_000, max_decoded_pixels=1_000_000, min_side=None)
    assert tuple(decode_image_bytes(data, exact).image.shape) == (3, 1500, 2000)
    with pytest.raises(ImageTooLarge, match="declares 2000x1500"):
        decode_image_bytes(data, DecodeLimits(3, 2_999_999, 10**9, None))


# ---- JPEG scales ---------------------------------------------------------------------------------
@PROPS
@given(w=st.integers(1, 20_000), h=st.integers(1, 20_000), min_side=st.none() | st.integers(1, 2_000))
def test_jpeg_reduction_is_the_largest_scale_that_still_covers(w: int, h: int, min_side: int | None) -> None:
    r = jpeg_reduction((w, h), min_side)
    assert r in (1, 2, 4, 8)
    if min_side is None:
        assert r == 1
        return
    if r > 1:
        assert min(w, h) // r >= min_side
    if r < 8:
        assert min(w, h) // (2 * r) < min_side  # the next scale down would not cover


@pytest.mark.parametrize(
    "h, w, min_side, shape",
    [
        (768, 1024, 73, (96, 128)),  # 1/8
        (768, 1024, 100, (192, 256)),  # 1/4
        (768, 1024, 300, (384, 512)),  # 1/2
        (1001, 803, 100, (126, 101)),  # odd sizes round up, and the shorter side still covers
        (300, 4000, 37, (38, 500)),
    ],
)
def test_fast_jpeg_decodes_at_the_dct_scale(h: int, w: int, min_side: int, shape: tuple[int, int]) -> None:
    data = jpeg(h, w)
    got = decode_image_bytes(data, DecodeLimits(3, 50_000_000, 20_000_000, min_side))
    assert tuple(got.image.shape) == (3, *shape) and min(shape) >= min_side
    assert got.declared_pixels == h * w and got.image.dtype == torch.uint8
    # the pixels are the image's, at that scale: close to an area-averaged full decode
    full = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8)).float()
    ref = F.resize(full, list(shape), antialias=True)
    assert (got.image.float() - ref).abs().mean() < 4.0


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("min_side", [None, 73, 400])  # 400 > 768 // 2: no scale applies either
def test_unscaled_jpegs_are_torchvisions_pixels_bit_for_bit(channels: int, min_side: int | None) -> None:
    data = jpeg(768, 640, quality=85)
    got = decode_image_bytes(data, DecodeLimits(channels, 50_000_000, 20_000_000, min_side))
    if min_side == 73:
        assert got.image.shape[1:] == (96, 80)  # scaled: checked above
        return
    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    assert torch.equal(
        got.image, decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: pil_bytes(
            Image.fromarray(smooth(600, 800).permute(1, 2, 0).numpy()), "JPEG", progressive=True
        ),
        lambda: pil_bytes(Image.fromarray(smooth(600, 800)[0].numpy()), "JPEG"),  # greyscale source
        lambda: pil_bytes(Image.fromarray(smooth(600, 800).permute(1, 2, 0).numpy()).convert("CMYK"), "JPEG"),
    ],
    ids=["progressive", "grey", "cmyk"],
)
@pytest.mark.parametrize("channels", [3, 1])
def test_scaled_decode_of_other_jpeg_kinds(make, channels: int) -> None:
    data = make()
    got = decode_image_bytes(data, DecodeLimits(channels, 50_000_000, 20_000_000, 73))
    assert tuple(got.image.shape) == (channels, 75, 100)  # 1/8
    with Image.open(io.BytesIO(data)) as im:
        ref = torch.from_numpy(np.asarray(im.convert("RGB" if channels == 3 else "L"), dtype=np.uint8).copy())
    ref = ref.permute(2, 0, 1) if channels == 3 else ref[None]
    assert (got.image.float() - F.resize(ref.float(), [75, 100], antialias=True)).abs().mean() < 6.0


def test_limits_follow_the_serving_options() -> None:
    opts = ServingOptions(max_pixels=123, max_decoded_pixels=45)
    assert limits_for(3, opts, 256) == DecodeLimits(3, 123, 45, 256 * FAST_MARGIN)
    exact = ServingOptions(decode=Decode.EXACT)
    assert limits_for(1, exact, 256) == DecodeLimits(1, exact.max_pixels, exact.max_decoded_pixels, None)


# ---- first frame only ----------------------------------------------------------------------------
COLOURS = [(250, 0, 0), (0, 250, 0), (0, 0, 250)]


@pytest.mark.parametrize(
    "fmt, kw",
    [("GIF", {"duration": 50, "loop": 0}), ("WEBP", {"lossless": True, "duration": 50}), ("TIFF", {})],
)
def test_only_the_first_frame_is_decoded(fmt: str, kw: dict) -> None:
    frames = [Image.new("RGB", (40, 30), c) for c in COLOURS]
    data = pil_bytes(frames[0], fmt, save_all=True, append_images=frames[1:], **kw)
    with Image.open(io.BytesIO(data)) as im:
        assert getattr(im, "n_frames", 1) == 3  # the file really is animated / multi-page
    got = decode_image_bytes(data, ROOMY).image
    assert tuple(got.shape) == (3, 30, 40)
    mean = got.float().mean(dim=(1, 2))
    assert mean[0] > 200 and mean[1] < 30 and mean[2] < 30, mean


# ---- batch budgets -------------------------------------------------------------------------------
def test_check_batch_pixels() -> None:
    check_batch_pixels([10**12], 1)  # a single image is always let through: its own limits applied
    check_batch_pixels([], 0)
    check_batch_pixels([50, 50], 100)
    with pytest.raises(ImageTooLarge) as exc:
        check_batch_pixels([50, 51], 100)
    assert exc.value.status == 413 and "batch of 2 images declares 101 pixels" in str(exc.value)


# ---- 16-bit greyscale ----------------------------------------------------------------------------
def _grey16(mode: str) -> Image.Image:
    values = (np.arange(48 * 64).reshape(48, 64) * 20).astype(">u2" if mode.endswith("B") else "<u2")
    return Image.frombytes(mode, (64, 48), values.tobytes())


def test_little_endian_16_bit_grey_is_scaled_to_8_bits() -> None:
    got = decode_image_bytes(pil_bytes(_grey16("I;16"), "TIFF"), ROOMY).image
    expected = torch.from_numpy((np.arange(48 * 64).reshape(48, 64) * 20 // 256).astype(np.uint8))
    assert (got[0].int() - expected.int()).abs().max() <= 1


def test_big_endian_16_bit_grey_tiff_decodes() -> None:
    data = pil_bytes(_grey16("I;16B"), "TIFF")
    assert data.startswith(b"MM\x00*")
    got = decode_image_bytes(data, ROOMY).image
    assert tuple(got.shape) == (3, 48, 64)


# ---- the aspect cut in preprocessing -------------------------------------------------------------
SPEC = InputSpec(size=32, resize=40)
REFERENCE = v2.Compose([v2.Resize(SPEC.resize, antialias=True), v2.CenterCrop(SPEC.size)])


@st.composite
def photo_shapes(draw: st.DrawFn) -> tuple[int, int]:
    short = draw(st.integers(4, 120))
    long = draw(st.integers(short, short * MAX_ASPECT))
    return (short, long) if draw(st.booleans()) else (long, short)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(shape=photo_shapes(), seed=st.integers(0, 2**16))
def test_photos_within_4_to_1_are_exactly_torchvisions_resize_and_crop(
    shape: tuple[int, int], seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    img = torch.randint(0, 256, (3, *shape), dtype=torch.uint8, generator=g)
    got = resize_batch([img, img.flip(-1)], SPEC)
    assert torch.equal(got[0], REFERENCE(img)) and torch.equal(got[1], REFERENCE(img.flip(-1)))


@pytest.mark.parametrize("shape", [(1, 100_000), (100_000, 1), (3, 60_000)])
def test_an_extreme_strip_costs_what_its_4_to_1_centre_costs(shape: tuple[int, int]) -> None:
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 256, (3, *shape), dtype=torch.uint8, generator=g)
    t0 = time.perf_counter()
    got = resize_batch([img], InputSpec(size=224, resize=256))
    assert time.perf_counter() - t0 < 2.0  # the full-strip resize is 256 x 25 600 000 pixels
    h, w = shape
    short = min(h, w)
    if w > h:
        left = (w - MAX_ASPECT * short) // 2
        centre = img[:, :, left : left + MAX_ASPECT * short]
    else:
        top = (h - MAX_ASPECT * short) // 2
        centre = img[:, top : top + MAX_ASPECT * short, :]
    ref = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224)])(centre)
    assert got.shape == (1, 3, 224, 224) and torch.equal(got[0], ref)


def test_a_moderately_long_panorama_stays_close_to_the_uncut_result() -> None:
    img = smooth(60, 420)  # 7:1
    got = resize_batch([img], SPEC)[0].float()
    assert (got - REFERENCE(img).float()).abs().mean() < 3.0


def test_without_a_resize_side_images_are_stretched_uncut() -> None:
    img = smooth(2, 300)
    spec = InputSpec(size=16, resize=None)
    assert torch.equal(resize_batch([img], spec)[0], F.resize(img[None], [16, 16], antialias=True)[0])


def _grouped_resize(images, spec, crop=None, resize=None):
    """resize_batch before issue 16: same-shaped images stacked (a planar NCHW copy) and resized in
    one call. The per-image version must give the same pixels."""
    from zooserve.models.preprocess import _cut_to_aspect

    crop, resize = crop or spec.size, resize or spec.resize
    if resize is not None:
        images = [_cut_to_aspect(img, MAX_ASPECT) for img in images]
    out, groups = [None] * len(images), {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape), []).append(i)
    for shape, idx in groups.items():
        stack = torch.stack([images[i] for i in idx])
        if resize is None:
            stack = F.resize(stack, [crop, crop], antialias=True)
        else:
            if min(shape[1:]) != resize:
                stack = F.resize(stack, resize, antialias=True)
            stack = F.center_crop(stack, [crop, crop])
        for j, i in enumerate(idx):
            out[i] = stack[j]
    return torch.stack(out)


@pytest.mark.parametrize(
    "crop, resize, spec",
    [(None, None, SPEC), (48, 48, SPEC), (None, None, InputSpec(size=24, resize=None))],
    ids=["centre", "dense-scale", "stretch"],
)
def test_per_image_resize_equals_the_grouped_batch_resize(crop, resize, spec: InputSpec) -> None:
    """Mixed shapes, repeated shapes, both memory layouts the decoders hand over (torchvision's and
    Pillow's CHW views of HWC memory, and plain CHW), a panorama beyond 4:1 and an image already at
    the resize side: torch.equal with the previous grouped algorithm."""
    g = torch.Generator().manual_seed(3)

    def hwc_view(h: int, w: int) -> torch.Tensor:
        return torch.randint(0, 256, (h, w, 3), dtype=torch.uint8, generator=g).permute(2, 0, 1)

    def chw(h: int, w: int) -> torch.Tensor:
        return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)

    images = [hwc_view(90, 120), chw(90, 120), hwc_view(90, 120), chw(40, 61), hwc_view(30, 200)]
    images += [
        chw(120, 90),
        hwc_view(40, 40),
        decode_jpeg(torch.frombuffer(bytearray(jpeg(90, 120)), dtype=torch.uint8)),
    ]
    assert not images[0].is_contiguous() and images[1].is_contiguous()
    got = resize_batch(images, spec, crop=crop, resize=resize)
    assert torch.equal(got, _grouped_resize(images, spec, crop=crop, resize=resize))


def test_fast_mode_box_reduces_other_formats_to_what_the_model_needs() -> None:
    """PNG has no reduced-size decode: fast mode box-reduces after decoding by the largest factor
    that still covers the model's side (1500 // 224 = 6); exact mode and small images keep every
    pixel (bit-identical)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (1500, 2000, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    fast = DecodeLimits(channels=3, max_pixels=10_000_000, max_decoded_pixels=8_000_000, min_side=224)
    reduced = decode_image_bytes(buf.getvalue(), fast)
    # Pillow keeps the partial last block: ceil(2000 / 6) = 334 columns
    assert tuple(reduced.image.shape) == (3, 250, 334) and reduced.declared_pixels == 3_000_000
    box = pixels[:, :1998].reshape(250, 6, 333, 6, 3).mean(axis=(1, 3))
    got = reduced.image.permute(1, 2, 0).numpy().astype(float)[:, :333]
    assert np.abs(got - box).max() <= 1
    exact = DecodeLimits(3, 10_000_000, 8_000_000, None)
    assert np.array_equal(decode_image_bytes(buf.getvalue(), exact).image.permute(1, 2, 0).numpy(), pixels)
    small = io.BytesIO()
    Image.fromarray(pixels[:400, :300]).save(small, "PNG")  # 300 // 224 = 1: nothing to reduce
    got = decode_image_bytes(small.getvalue(), fast).image.permute(1, 2, 0).numpy()
    assert np.array_equal(got, pixels[:400, :300])


@pytest.mark.parametrize("h, w", [(2725, 4078), (1001, 803), (3024, 4032), (767, 1023)])
def test_a_reduced_decode_is_resized_to_the_full_images_shape(h: int, w: int) -> None:
    """The reduced decode remembers the full (H, W), and the resize gives the shape torchvision's
    Resize gives the full image: a long side rounded from the reduced size can be one pixel short
    (2725 x 4078 at 1/2 for side 256: 382 wide instead of 383), which moves the centre crop by half
    a pixel."""
    side = 64
    data = jpeg(h, w)
    fast = decode_image_bytes(data, DecodeLimits(3, 50_000_000, 20_000_000, side))
    exact = decode_image_bytes(data, DecodeLimits(3, 50_000_000, 20_000_000, None))
    assert fast.full_size == (h, w) and exact.full_size is None and fast.image.shape[1:] != (h, w)
    assert _resized_shape(fast.full_size, side) == F.resize(exact.image, side, antialias=True).shape[1:]
    spec = InputSpec(size=side, resize=side)
    got = resize_batch([fast.image], spec, full_sizes=[fast.full_size])
    ref = resize_batch([exact.image], spec)
    assert got.shape == ref.shape and (got.float() - ref.float()).abs().mean() < 3.0


def test_the_long_side_rounding_the_full_size_avoids() -> None:
    assert _resized_shape((2725, 4078), 256) == (256, 383)  # torchvision on the full photo
    assert _resized_shape((1363, 2039), 256) == (256, 382)  # the same photo decoded at 1/2
    assert _resized_shape((4078, 2725), 256) == (383, 256)
