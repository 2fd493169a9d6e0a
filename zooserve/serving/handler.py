"""The TorchServe handler of every zooserve archive: a thin adapter over ``zooserve.runtime``.

TorchServe calls ``handle(data, context)`` with the whole batch (the archive's
``zooserve_handler.py`` is a one-line import of this function). The first call loads the archive's
model once per worker; each request then gets its own status code and JSON body, so one bad
request never fails its batch-mates.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

from zooserve.errors import InferenceFailed, MalformedRequest, ServiceError
from zooserve.runtime.bundle import load_bundle
from zooserve.runtime.pipeline import Pipeline, Request, Response, run_batch
from zooserve.runtime.tasks import make_pipeline
from zooserve.serving import oip

logger = logging.getLogger(__name__)
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
    """Answer every request of the batch; never raise (TorchServe would answer 503 to all of them)."""
    global _pipeline
    if _pipeline is None:
        _pipeline = _initialize(context)  # a model that cannot load is the operator's to fix: raise
    if data is None:
        return None
    try:
        return _answer(_pipeline, data, context)
    except Exception as e:  # noqa: BLE001 - a bug of ours: 500 for each request, never a batch-wide 503
        logger.exception("handler failed on a batch of %d", len(data))
        error = InferenceFailed(f"{type(e).__name__}: {str(e)[:200]}")
        for idx in range(len(data)):
            context.set_response_content_type(idx, "application/json")
            context.set_response_status(error.status, error.type, idx)
        return [json.dumps(error.to_json()).encode()] * len(data)


def _answer(pipeline: Pipeline, data: list[dict[str, Any]], context: Any) -> list[bytes]:
    requests: list[Request | ServiceError] = []
    v2: dict[int, dict[str, Any]] = {}  # TorchServe's OIP gRPC requests: answered in their shape
    for idx, item in enumerate(data):
        try:
            request = _request(item, context, idx)
            if oip.is_oip(request.body):
                v2[idx] = request.body
                request = oip.to_request(request.body, request.headers)
            requests.append(request)
        except Exception as e:  # noqa: BLE001 - an unreadable request fails alone
            requests.append(MalformedRequest(f"cannot read the request: {type(e).__name__}: {str(e)[:200]}"))
    out = []
    for idx, resp in enumerate(run_batch(pipeline, requests)):
        body, resp = _serialise(resp, v2.get(idx))
        context.set_response_content_type(idx, "application/json")
        if resp.status != 200:
            context.set_response_status(resp.status, str(resp.body.get("type", "")), idx)
        out.append(body)
    return out


def _serialise(resp: Response, oip_request: dict[str, Any] | None) -> tuple[bytes, Response]:
    """Strict JSON (no NaN/Infinity, which clients cannot parse); a body that cannot be written
    becomes that request's 500."""
    for attempt in (resp, Response(500, InferenceFailed("the model produced a non-finite output").to_json())):
        body = oip.to_response(oip_request, attempt) if oip_request is not None else attempt.body
        try:
            return json.dumps(body, separators=(",", ":"), allow_nan=False).encode(), attempt
        except ValueError:
            continue
    raise AssertionError("unreachable: the error body is plain JSON")
