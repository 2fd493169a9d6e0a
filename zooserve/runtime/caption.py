"""Captioning served: decode and preprocess a batch of images, one batched beam search
(``zooserve.models.beam_search``) over the exported encoder/step modules, per-request options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from zooserve.errors import InvalidParameter
from zooserve.models.beam_search import BeamOptions, Captioner, Hypothesis
from zooserve.models.preprocess import normalize, resize_batch
from zooserve.runtime import images
from zooserve.runtime.bundle import Bundle
from zooserve.runtime.pipeline import Pipeline, Request

LIMITS = {"beam_size": (1, 20), "max_length": (1, 200), "length_norm": (0.0, 2.0)}


@dataclass
class CaptionItem:
    image: torch.Tensor  # uint8 (3, H, W)
    attention: bool
    opts: BeamOptions


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
        self.max_pixels = opts.max_pixels

    def decode(self, request: Request) -> CaptionItem:
        data = images.image_bytes(request)
        img = images.decode_image_bytes(data, channels=3, max_pixels=self.max_pixels)
        return CaptionItem(img, request.flag("attention"), request_options(request, self.defaults))

    def preprocess(self, items: list[CaptionItem]) -> tuple[torch.Tensor, list[BeamOptions]]:
        batch = resize_batch([it.image for it in items], self.spec)
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
    values: dict[str, Any] = {}
    for key, (lo, hi) in LIMITS.items():
        raw = request.headers.get("x-" + key.replace("_", "-"))
        if raw is None and isinstance(request.body, dict):
            raw = request.body.get(key)
        if raw is None:
            continue
        kind = float if key == "length_norm" else int
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            raise InvalidParameter(f"{key} must be a number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise InvalidParameter(f"{key} must be between {lo} and {hi}, got {value}")
        values[key] = value
    return BeamOptions(**{**defaults.__dict__, **values})
