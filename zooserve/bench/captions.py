"""Captions/s of the batched beam search vs captioning the same images one at a time."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from zooserve.bench.timing import time_calls
from zooserve.models import registry
from zooserve.models.beam_search import BeamOptions, Captioner
from zooserve.runtime.bundle import Bundle
from zooserve.runtime.caption import captioner_from_bundle


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

    def row(self) -> dict[str, object]:
        return {
            "model": self.model,
            "batch": self.batch,
            "beam": self.beam,
            "batched captions/s": self.batched_per_s,
            "per-image captions/s": self.loop_per_s,
            "speedup": self.speedup,
        }


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
    batched = time_calls(lambda: captioner(images, opts), n, 0.0, warmup=1, min_calls=repeats)
    loop = time_calls(
        lambda: [captioner(images[i : i + 1], opts) for i in range(n)], n, 0.0, warmup=1, min_calls=repeats
    )
    return CaptionBenchResult(model, n, beam, batched.items_per_s, loop.items_per_s)


def run(
    bundle: Bundle | None = None,
    model: str = "tiny_show_attend_tell",
    batch: int = 8,
    beam: int = 3,
    repeats: int = 3,
) -> CaptionBenchResult:
    """Bench a loaded bundle, or (no bundle) the registry model's eager modules."""
    if bundle is not None:
        assert bundle.manifest.input is not None
        captioner, side, model = captioner_from_bundle(bundle), bundle.manifest.input.size, bundle.name
    else:
        spec = registry.get(model)
        assert spec.input is not None
        prepared = spec.prepare(spec)
        t = prepared.targets
        special = prepared.metadata["special_tokens"]
        captioner = Captioner(t["encoder"].module, t["step"].module, prepared.labels, special)
        side = spec.input.size
    torch.manual_seed(0)
    images = torch.randn(batch, 3, side, side)
    return bench_captions(captioner, images, beam=beam, repeats=repeats, model=model)
