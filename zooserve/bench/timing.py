"""The one timing loop every in-process benchmark uses (model-only, tune's floor, text padding,
captioning, precision)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Timing:
    calls: int
    median_s: float  # seconds per call
    items_per_s: float  # items per call x calls / time spent in calls


def time_calls(
    fn: Callable[[], Any], items: int, seconds: float, warmup: int = 2, min_calls: int = 3
) -> Timing:
    """``warmup`` untimed calls (allocator, first-call compilation), then calls until ``seconds``
    have passed and at least ``min_calls`` were made; autograd off throughout."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < min_calls or time.perf_counter() - start < seconds:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    times.sort()
    return Timing(len(times), times[len(times) // 2], items * len(times) / sum(times))
