"""Image preprocessing driven by a model's InputSpec, over whole batches: images with the same
shape are resized together, then one crop, one dtype conversion and one normalisation for the
batch. Serving, calibration, gates, tests and benchmarks all call these, so every path feeds the
network the same pixels. Digit models (``InputSpec.ink_box``) are framed by their ink instead:
``zooserve.models.digits``."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import torch
from torchvision.transforms.v2 import functional as F

from zooserve.specs import InputSpec

MAX_ASPECT = 4  # resize-then-crop: the long side is first cut to 4x the short side (see below)


def resize_batch(
    images: Sequence[torch.Tensor], spec: InputSpec, crop: int | None = None, resize: int | None = None
) -> torch.Tensor:
    """uint8 (N, C, crop, crop): torchvision's Resize(resize) + CenterCrop(crop), or a stretch to
    crop x crop when there is no resize side. Defaults come from the spec; same-shaped images are
    resized in one call.

    The centre crop never reads beyond the middle of the long side, so an image longer than
    ``MAX_ASPECT`` times its short side is cut to that first: a 1 x 100 000 strip costs what a
    4:1 panorama costs instead of a 256 x 25 600 000 intermediate (pixels of photos within 4:1
    are untouched)."""
    crop = crop or spec.size
    resize = resize or spec.resize
    if resize is not None:
        images = [_cut_to_aspect(img, MAX_ASPECT) for img in images]
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


def _cut_to_aspect(img: torch.Tensor, aspect: int) -> torch.Tensor:
    """The centre of ``img`` with its long side at most ``aspect`` times the short side (a view)."""
    h, w = img.shape[-2:]
    if w > aspect * h:
        left = (w - aspect * h) // 2
        return img[..., :, left : left + aspect * h]
    if h > aspect * w:
        top = (h - aspect * w) // 2
        return img[..., top : top + aspect * w, :]
    return img


def normalize(batch: torch.Tensor, spec: InputSpec, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (N, C, H, W) -> normalised float, in one pass over the batch."""
    x = batch.to(dtype, memory_format=torch.contiguous_format).div_(255.0)
    mean = torch.tensor(spec.mean, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std)
