"""BERT sequences/s: dynamic padding (what the handler does) vs padding every batch to 150 (the
stock TorchServe example), in-process on the same bundle: text.py has no pad-to serving option."""

from __future__ import annotations

from typing import Any

import torch

from zooserve.bench.timing import time_calls
from zooserve.runtime.bundle import Bundle
from zooserve.runtime.pipeline import Request
from zooserve.runtime.tasks import make_pipeline

SHORT = "the match ended with a late goal from the visiting side"  # ~12-16 tokens
LONG = "markets rallied after the central bank held rates steady while investors weighed new data"


def texts(kind: str, n: int) -> list[str]:
    if kind == "short":
        return [SHORT] * n
    return [" ".join([LONG] * 8)[: 20 + (i * 97) % 700] for i in range(n)]  # 4..~120 words


def bench_padding(bundle: Bundle, seconds: float, batch: int = 16, fixed: int = 150) -> list[dict[str, Any]]:
    pipe: Any = make_pipeline(bundle)
    fixed = min(fixed, pipe.max_length)
    pad_id = int(bundle.manifest.metadata["pad_token_id"])
    rows = []
    for kind in ("short", "mixed"):
        items = [pipe.decode(Request(body=t.encode())) for t in texts(kind, batch)]

        def dynamic(items: list[Any] = items) -> Any:
            return pipe.forward(pipe.preprocess(items))

        def padded(items: list[Any] = items) -> Any:
            b = pipe.preprocess(items)
            pad = fixed - b.input_ids.shape[1]
            if pad > 0:  # extend with padding tokens (mask 0), as a fixed-length tokenizer would
                b.input_ids = torch.nn.functional.pad(b.input_ids, (0, pad), value=pad_id)
                b.attention_mask = torch.nn.functional.pad(b.attention_mask, (0, pad))
                b.token_type_ids = torch.nn.functional.pad(b.token_type_ids, (0, pad))
            return pipe.forward(b)

        dyn = time_calls(dynamic, batch, seconds, warmup=1).items_per_s
        pad = time_calls(padded, batch, seconds, warmup=1).items_per_s
        width = pipe.preprocess(items).input_ids.shape[1]
        rows.append(
            {
                "model": bundle.name,
                "texts": kind,
                "batch": batch,
                "dynamic width": width,
                "dynamic seq/s": dyn,
                f"pad-{fixed} seq/s": pad,
                "speedup": dyn / pad,
            }
        )
    return rows
