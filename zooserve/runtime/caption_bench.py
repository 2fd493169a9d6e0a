"""Benchmark: captions/s of the batched beam search vs captioning the same images one at a time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from zooserve.runtime.caption import BeamOptions, Captioner


@dataclass
class CaptionBenchResult:
    model: str
    batch: int
    beam: int
    batched_per_s: float
    loop_per_s: float

    @property
    def speedup(self) -> float:
        return self.batched_per_s / self.loop_per_s

    def table(self) -> str:
        head = "| model | batch | beam | batched captions/s | per-image loop captions/s | speedup |\n|---|---|---|---|---|---|\n"
        return head + (
            f"| {self.model} | {self.batch} | {self.beam} | {self.batched_per_s:.1f} | "
            f"{self.loop_per_s:.1f} | {self.speedup:.2f}x |"
        )


def _rate(fn: Any, n_captions: int, repeats: int) -> float:
    fn()  # warm-up (allocator, AOTInductor first call)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n_captions / best


@torch.no_grad()
def bench_captions(
    captioner: Captioner,
    images: torch.Tensor,
    beam: int = 3,
    max_length: int = 50,
    repeats: int = 3,
    model: str = "",
) -> CaptionBenchResult:
    """``images``: a normalised batch (N, 3, S, S). Same model, same images, both ways."""
    opts = BeamOptions(beam_size=beam, max_length=max_length)
    n = images.shape[0]
    batched = _rate(lambda: captioner(images, opts), n, repeats)
    loop = _rate(lambda: [captioner(images[i : i + 1], opts) for i in range(n)], n, repeats)
    return CaptionBenchResult(model, n, beam, batched, loop)


def captioner_from_bundle(bundle: Any) -> Captioner:
    meta = bundle.meta.get("metadata", {})
    return Captioner(
        bundle.modules["encoder"], bundle.modules["step"], list(bundle.meta["labels"]), meta["special_tokens"]
    )


def run(
    bundle: Any | None = None,
    model: str = "tiny_show_attend_tell",
    batch: int = 8,
    beam: int = 3,
    repeats: int = 3,
) -> CaptionBenchResult:
    """Bench a loaded bundle, or (no bundle) the registry model's eager modules. Prints a table."""
    if bundle is not None:
        from zooserve.models.specs import InputSpec

        captioner, side, model = (
            captioner_from_bundle(bundle),
            InputSpec.from_json(bundle.meta["input"]).size,
            bundle.name,
        )
    else:
        from zooserve.models import registry

        spec = registry.get(model)
        prepared = spec.prepare(spec)
        ids = prepared.metadata["special_tokens"]
        t = prepared.targets
        captioner = Captioner(t["encoder"].module, t["step"].module, prepared.labels, ids)
        side = spec.input.size  # type: ignore[union-attr]
    torch.manual_seed(0)
    result = bench_captions(
        captioner, torch.randn(batch, 3, side, side), beam=beam, repeats=repeats, model=model
    )
    print(result.table())
    return result
