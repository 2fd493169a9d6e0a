"""Captioning served: decode and preprocess a batch of images, one batched beam search
(``zooserve.models.beam_search``) over the exported encoder/step modules, per-request options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from zooserve.models.beam_search import BeamOptions, Captioner, Hypothesis
from zooserve.models.preprocess import normalize, resize_batch
from zooserve.runtime import images
from zooserve.runtime.bundle import Bundle
from zooserve.runtime.options import flag_option, float_option, int_option
from zooserve.runtime.pipeline import Pipeline, Request

LIMITS: dict[str, tuple[int, int]] = {"beam_size": (1, 20), "max_length": (1, 200), "length_norm": (0, 2)}


@dataclass
class CaptionItem:
    image: torch.Tensor  # uint8 (3, H, W)
    pixels: int  # declared by the image's header: what the batch budget counts
    attention: bool
    opts: BeamOptions
    full_size: tuple[int, int] | None = None  # (H, W) when decoded smaller: see resize_batch


def captioner_from_bundle(bundle: Bundle) -> Captioner:
    special = bundle.manifest.metadata["special_tokens"]
    return Captioner(bundle.modules["encoder"], bundle.modules["step"], list(bundle.manifest.labels), special)


class CaptionPipeline(Pipeline):
    def __init__(self, bundle: Bundle) -> None:
        manifest, opts = bundle.manifest, bundle.options
        assert manifest.input is not None
        self.bundle = bundle
        self.model_name = bundle.name
        self.spec = manifest.input
        self.size = int(manifest.metadata["encoded_size"])
        self.captioner = captioner_from_bundle(bundle)
        self.defaults = BeamOptions(opts.beam_size, opts.max_length, opts.length_norm)
        self.cover = self.spec.resize or self.spec.size
        self.limits = images.limits_for(3, opts, self.cover)
        self.batch_pixels = opts.max_batch_pixels

    def decode(self, request: Request) -> CaptionItem:
        decoded = images.decode_image_bytes(images.image_bytes(request), self.limits)
        options = request_options(request, self.defaults)
        attention = flag_option(request, "attention")
        return CaptionItem(decoded.image, decoded.declared_pixels, attention, options, decoded.full_size)

    def example_item(self) -> CaptionItem:
        image = images.warmup_image(self.limits, self.cover)
        return CaptionItem(image, 0, False, self.defaults)

    def preprocess(self, items: list[CaptionItem]) -> tuple[torch.Tensor, list[BeamOptions]]:
        images.check_batch_pixels([it.pixels for it in items], self.batch_pixels)  # run_batch splits
        batch = resize_batch([it.image for it in items], self.spec, full_sizes=[it.full_size for it in items])
        return normalize(batch.to(self.bundle.device), self.spec), [it.opts for it in items]

    def forward(self, inputs: tuple[torch.Tensor, list[BeamOptions]]) -> list[Hypothesis]:
        return self.captioner(*inputs)

    def postprocess(self, outputs: list[Hypothesis], items: list[CaptionItem]) -> list[dict[str, Any]]:
        return [self.body(h, it.attention) for h, it in zip(outputs, items, strict=True)]

    def body(self, hyp: Hypothesis, attention: bool) -> dict[str, Any]:
        words, alphas = self.captioner.words(hyp)
        out: dict[str, Any] = {
            "model": self.model_name,
            "weights": self.bundle.manifest.weights.value,
            "caption": " ".join(words),
            "tokens": words,
            "score": round(hyp.score, 4),
        }
        if attention:
            maps = alphas.reshape(len(words), self.size, self.size).double()
            out["attention"] = maps.mul(1e4).round().div(1e4).tolist()
        return out


def request_options(request: Request, defaults: BeamOptions) -> BeamOptions:
    """Per-request overrides from headers (X-Beam-Size, X-Max-Length, X-Length-Norm) or JSON keys."""
    return BeamOptions(
        beam_size=int_option(request, "beam_size", defaults.beam_size, *LIMITS["beam_size"]),
        max_length=int_option(request, "max_length", defaults.max_length, *LIMITS["max_length"]),
        length_norm=float_option(request, "length_norm", defaults.length_norm, *LIMITS["length_norm"]),
    )
