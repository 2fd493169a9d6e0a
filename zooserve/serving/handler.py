"""The TorchServe handler of every zooserve archive: a thin adapter over ``zooserve.runtime``.

TorchServe calls ``handle(data, context)`` with the whole batch (the archive's
``zooserve_handler.py`` is a one-line import of this function). The first call loads the archive's
model once per worker; each request then gets its own status code and JSON body, so one bad
request never fails its batch-mates.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch

from zooserve.runtime.bundle import load_bundle
from zooserve.runtime.pipeline import Pipeline, Request, run_batch
from zooserve.runtime.tasks import make_pipeline
from zooserve.serving import oip

_pipeline: Pipeline | None = None


def _initialize(context: Any) -> Pipeline:
    overrides = (context.model_yaml_config or {}).get("zooserve", {})
    model_dir = Path(context.system_properties["model_dir"])
    gpu = context.system_properties.get("gpu_id")
    device = f"cuda:{gpu}" if torch.cuda.is_available() and gpu is not None else "cpu"
    torch.set_num_interop_threads(1)  # only settable before any parallel work
    bundle = load_bundle(model_dir, overrides=overrides, device=device)
    # TorchServe leaves torch threads at its default; workers x threads must fit the cores
    torch.set_num_threads(bundle.options.threads)
    return make_pipeline(bundle)


def _request(data: dict[str, Any], context: Any, idx: int) -> Request:
    # REST body arrives as "body", a multipart field or gRPC input as its own name ("data")
    key = "data" if "data" in data else "body" if "body" in data else next(iter(data), None)
    # other multipart fields / gRPC input entries are options, like headers (x-topk, content-type)
    options = {
        k.lower(): _text(v) for k, v in data.items() if k != key and isinstance(v, (bytes, bytearray, str))
    }
    headers = options | {
        k.lower(): v for k, v in context.get_all_request_header(idx).items() if isinstance(v, str)
    }
    meta = context.get_request_header(idx, key) if key else None
    declared = meta.get("content-type") if isinstance(meta, dict) else None
    content_type = declared or headers.get("content-type", "")
    body = data.get(key) if key else None
    if content_type.lower().startswith("application/json") and isinstance(body, (bytes, bytearray)):
        # REST JSON arrives parsed; gRPC JSON arrives as bytes (malformed JSON stays bytes)
        with contextlib.suppress(ValueError):
            body = json.loads(body)
    return Request(body=body, headers=headers, content_type=content_type.lower())


def _text(value: bytes | bytearray | str) -> str:
    return value if isinstance(value, str) else bytes(value).decode("utf-8", errors="replace")


def handle(data: list[dict[str, Any]] | None, context: Any) -> list[bytes] | None:
    global _pipeline
    if _pipeline is None:
        _pipeline = _initialize(context)
    if data is None:
        return None
    requests = [_request(d, context, i) for i, d in enumerate(data)]
    v2 = {i: r.body for i, r in enumerate(requests) if oip.is_oip(r.body)}  # TorchServe's OIP gRPC
    requests = [oip.to_request(v2[i], r.headers) if i in v2 else r for i, r in enumerate(requests)]
    responses = run_batch(_pipeline, requests)
    for idx, resp in enumerate(responses):
        context.set_response_content_type(idx, "application/json")
        if resp.status != 200:
            context.set_response_status(resp.status, str(resp.body.get("type", "")), idx)
    bodies = [oip.to_response(v2[i], r) if i in v2 else r.body for i, r in enumerate(responses)]
    return [json.dumps(b, separators=(",", ":")).encode() for b in bodies]
