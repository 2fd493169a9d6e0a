"""Image classification over a batch: centre crop, ten-crop or dense (FC-to-conv) evaluation.

Every mode is one preprocessing pass and one forward per batch (dense: one per scale, with the
flipped copies in the same forward).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torchvision.transforms.v2 import functional as F

from zooserve.errors import ConfigError, RequestError
from zooserve.export.dense import scores_from_map
from zooserve.models.digits import CANVAS, digit_batch
from zooserve.models.preprocess import normalize, resize_batch
from zooserve.runtime.bundle import Bundle
from zooserve.runtime.images import (
    check_batch_pixels,
    decode_image_bytes,
    decode_jpegs_on_gpu,
    image_bytes,
    limits_for,
    probe,
    warmup_image,
)
from zooserve.runtime.options import int_option
from zooserve.runtime.pipeline import Pipeline, Request
from zooserve.specs import Evaluation


@dataclass
class Item:
    image: torch.Tensor | None  # uint8 (C, H, W); None while a JPEG waits for the GPU batch decode
    topk: int
    pixels: int  # declared by the image's header: what the batch budget counts
    jpeg: bytes = b""
    error: RequestError | None = None  # found by the batch's preprocessing: answered alone, as 4xx
    full_size: tuple[int, int] | None = None  # (H, W) when decoded smaller: see resize_batch


def topk_predictions(probs: torch.Tensor, ks: list[int], labels: Sequence[str]) -> list[list[dict[str, Any]]]:
    """One batched topk, then the JSON lists (``probs`` is (N, classes))."""
    values, indices = probs.float().topk(max(ks), dim=1)
    vals, idxs = values.tolist(), indices.tolist()
    return [
        [
            {"index": i, "label": labels[i], "probability": round(p, 6)}
            for i, p in zip(idxs[n][:k], vals[n][:k], strict=True)
        ]
        for n, k in enumerate(ks)
    ]


class ClassifyPipeline(Pipeline):
    def __init__(self, bundle: Bundle) -> None:
        manifest, opts = bundle.manifest, bundle.options
        assert manifest.input is not None
        self.bundle = bundle
        self.model_name = bundle.name
        self.model = bundle.modules["model"]
        self.dense_model = bundle.modules.get("dense")
        self.spec = manifest.input
        self.labels = manifest.labels
        self.topk = min(opts.topk, len(self.labels))
        self.evaluation = opts.evaluation
        self.scales = opts.scales
        self.flip = opts.flip
        self.batch_pixels = opts.max_batch_pixels
        cover = max(self.scales) if self.evaluation == Evaluation.DENSE and self.scales else self.spec.resize
        if self.spec.ink_box is not None:  # digits are framed on a working canvas, not at model size
            cover = CANVAS
        self.cover = cover or self.spec.size
        self.limits = limits_for(self.spec.channels, opts, self.cover)
        self.gpu_decode = bundle.device.type == "cuda" and self.spec.channels == 3
        if self.evaluation == Evaluation.DENSE and (self.dense_model is None or not self.scales):
            raise ConfigError("evaluation 'dense' needs an archive built with --dense (the FC-to-conv model)")

    def decode(self, request: Request) -> Item:
        topk = int_option(request, "topk", self.topk, 1, len(self.labels))
        data = image_bytes(request)
        if self.gpu_decode:
            fmt, pixels = probe(data, self.limits)
            if fmt == "JPEG":
                return Item(None, topk, pixels, jpeg=data)  # decoded with its batch-mates on the GPU
        decoded = decode_image_bytes(data, self.limits)
        return Item(decoded.image, topk, decoded.declared_pixels, full_size=decoded.full_size)

    def example_item(self) -> Item:
        return Item(warmup_image(self.limits, self.cover), self.topk, 0)

    def _images(self, items: list[Item]) -> list[torch.Tensor]:
        """Every item's image on the model's device: pending JPEGs in one GPU decode, the rest
        copied from pinned memory without blocking."""
        if not self.gpu_decode:
            return [it.image for it in items]  # type: ignore[misc]  # all decoded on the CPU
        device = self.bundle.device
        images: list[Any] = [
            None if it.image is None else it.image.pin_memory().to(device, non_blocking=True) for it in items
        ]
        pending = [i for i, it in enumerate(items) if it.image is None]
        if pending:
            for i, img in zip(
                pending, decode_jpegs_on_gpu([items[i].jpeg for i in pending], device), strict=True
            ):
                images[i] = img
        return images

    def preprocess(self, items: list[Item]) -> list[torch.Tensor]:
        """One float batch per forward: [centre] or [ten crops] or [one per dense scale], built on
        the model's device (``_images`` put the images there)."""
        check_batch_pixels([it.pixels for it in items], self.batch_pixels)  # run_batch splits the batch
        images = self._images(items)
        if self.spec.ink_box is not None:
            return self._digits(images, items)
        full = [it.full_size for it in items]
        if self.evaluation == Evaluation.CENTER:
            return [normalize(resize_batch(images, self.spec, full_sizes=full), self.spec)]
        if self.evaluation == Evaluation.TENCROP:
            side = self.spec.resize or self.spec.size
            resized = resize_batch(images, self.spec, crop=side, full_sizes=full)
            crops = F.ten_crop(resized, [self.spec.size, self.spec.size])
            batch = torch.stack(crops, dim=1).flatten(0, 1)  # (N*10, C, S, S), image-major
            return [normalize(batch, self.spec)]
        # dense: each scale Q is the image resized to shorter side Q, centre square Q x Q
        return [
            normalize(resize_batch(images, self.spec, crop=q, resize=q, full_sizes=full), self.spec)
            for q in self.scales
        ]

    @torch.inference_mode()
    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        """Class posteriors (N, classes), averaged over crops / scales / flips as the mode says."""
        if self.evaluation == Evaluation.TENCROP:
            probs = self._probs(inputs[0])
            return probs.view(-1, 10, probs.shape[-1]).mean(dim=1)
        if self.evaluation == Evaluation.CENTER:
            return self._probs(inputs[0])
        total = None
        for x in inputs:
            n = x.shape[0]
            probs = self._probs(torch.cat([x, x.flip(3)]) if self.flip else x, self.dense_model)
            probs = probs.view(-1, n, probs.shape[-1]).mean(dim=0)
            total = probs if total is None else total + probs
        assert total is not None
        return total / len(inputs)

    def _probs(self, x: torch.Tensor, model: Any = None) -> torch.Tensor:
        return torch.softmax(scores_from_map((model or self.model)(x)).float(), dim=1)

    def _digits(self, images: list[torch.Tensor], items: list[Item]) -> list[torch.Tensor]:
        """Digit models: the batch framed by its ink (zooserve.models.digits); an image without a
        readable digit is marked on its item (postprocess answers it with the error) and the rest
        of the batch goes on."""
        sides = self.scales if self.evaluation == Evaluation.DENSE else [self.spec.size]
        batches = []
        for side in sides:
            x, errors = digit_batch(images, self.spec, side)
            batches.append(x.to(self.bundle.device))
        for it, err in zip(items, errors, strict=True):
            it.error = err
        if self.evaluation == Evaluation.TENCROP:
            crops = F.ten_crop(batches[0], [self.spec.size, self.spec.size])
            return [torch.stack(crops, dim=1).flatten(0, 1)]
        return batches

    def postprocess(self, outputs: torch.Tensor, items: list[Item]) -> list[dict[str, Any] | RequestError]:
        preds = topk_predictions(outputs.cpu(), [it.topk for it in items], self.labels)
        return [
            it.error
            or {"model": self.model_name, "weights": self.bundle.manifest.weights.value, "predictions": p}
            for it, p in zip(items, preds, strict=True)
        ]
