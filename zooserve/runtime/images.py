"""Image decode and batched preprocessing, shared by every image task.

decode: header check (size budget, format) -> torchvision decoder (PIL only for formats torchvision
cannot read) -> uint8 CHW. preprocess: images with the same shape are resized together, then one
crop, one dtype conversion and one normalisation for the whole batch.
"""

from __future__ import annotations

import io
import warnings
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as F

from zooserve.errors import EmptyBody, ImageTooLarge, InvalidImage, UnsupportedMediaType
from zooserve.models.specs import InputSpec
from zooserve.runtime.pipeline import Request

DEFAULT_MAX_PIXELS = 40_000_000  # 8K photos pass; a 30000x30000 "bomb" does not
# PNG goes through Pillow: torchvision 0.29's decode_png crashes the process (SIGSEGV) on some
# corrupt IDAT streams, which would take down every request of the worker's batch.
TORCHVISION_FORMATS = {"JPEG", "GIF", "WEBP"}
PIL_FORMATS = {"PNG", "BMP", "TIFF", "PPM", "ICO", "TGA"}
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/x-www-form-urlencoded")


def image_bytes(request: Request) -> bytes:
    """The raw image from a request body (REST body, multipart field or gRPC input)."""
    body = request.body
    if body is None or (isinstance(body, (bytes, bytearray, str)) and len(body) == 0):
        raise EmptyBody("the request body is empty: send the image bytes (JPEG, PNG, ...)")
    if isinstance(body, (dict, list, str)) or request.content_type.startswith(_TEXT_TYPES):
        kind = request.content_type or type(body).__name__
        raise UnsupportedMediaType(f"expected image bytes, got {kind}: send the raw JPEG/PNG/... file")
    return bytes(body)


def check_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> str:
    """The image format, after checking the declared size against the pixel budget."""
    fmt, (width, height) = _probe(data)
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    return fmt


def decode_jpegs_on_gpu(datas: Sequence[bytes], device: torch.device) -> list[torch.Tensor]:
    """nvJPEG: the whole batch's JPEGs in one ``decode_jpeg`` call, straight into GPU memory.
    A corrupt file fails the call; run_batch then retries one by one, which names the culprit."""
    from torchvision.io import decode_jpeg

    buffers = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    try:
        return list(decode_jpeg(buffers, mode=ImageReadMode.RGB, device=device))
    except RuntimeError as e:
        raise InvalidImage(f"cannot decode JPEG image: {_first_line(e)}") from None


def decode_image_bytes(data: bytes, channels: int = 3, max_pixels: int = DEFAULT_MAX_PIXELS) -> torch.Tensor:
    """uint8 tensor (channels, H, W). Bad bytes raise InvalidImage/UnsupportedMediaType/ImageTooLarge."""
    fmt = check_header(data, max_pixels)
    mode = ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY
    if fmt in TORCHVISION_FORMATS:
        try:
            img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
        except RuntimeError as e:
            raise InvalidImage(f"cannot decode {fmt} image: {_first_line(e)}") from None
        if img.ndim == 4:  # animated GIF: first frame
            img = img[0]
        if img.shape[0] != channels:  # decode_gif/decode_webp ignore GRAY mode (return RGB)
            img = F.rgb_to_grayscale(img[:3])
        return img
    return _decode_with_pil(data, channels)


def _probe(data: bytes) -> tuple[str, tuple[int, int]]:
    """Format and declared size from the header alone (cheap; no pixel is decoded)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt, size = (im.format or "").upper(), im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageTooLarge(f"image declares too many pixels: {_first_line(e)}") from None
    except Image.UnidentifiedImageError:
        raise InvalidImage(f"not a decodable image ({len(data)} bytes): unrecognised format") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types for truncated headers
        raise InvalidImage(f"not a decodable image ({len(data)} bytes): {_first_line(e)}") from None
    if fmt not in TORCHVISION_FORMATS | PIL_FORMATS:
        raise UnsupportedMediaType(f"image format {fmt or 'unknown'} is not supported")
    return fmt, size


def _decode_with_pil(data: bytes, channels: int) -> torch.Tensor:
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.mode.startswith("I"):  # 16/32-bit grey: Pillow clips on convert, so scale first
                im = im.point(lambda v: v / 256)
            im = im.convert("RGB" if channels == 3 else "L")
            arr = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            return arr.view(im.height, im.width, channels).permute(2, 0, 1)
    except Exception as e:  # noqa: BLE001
        raise InvalidImage(f"cannot decode image: {_first_line(e)}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def resize_batch(
    images: Sequence[torch.Tensor], spec: InputSpec, crop: int | None = None, resize: int | None = None
) -> torch.Tensor:
    """uint8 (N, C, crop, crop): torchvision's Resize(resize) + CenterCrop(crop), or a stretch to
    crop x crop when there is no resize side. Defaults come from the spec; same-shaped images are
    resized in one call."""
    crop = crop or spec.size
    resize = resize or spec.resize
    out: list[Any] = [None] * len(images)
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, img in enumerate(images):
        groups[tuple(img.shape)].append(i)
    for shape, idx in groups.items():
        stack = images[idx[0]].unsqueeze(0) if len(idx) == 1 else torch.stack([images[i] for i in idx])
        if resize is None:
            stack = F.resize(stack, [crop, crop], antialias=True)
        else:
            if min(shape[1:]) != resize:
                stack = F.resize(stack, resize, antialias=True)
            stack = F.center_crop(stack, [crop, crop])
        for j, i in enumerate(idx):
            out[i] = stack[j]
    return torch.stack(out)


def normalize(batch: torch.Tensor, spec: InputSpec, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (N, C, H, W) -> normalised float, in one pass over the batch."""
    x = batch.to(dtype, memory_format=torch.contiguous_format).div_(255.0)
    if spec.invert_light_background:
        # bright border means dark ink on light paper: invert those images to the training polarity
        border = torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], dim=2).mean(dim=(1, 2))
        light = (border > 0.5).view(-1, 1, 1, 1)
        x = torch.where(light, 1.0 - x, x)
    mean = torch.tensor(spec.mean, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std)
