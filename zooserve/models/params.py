"""Parameter counts for the registry table, computed on the meta device (no memory, no init cost)."""

from __future__ import annotations

import torch

from zooserve.models.vision import build_module
from zooserve.specs import ModelSpec, Task


def count_params(spec: ModelSpec) -> str:
    if spec.task != Task.CLASSIFY:
        return "-"  # text and captioning sizes depend on the checkpoint
    with torch.device("meta"):
        n = sum(p.numel() for p in build_module(spec).parameters())
    return f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"
