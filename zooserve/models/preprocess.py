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
    mean = torch.tensor(spec.mean, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=dtype, device=x.device).view(1, -1, 1, 1)
    return x.sub_(mean).div_(std)
