"""The v2 REST API (``/v2/...``) over aiohttp, with the binary-data extension.

JSON tensors carry BYTES elements as strings (UTF-8), as Triton does; binary tensors (images)
travel after the JSON header: ``Inference-Header-Content-Length`` gives the header's length and
each binary input/output says its size in ``parameters.binary_data_size``. Outputs are binary when
asked for per output (``parameters.binary_data``) or for all (``parameters.binary_data_output``).
Errors: ``{"error": "Type: message"}`` (what Triton and KServe clients read) plus zooserve's
``code``/``type``/``message``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from zooserve.errors import InvalidJSON, InvalidTensor, Overloaded, ServiceError
from zooserve.serving.calls import REQUEST_ID, TIMEOUT, timeout_from_header
from zooserve.serving.v2.backend import Metadata
from zooserve.serving.v2.frontend import CallContext, Frontend, message
from zooserve.serving.v2.metrics import Metrics
from zooserve.serving.v2.tensors import InferAnswer, InferCall, Tensor, from_raw, to_raw

HEADER_LENGTH = "Inference-Header-Content-Length"
log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ---- wire form <-> neutral (pure functions) ----------------------------------------------------
def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list):
        return [x for item in data for x in _flatten(item)]
    return [data]


def _element(value: Any, datatype: str, what: str) -> Any:
    if datatype == "BYTES":
        if not isinstance(value, str):
            raise InvalidTensor(f"{what}: BYTES elements in JSON must be strings, got {type(value).__name__}")
        return value.encode("utf-8")
    if isinstance(value, (bool, int, float)):
        return value
    raise InvalidTensor(f"{what}: expected numbers for {datatype}, got {type(value).__name__}")


def parse_infer(
    body: bytes, header_length: str | None, model: str, version: str
) -> tuple[InferCall, dict[str, Any]]:
    """The call, and the request as JSON (its ``parameters``/``outputs`` choose binary outputs)."""
    try:
        size = len(body) if header_length is None else int(header_length)
        if not 0 <= size <= len(body):
            raise ValueError(f"{HEADER_LENGTH} {size} outside the body's {len(body)} bytes")
        doc = json.loads(body[:size])
    except ValueError as e:
        raise InvalidJSON(f"inference request header is not valid JSON: {e}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise InvalidJSON("inference request must be a JSON object with an 'inputs' list")
    binary, pos, inputs = body[size:], 0, []
    for i, t in enumerate(doc["inputs"]):
        if not isinstance(t, dict) or not isinstance(t.get("shape"), list):
            raise InvalidTensor(f"input {i} needs 'name', 'shape', 'datatype' and data")
        name, datatype = str(t.get("name", "")), str(t.get("datatype", ""))
        what, params = f"input {name!r}", t.get("parameters") or {}
        if "binary_data_size" in params:
            n = int(params["binary_data_size"])
            if n < 0 or pos + n > len(binary):
                raise InvalidTensor(f"{what}: binary_data_size {n} runs past the body")
            data, pos = from_raw(datatype, binary[pos : pos + n], what), pos + n
        elif "data" in t:
            data = [_element(v, datatype, what) for v in _flatten(t["data"])]
        else:
            raise InvalidTensor(f"{what}: no 'data' and no binary_data_size")
        inputs.append(Tensor(name, datatype, [int(d) for d in t["shape"]], data, params))
    if pos != len(binary):
        raise InvalidTensor(f"{len(binary) - pos} bytes of binary data belong to no input")
    outputs = doc.get("outputs") or []
    call = InferCall(
        model=model,
        version=version,
        id=str(doc.get("id", "")),
        inputs=inputs,
        parameters=dict(doc.get("parameters") or {}),
        outputs=[str(o.get("name", "")) for o in outputs if isinstance(o, dict)],
    )
    return call, doc


def _binary_outputs(doc: dict[str, Any]) -> tuple[bool, dict[str, bool]]:
    default = bool((doc.get("parameters") or {}).get("binary_data_output", False))
    each = {
        str(o.get("name")): bool(o["parameters"]["binary_data"])
        for o in doc.get("outputs") or []
        if isinstance(o, dict) and "binary_data" in (o.get("parameters") or {})
    }
    return default, each


def render_answer(answer: InferAnswer, doc: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    default, each = _binary_outputs(doc)
    outputs, blobs = [], []
    for t in answer.outputs:
        out: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": t.shape}
        if each.get(t.name, default):
            blob = to_raw(t)
            out["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            out["data"] = [v.decode("utf-8", "replace") for v in t.data] if t.datatype == "BYTES" else t.data
        outputs.append(out)
    head = json.dumps(
        {"model_name": answer.model, "model_version": answer.version, "id": answer.id, "outputs": outputs},
        separators=(",", ":"),
    ).encode()
    if not blobs:
        return head, {"Content-Type": "application/json"}
    return head + b"".join(blobs), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head))}


# ---- routes --------------------------------------------------------------------------------------
def _auth(request: web.Request) -> Metadata:
    value = request.headers.get("Authorization")
    return (("authorization", value),) if value else ()


def _tensors(specs: Any) -> list[dict[str, Any]]:
    return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in specs]


def _error(err: ServiceError) -> web.Response:
    headers = {"Retry-After": str(err.retry_after_s)} if isinstance(err, Overloaded) else {}
    return web.json_response({"error": message(err), **err.to_json()}, status=err.status, headers=headers)


def routes(front: Frontend) -> list[tuple[str, str, Handler]]:
    async def live(r: web.Request) -> web.Response:
        return web.json_response({"live": await front.live(_auth(r))})

    async def ready(r: web.Request) -> web.Response:
        ok = await front.ready(_auth(r))
        return web.json_response({"ready": ok}, status=200 if ok else 503)

    async def ping(r: web.Request) -> web.Response:  # TorchServe's /ping, for the same probes
        ok = await front.ready(_auth(r))
        return web.json_response({"status": "Healthy" if ok else "Unhealthy"}, status=200 if ok else 503)

    async def server_metadata(r: web.Request) -> web.Response:
        return web.json_response(await front.server_metadata(_auth(r)))

    async def model_metadata(r: web.Request) -> web.Response:
        meta = await front.model_metadata(r.match_info["model"], r.match_info.get("version", ""), _auth(r))
        return web.json_response(
            {
                "name": meta.name,
                "versions": list(meta.versions),
                "platform": meta.platform,
                "inputs": _tensors(meta.inputs),
                "outputs": _tensors(meta.outputs),
            }
        )

    async def model_ready(r: web.Request) -> web.Response:
        name = r.match_info["model"]
        ok = await front.model_ready(name, r.match_info.get("version", ""), _auth(r))
        return web.json_response({"name": name, "ready": ok}, status=200 if ok else 503)

    async def infer(r: web.Request) -> web.Response:
        body = await r.read()
        call, doc = parse_infer(
            body, r.headers.get(HEADER_LENGTH), r.match_info["model"], r.match_info.get("version", "")
        )
        timeout = timeout_from_header(r.headers.get(TIMEOUT))
        ctx = CallContext("v2-rest", r.headers.get(REQUEST_ID), timeout)
        data, headers = render_answer(await front.infer(call, _auth(r), ctx=ctx), doc)
        return web.Response(body=data, headers=headers)

    model = "/v2/models/{model}"
    versioned = "/v2/models/{model}/versions/{version}"
    return [
        ("GET", "/v2/health/live", live),
        ("GET", "/v2/health/ready", ready),
        ("GET", "/ping", ping),
        ("GET", "/v2", server_metadata),
        *(("GET", base, model_metadata) for base in (model, versioned)),
        *(("GET", f"{base}/ready", model_ready) for base in (model, versioned)),
        *(("POST", f"{base}/infer", infer) for base in (model, versioned)),
    ]


def app(front: Frontend, metrics: Metrics, max_message_bytes: int) -> web.Application:
    def tracked(name: str, fn: Handler) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            with metrics.track("rest", name) as outcome:
                try:
                    resp = await fn(request)
                except ServiceError as err:
                    resp = _error(err)
                except web.HTTPException as exc:  # aiohttp's own (413 over the size limit, ...)
                    resp = web.json_response({"error": exc.reason}, status=exc.status)
                except Exception as exc:
                    log.exception("%s failed", name)
                    resp = web.json_response(
                        {"error": f"InferenceFailed: {type(exc).__name__}: {exc}"}, status=500
                    )
                outcome.code = str(resp.status)
                return resp

        return handle

    application = web.Application(client_max_size=max_message_bytes)
    for verb, path, fn in routes(front):
        application.router.add_route(verb, path, tracked(fn.__name__, fn))
    return application


def metrics_app(metrics: Metrics) -> web.Application:
    async def scrape(_r: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": "text/plain; version=0.0.4"})

    application = web.Application()
    application.router.add_get("/metrics", scrape)
    return application
