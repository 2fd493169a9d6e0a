"""Text classification over a batch: one batched tokenizer call, dynamic padding, one forward.

Each batch is padded to its own longest sequence rounded up to a multiple of 8 (never a fixed
150/512), texts longer than the model's positions are truncated and say so in their response.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from zooserve.errors import EmptyBody, InvalidJSON, InvalidText, PayloadTooLarge
from zooserve.runtime.bundle import Bundle
from zooserve.runtime.classify import topk_predictions
from zooserve.runtime.options import int_option
from zooserve.runtime.pipeline import Pipeline, Request


@dataclass
class TextItem:
    text: str
    topk: int
    truncated: bool = False  # set by preprocess: the tokenizer cut the text at max_length


@dataclass
class TextBatch:
    input_ids: torch.Tensor  # (N, L) int64, L = longest rounded up to pad_multiple, <= max_length
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor


def request_text(request: Request, max_bytes: int) -> str:
    """The one text of a request: raw UTF-8 bytes, a pre-decoded str, or JSON ``{"text": "..."}``."""
    body = request.body
    if body is None or (isinstance(body, (bytes, bytearray, str)) and len(body) == 0):
        raise EmptyBody('the request body is empty: send UTF-8 text or JSON {"text": "..."}')
    if isinstance(body, (bytes, bytearray)):
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"text is {len(body)} bytes; the limit is {max_bytes}")
        try:
            body = bytes(body).decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidText(f"the body is not valid UTF-8 (byte {e.start})") from None
    if isinstance(body, str) and "json" in request.content_type:
        try:
            body = json.loads(body)
        except ValueError as e:
            raise InvalidJSON(f"malformed JSON body: {e}") from None
    text = _text_field(body) if isinstance(body, (dict, list)) else body
    if not isinstance(text, str):
        raise InvalidJSON(f"expected a text, got {type(text).__name__}")
    try:  # JSON "\ud800" escapes give lone surrogates, which the tokenizer would fail the batch on
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidText("the text contains unpaired UTF-16 surrogates") from None
    if size > max_bytes:
        raise PayloadTooLarge(f"text is {size} bytes; the limit is {max_bytes}")
    if not text.strip():
        raise InvalidText("the text is empty")
    return text


def _text_field(body: Any) -> Any:
    if not isinstance(body, dict) or "text" not in body:
        raise InvalidJSON('the JSON body must be an object with a "text" field: {"text": "..."}')
    text = body["text"]
    if isinstance(text, list):
        raise InvalidJSON('send one text per request ("text" is a list); requests are batched server-side')
    if not isinstance(text, str):
        raise InvalidJSON(f'"text" must be a string, got {type(text).__name__}')
    return text


class TextPipeline(Pipeline):
    def __init__(self, bundle: Bundle) -> None:
        meta = bundle.manifest.metadata
        self.bundle = bundle
        self.model_name = bundle.name
        self.model = bundle.modules["model"]
        self.labels = bundle.manifest.labels
        self.topk = min(bundle.options.topk, len(self.labels))
        self.max_bytes = bundle.options.max_text_bytes
        self.max_length = int(meta["max_length"])
        self.pad_multiple = int(meta["pad_multiple"])
        self.tokenizer = Tokenizer.from_file(str(bundle.root / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        self.tokenizer.enable_padding(
            pad_id=int(meta["pad_token_id"]),
            pad_token=str(meta["pad_token"]),
            pad_to_multiple_of=self.pad_multiple,
        )

    def decode(self, request: Request) -> TextItem:
        topk = int_option(request, "topk", self.topk, 1, len(self.labels))
        return TextItem(request_text(request, self.max_bytes), topk)

    def example_item(self) -> TextItem:
        return TextItem("a short sentence to warm the model up " * 4, self.topk)

    def preprocess(self, items: list[TextItem]) -> TextBatch:
        """One batched encode; padded to the longest in the batch (rounded up to the multiple)."""
        encodings = self.tokenizer.encode_batch([it.text for it in items])
        # rounding up may pass max_length (when it is not a multiple): the extra columns are padding
        width = min(len(encodings[0].ids), self.max_length)
        # contiguous: AOTInductor kernels assume the strides they were compiled with
        arrays = [
            np.ascontiguousarray(np.array([getattr(e, f) for e in encodings], dtype=np.int64)[:, :width])
            for f in ("ids", "attention_mask", "type_ids")
        ]
        for item, enc in zip(items, encodings, strict=True):
            item.truncated = len(enc.overflowing) > 0
        return TextBatch(*(torch.from_numpy(a).to(self.bundle.device, non_blocking=True) for a in arrays))

    @torch.inference_mode()
    def forward(self, inputs: TextBatch) -> torch.Tensor:
        out = self.model(inputs.input_ids, inputs.attention_mask, inputs.token_type_ids)
        logits = out[0] if isinstance(out, (list, tuple)) else out  # AOTI packages return a list
        return torch.softmax(logits.float(), dim=1)

    def postprocess(self, outputs: torch.Tensor, items: list[TextItem]) -> list[dict[str, Any]]:
        preds = topk_predictions(outputs.cpu(), [it.topk for it in items], self.labels)
        return [
            {
                "model": self.model_name,
                "weights": self.bundle.manifest.weights.value,
                "predictions": p,
                "truncated": it.truncated,
            }
            for p, it in zip(preds, items, strict=True)
        ]
