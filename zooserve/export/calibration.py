"""Image sets for reduced-precision builds: int8 calibration and the accuracy gate's evaluation.

Nothing is downloaded: ImageNet-class models use crops of scikit-learn's two bundled photos plus
generated images (smooth colour fields, stripes, checkerboards); LeNet-5 uses the digits split
(train part to calibrate) and evaluates on both its held-out sets (scikit-learn's held-out digits
and the "digits as sent" set). Calibration and evaluation never share images (different seeds /
splits). Everything goes through the model's own InputSpec.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from sklearn.datasets import load_sample_image
from torch.nn import functional as TF
from torchvision.io import ImageReadMode, decode_image, read_file

from zooserve.errors import ConfigError
from zooserve.models.digits import as_sent_set, digit_batch
from zooserve.models.lenet import AS_SENT_IMAGES, digits_split, sent_digits
from zooserve.models.preprocess import normalize, resize_batch
from zooserve.specs import ModelSpec

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_CALIBRATION = 256
DEFAULT_CALIBRATION = 64
EVALUATION = 200  # >= 99 % agreement then allows at most 2 disagreements


def _is_digits(spec: ModelSpec) -> bool:
    return spec.label_source == "digits"


def calibration_images(spec: ModelSpec, folder: Path | None = None) -> list[torch.Tensor]:
    """uint8 (C, H, W) images: the user's folder (``--calibration``) or the default set."""
    if folder is not None:
        return folder_images(spec, folder)
    if _is_digits(spec):
        x, _, _, _ = digits_split()
        return list(x[:MAX_CALIBRATION])
    return generated_images(DEFAULT_CALIBRATION, seed=1)


def folder_images(spec: ModelSpec, folder: Path) -> list[torch.Tensor]:
    if not folder.is_dir():
        raise ConfigError(f"calibration folder {folder} does not exist")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:MAX_CALIBRATION]
    assert spec.input is not None
    mode = ImageReadMode.RGB if spec.input.channels == 3 else ImageReadMode.GRAY
    images = []
    for p in files:
        try:  # the user's own files, at build time: torchvision's decoders, first frame
            img = decode_image(read_file(str(p)), mode=mode)
            images.append(img[0] if img.ndim == 4 else img)
        except (RuntimeError, ValueError) as e:  # one unreadable file is skipped, not fatal
            print(f"calibration: skipping {p.name}: {str(e).splitlines()[0][:120]}")
    if len(images) < 8:
        raise ConfigError(f"calibration folder {folder} has {len(images)} readable images; need at least 8")
    return images


def evaluation_set(spec: ModelSpec) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(normalised float batch, true labels or None) the gate compares fp32 and reduced models on."""
    assert spec.input is not None
    if _is_digits(spec):
        _, _, x, y = digits_split()
        sent, sent_labels = sent_digits(as_sent_set(AS_SENT_IMAGES))
        return to_batch(spec, [*x, *sent]), torch.cat([y, sent_labels])
    return to_batch(spec, generated_images(EVALUATION, seed=2)), None


def to_batch(
    spec: ModelSpec, images: list[torch.Tensor], side: tuple[int, int] | None = None
) -> torch.Tensor:
    """The serving preprocessing (resize + centre crop + normalise, or the digits' framing),
    optionally to another size (the dense target's example size)."""
    assert spec.input is not None
    if spec.input.ink_box is not None:
        x = digit_batch(images, spec.input)[0]
    else:
        if spec.input.channels == 3:
            images = [im.expand(3, -1, -1) if im.shape[0] == 1 else im[:3] for im in images]
        x = normalize(resize_batch(images, spec.input), spec.input)
    if side is not None and tuple(side) != tuple(x.shape[-2:]):
        x = TF.interpolate(x, size=tuple(side), mode="bilinear", align_corners=False)
    return x.contiguous()


def generated_images(count: int, seed: int) -> list[torch.Tensor]:
    """Half photo crops (scale, aspect, flip, brightness), half synthetic patterns, as uint8."""
    g = torch.Generator().manual_seed(seed)
    photos = _photos()
    out = []
    for i in range(count):
        kind = i % 4
        if kind < 2:
            out.append(_photo_crop(photos[int(torch.randint(len(photos), (1,), generator=g))], g))
        elif kind == 2:
            out.append(_smooth_field(g))
        else:
            out.append(_pattern(g))
    return out


def _photos() -> list[torch.Tensor]:
    return [
        torch.from_numpy(load_sample_image(n).copy()).permute(2, 0, 1).contiguous()
        for n in ("china.jpg", "flower.jpg")
    ]


def _rand(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=g))


def _photo_crop(img: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    _, h, w = img.shape
    area = _rand(g, 0.08, 1.0) * h * w
    aspect = math.exp(_rand(g, math.log(3 / 4), math.log(4 / 3)))
    ch, cw = min(h, int(math.sqrt(area / aspect))), min(w, int(math.sqrt(area * aspect)))
    top, left = int(_rand(g, 0, h - ch)), int(_rand(g, 0, w - cw))
    crop = img[:, top : top + ch, left : left + cw].float() * _rand(g, 0.7, 1.3)
    if _rand(g, 0, 1) < 0.5:
        crop = crop.flip(2)
    return crop.clamp(0, 255).to(torch.uint8)


def _smooth_field(g: torch.Generator, side: int = 256) -> torch.Tensor:
    cells = int(_rand(g, 2, 9))
    low = torch.rand(1, 3, cells, cells, generator=g) * 255
    return (
        TF.interpolate(low, size=(side, side), mode="bicubic", align_corners=False)[0]
        .clamp(0, 255)
        .to(torch.uint8)
    )


def _pattern(g: torch.Generator, side: int = 256) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(side).float(), torch.arange(side).float(), indexing="ij")
    angle, freq = _rand(g, 0, math.pi), _rand(g, 0.02, 0.3)
    wave = torch.sin((xx * math.cos(angle) + yy * math.sin(angle)) * freq)
    if _rand(g, 0, 1) < 0.5:  # checkerboard
        wave = wave * torch.sin((xx * math.sin(angle) - yy * math.cos(angle)) * freq)
    c1, c2 = torch.rand(3, 1, 1, generator=g) * 255, torch.rand(3, 1, 1, generator=g) * 255
    mix = (wave > 0).float().unsqueeze(0)
    return (c1 * mix + c2 * (1 - mix)).to(torch.uint8)
