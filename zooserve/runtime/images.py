"""Image decode for every image task: header check (size budget, format) -> torchvision decoder
(Pillow for the formats torchvision cannot read safely) -> uint8 CHW. Preprocessing of decoded
images lives with the model's input spec: ``zooserve.models.preprocess``."""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms.v2 import functional as F

from zooserve.errors import EmptyBody, ImageTooLarge, InvalidImage, UnsupportedMediaType
from zooserve.runtime.pipeline import Request

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


def check_header(data: bytes, max_pixels: int) -> str:
    """The image format, after checking the declared size against the pixel budget."""
    fmt, (width, height) = _probe(data)
    if width * height > max_pixels:
        raise ImageTooLarge(f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")
    return fmt


def decode_jpegs_on_gpu(datas: Sequence[bytes], device: torch.device) -> list[torch.Tensor]:
    """nvJPEG: the whole batch's JPEGs in one ``decode_jpeg`` call, straight into GPU memory.
    A corrupt file fails the call; run_batch then retries one by one, which names the culprit."""
    buffers = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    try:
        return list(decode_jpeg(buffers, mode=ImageReadMode.RGB, device=device))
    except RuntimeError as e:
        raise InvalidImage(f"cannot decode JPEG image: {_first_line(e)}") from None


def decode_image_bytes(data: bytes, channels: int, max_pixels: int) -> torch.Tensor:
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
            transparent = im.mode in ("P", "L", "RGB") and "transparency" in im.info
            if transparent or im.mode in ("RGBA", "LA", "PA"):
                im = _flatten_alpha(im)
            im = im.convert("RGB" if channels == 3 else "L")
            arr = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
            return arr.view(im.height, im.width, channels).permute(2, 0, 1)
    except Exception as e:  # noqa: BLE001
        raise InvalidImage(f"cannot decode image: {_first_line(e)}") from None


def _flatten_alpha(im: Image.Image) -> Image.Image:
    """Transparent pixels onto plain paper that contrasts with the opaque ones: a drawing saved from
    a canvas (often black strokes on transparent black) keeps its strokes instead of vanishing."""
    from PIL import ImageStat

    im = im.convert("RGBA")
    alpha = im.getchannel("A")
    if alpha.getextrema()[0] == 255:
        return im.convert("RGB")
    opaque = alpha.point(lambda a: 255 if a >= 128 else 0)
    shade = ImageStat.Stat(im.convert("L"), opaque).mean[0] if opaque.getbbox() else 0.0
    paper = 255 if shade < 128 else 0
    return Image.alpha_composite(Image.new("RGBA", im.size, (paper, paper, paper, 255)), im).convert("RGB")


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
