"""The TorchServe handler of every zooserve archive: a thin adapter over ``zooserve.runtime``.

TorchServe calls ``handle(data, context)`` with the whole batch (the archive's
``zooserve_handler.py`` is a one-line import of this function). The first call loads the archive's
model once per worker and runs it once per batch size it will see, so the worker reports ready
warm. Each request then gets its own status code and JSON body, so one bad request never fails
its batch-mates; its id (``X-Request-Id``, or one made here) is echoed, logged and timed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any

import torch

from zooserve.errors import InferenceFailed, MalformedRequest, ServiceError
from zooserve.runtime.bundle import load_bundle
from zooserve.runtime.pipeline import BatchTimes, Pipeline, Request, Response, run_batch_timed
from zooserve.runtime.tasks import make_pipeline
from zooserve.serving import oip

REQUEST_ID_HEADER = "x-request-id"
_ID = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII: echoed as a header and logged
DEADLINE_HEADER = "x-zooserve-deadline"  # absolute, ms since the epoch: set by the gateway
TIMEOUT_HEADER = "x-request-timeout-ms"  # relative, from a client talking to TorchServe directly
TIMING_HEADER = "X-Zooserve-Timing"  # batch start and stage seconds, read back by the gateway
REQUEST_LOG_ENV = "ZOOSERVE_REQUEST_LOG"  # file for the per-request JSON lines (set by `zooserve serve`)

logger = logging.getLogger(__name__)
request_log = logging.getLogger("zooserve.requests")  # one JSON line per request
_pipeline: Pipeline | None = None


def _initialize(context: Any) -> Pipeline:
    _log_requests_to(os.environ.get(REQUEST_LOG_ENV))
    config = context.model_yaml_config or {}
    model_dir = Path(context.system_properties["model_dir"])
    gpu = context.system_properties.get("gpu_id")
    device = f"cuda:{gpu}" if torch.cuda.is_available() and gpu is not None else "cpu"
    torch.set_num_interop_threads(1)  # only settable before any parallel work
    bundle = load_bundle(model_dir, overrides=config.get("zooserve", {}), device=device)
    # TorchServe leaves torch threads at its default; workers x threads must fit the cores
    torch.set_num_threads(bundle.options.threads)
    pipeline = make_pipeline(bundle)
    pipeline.model_name = getattr(context, "model_name", None) or bundle.name  # as served (metrics, answers)
    pipeline.decode_workers = bundle.options.decode_workers
    batch_size = int(config.get("batchSize") or context.system_properties.get("batch_size") or 1)
    seconds = pipeline.warmup(warmup_sizes(batch_size))  # before TorchServe marks the worker READY
    request_log.info(json.dumps({"event": "warm", "model": bundle.name, "seconds": round(seconds, 3)}))
    return pipeline


def _log_requests_to(path: str | None) -> None:
    """Request lines as plain JSON lines in ``path`` (every worker appends to the same file)."""
    if path and not request_log.handlers:
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(message)s"))
        request_log.addHandler(handler)
        request_log.setLevel(logging.INFO)
        request_log.propagate = False


def warmup_sizes(batch_size: int) -> list[int]:
    """1, 2, 4, ... up to ``batch_size``: the batch shapes a worker sees first under load."""
    sizes = [1]
    while sizes[-1] * 2 < batch_size:
        sizes.append(sizes[-1] * 2)
    return sorted({*sizes, batch_size})


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
    return Request(body=body, headers=headers, content_type=content_type.lower(), deadline=deadline(headers))


def deadline(headers: dict[str, str]) -> float | None:
    """The wall-clock deadline: absolute from the gateway (which counted queue time), else a
    client's relative timeout counted from now; malformed values are ignored, not fatal."""
    try:
        if DEADLINE_HEADER in headers:
            return float(headers[DEADLINE_HEADER]) / 1e3
        if TIMEOUT_HEADER in headers:
            return time.time() + float(headers[TIMEOUT_HEADER]) / 1e3
    except ValueError:
        pass
    return None


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
    ids: list[str] = []
    v2: dict[int, dict[str, Any]] = {}  # TorchServe's OIP gRPC requests: answered in their shape
    for idx, item in enumerate(data):
        ids.append(_request_id(context, idx))
        try:
            request = _request(item, context, idx)
            if oip.is_oip(request.body):
                v2[idx] = request.body
                request = oip.to_request(request.body, request.headers)  # its x-NAME inputs are headers
                request.deadline = deadline(request.headers)
            ids[idx] = _valid_id(request.headers.get(REQUEST_ID_HEADER)) or ids[idx]
            requests.append(request)
        except Exception as e:  # noqa: BLE001 - an unreadable request fails alone
            requests.append(MalformedRequest(f"cannot read the request: {type(e).__name__}: {str(e)[:200]}"))
    responses, times = run_batch_timed(pipeline, requests)
    stages = ",".join(f"{k}={v:.6f}" for k, v in times.stages.items())
    timing = f"start={times.started:.6f},batch={len(data)},{stages}"
    out = []
    for idx, resp in enumerate(responses):
        body, resp = _serialise(resp, v2.get(idx))
        context.set_response_content_type(idx, "application/json")
        context.set_response_header(idx, "X-Request-Id", ids[idx])
        context.set_response_header(idx, TIMING_HEADER, timing)
        if resp.status != 200:
            context.set_response_status(resp.status, str(resp.body.get("type", "")), idx)
        out.append(body)
        request_log.info(_log_line(pipeline.model_name, ids[idx], resp, len(data), times))
    return out


def _request_id(context: Any, idx: int) -> str:
    """The client's X-Request-Id when it sent one (REST header), else TorchServe's own id."""
    headers = context.get_all_request_header(idx) or {}
    given = next((v for k, v in headers.items() if k.lower() == REQUEST_ID_HEADER), None)
    return _valid_id(given) or str(context.get_request_id(idx) or uuid.uuid4().hex)


def _valid_id(value: Any) -> str | None:
    """A client's request id, cut to 128 characters, if it is printable ASCII; else None."""
    return value[:128] if isinstance(value, str) and _ID.fullmatch(value[:128]) else None


def _log_line(model: str, request_id: str, resp: Response, batch: int, times: BatchTimes) -> str:
    """One JSON line per request: what an operator greps for by request id."""
    line = {
        "ts": round(time.time(), 3),
        "request_id": request_id,
        "model": model,
        "status": resp.status,
        "batch_size": batch,
        "stages_ms": {k: round(v * 1e3, 3) for k, v in times.stages.items()},
    }
    if resp.status != 200:
        line["error"] = resp.body.get("type")
    return json.dumps(line, separators=(",", ":"))


def _serialise(resp: Response, oip_request: dict[str, Any] | None) -> tuple[bytes, Response]:
    """Strict JSON (no NaN/Infinity, which clients cannot parse); a body that cannot be written
    becomes that request's 500 alone."""
    unwritable = InferenceFailed("the model produced an output JSON cannot carry (non-finite or non-JSON)")
    for attempt in (resp, Response(500, unwritable.to_json())):
        body = oip.to_response(oip_request, attempt) if oip_request is not None else attempt.body
        try:
            return json.dumps(body, separators=(",", ":"), allow_nan=False).encode(), attempt
        except (TypeError, ValueError, OverflowError, RecursionError):  # NaN, a tensor, a cycle
            continue
    raise AssertionError("unreachable: the error body is plain JSON")
