"""Open Inference Protocol (KServe v2) requests as TorchServe 0.12 hands them to the handler.

With ``ts_open_inference_protocol=true`` TorchServe serves KServe's ``GRPCInferenceService`` on
the gRPC inference port and passes ``ModelInfer`` to the handler as a JSON body
``{"id", "model_name", "inputs": [{"name", "shape", "datatype", "data"}]}`` (BYTES data
base64-encoded). The frontend then parses the handler's answer as a v2 response and drops the
worker if a field is missing, so every OIP request, good or bad, is answered in that shape: one
BYTES output, ``"predictions"``, holding the same JSON body REST returns (the frontend writes each
data element's JSON text into ``bytes_contents``, so the element is the body object itself).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from zooserve.runtime.pipeline import Request, Response


def is_oip(body: Any) -> bool:
    return (
        isinstance(body, dict)
        and isinstance(body.get("inputs"), list)
        and "model_name" in body
        and "id" in body
    )


def to_request(body: dict[str, Any], headers: dict[str, str]) -> Request:
    """The first input tensor becomes the request body (image bytes or UTF-8 text); a request
    without usable data gets an empty body, which the pipeline answers with EmptyBody. Further
    inputs named ``x-NAME`` are options, like headers over REST (``x-topk``, ``x-attention``):
    TorchServe 0.12 drops OIP request parameters, so the v2 front-end sends them this way."""
    inputs = body.get("inputs") or [None]
    options = {}
    for tensor in inputs[1:]:
        name = str(tensor.get("name", "")).lower() if isinstance(tensor, dict) else ""
        if name.startswith("x-") and (value := _element(tensor)) is not None:
            options[name] = value.decode("utf-8", errors="replace")
    raw = _element(inputs[0]) or b""
    return Request(body=raw, headers=options | headers, content_type="application/octet-stream")


def _element(tensor: Any) -> bytes | None:
    try:
        data = tensor["data"][0]
        return (
            base64.b64decode(data, validate=True) if tensor.get("datatype") == "BYTES" else str(data).encode()
        )
    except (IndexError, KeyError, TypeError, binascii.Error):
        return None


def to_response(body: dict[str, Any], resp: Response) -> dict[str, Any]:
    return {
        "id": str(body.get("id", "")),
        "model_name": str(body.get("model_name", "")),
        "model_version": str(body.get("model_version", "")),
        "outputs": [{"name": "predictions", "datatype": "BYTES", "shape": [1], "data": [resp.body]}],
    }
