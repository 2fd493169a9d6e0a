"""Runs in the v2-clients environment (tritonclient + kserve, protobuf 6; see
requirements-v2clients.txt), never in zooserve's: the ecosystem's clients, unmodified, against a
zooserve v2 front-end. Reads a JSON job on stdin, prints one JSON object of what the client saw.
``check_clients.py triton`` or ``check_clients.py kserve``: one family per process, because the two
packages register the same ``inference.*`` protobuf messages and cannot be imported together.

Job: {"http": "127.0.0.1:8000", "grpc": "127.0.0.1:8001", "token": "...",
      "models": {"name": {"input": "image", "good": "path", "bad": "path"}}}
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def _caught(fn: Callable[[], Any]) -> dict[str, Any]:
    try:
        return {"ok": True, "value": fn()}
    except Exception as e:  # noqa: BLE001 - report what the client raised, whatever it is
        status = getattr(e, "status", None)
        code = e.code() if hasattr(e, "code") and callable(e.code) else None
        http = getattr(getattr(e, "response", None), "status_code", None)
        return {
            "ok": False,
            "type": type(e).__name__,
            "status": str(status() if callable(status) else status),
            "code": str(code),
            "http": http,
            "message": str(e),
        }


def _objects(*items: bytes) -> np.ndarray:
    return np.array(list(items), dtype=np.object_)


def triton(kind: str, job: dict[str, Any]) -> dict[str, Any]:
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton_http

    mod = triton_grpc if kind == "grpc" else triton_http
    client = mod.InferenceServerClient(job[kind])
    h = {"authorization": f"Bearer {job['token']}"}
    out: dict[str, Any] = {
        "live": _caught(lambda: client.is_server_live(headers=h)),
        "ready": _caught(lambda: client.is_server_ready(headers=h)),
        "server_metadata": _caught(lambda: _plain(client.get_server_metadata(headers=h))),
        "live_bad_token": _caught(lambda: client.is_server_live(headers={"authorization": "Bearer wrong"})),
        "unknown_model": _caught(lambda: client.get_model_metadata("no_such_model", headers=h)),
        "models": {},
    }
    for name, m in job["models"].items():
        out["models"][name] = triton_model(mod, client, h, kind, name, m)
    return out


def triton_model(
    mod: Any, client: Any, h: dict[str, str], kind: str, name: str, m: dict[str, str]
) -> dict[str, Any]:
    good, bad = Path(m["good"]).read_bytes(), Path(m["bad"]).read_bytes()

    def infer(*elements: bytes, params: dict[str, Any] | None = None) -> dict[str, Any]:
        inp = mod.InferInput(m["input"], [len(elements)], "BYTES")
        inp.set_data_from_numpy(_objects(*elements))  # HTTP: binary-data extension (the default)
        r = client.infer(name, [inp], headers=h, parameters=params)
        return {o: r.as_numpy(o).tolist() for o in _output_names(r, kind)}

    return {
        "ready": _caught(lambda: client.is_model_ready(name, headers=h)),
        "metadata": _caught(lambda: _plain(client.get_model_metadata(name, headers=h))),
        "one": _caught(lambda: infer(good)),
        "batch": _caught(lambda: infer(good, good)),
        "topk2": _caught(lambda: infer(good, params={"topk": 2})),
        "bad": _caught(lambda: infer(bad)),
        "after_bad": _caught(lambda: infer(good)),
    }


def _output_names(result: Any, kind: str) -> list[str]:
    response = result.get_response()
    outputs = response["outputs"] if kind == "http" else response.outputs
    return [o["name"] if kind == "http" else o.name for o in outputs]


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return x
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(x, preserving_proto_field_name=True)


async def caught(coro: Any) -> dict[str, Any]:
    try:
        return {"ok": True, "value": await coro}
    except Exception as e:  # noqa: BLE001
        code = e.code() if hasattr(e, "code") and callable(e.code) else None
        response = getattr(e, "response", None)
        http, body = getattr(response, "status_code", None), getattr(response, "text", "")
        details = e.details() if hasattr(e, "details") and callable(e.details) else ""
        return {
            "ok": False,
            "type": type(e).__name__,
            "code": str(code),
            "http": http,
            "message": details or body or str(e),
        }


async def kserve_model(
    grpc_client: Any, rest_client: Any, base: str, h: dict[str, str], kind: str, name: str, m: dict[str, str]
) -> dict[str, Any]:
    from kserve import InferInput, InferRequest

    good, bad = Path(m["good"]).read_bytes(), Path(m["bad"]).read_bytes()

    async def infer(data: bytes) -> dict[str, Any]:
        inp = InferInput(m["input"], [1], "BYTES")
        inp.set_data_from_numpy(_objects(data), binary_data=True)
        request = InferRequest(model_name=name, infer_inputs=[inp], request_id="kserve-check")
        if kind == "grpc":
            r = await grpc_client.infer(request, headers=tuple(h.items()))
        else:
            r = await rest_client.infer(base, request, model_name=name, headers=h)
        return {o.name: o.as_numpy().tolist() for o in r.outputs}

    ready = (
        grpc_client.is_model_ready(name, headers=tuple(h.items()))
        if kind == "grpc"
        else rest_client.is_model_ready(base, name, headers=h)
    )
    return {
        "ready": await caught(ready),
        "one": await caught(infer(good)),
        "bad": await caught(infer(bad)),
        "after_bad": await caught(infer(good)),
    }


async def kserve(job: dict[str, Any]) -> dict[str, Any]:
    from kserve import InferenceGRPCClient, InferenceRESTClient, RESTConfig

    h = {"authorization": f"Bearer {job['token']}"}
    grpc_client = InferenceGRPCClient(job["grpc"], timeout=60)
    rest_client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
    base = f"http://{job['http']}"
    out: dict[str, Any] = {"grpc": {"models": {}}, "rest": {"models": {}}}

    out["grpc"]["live"] = await caught(grpc_client.is_server_live(headers=tuple(h.items())))
    out["grpc"]["ready"] = await caught(grpc_client.is_server_ready(headers=tuple(h.items())))
    out["rest"]["live"] = await caught(rest_client.is_server_live(base, headers=h))
    out["rest"]["ready"] = await caught(rest_client.is_server_ready(base, headers=h))
    for name, m in job["models"].items():
        for kind in ("grpc", "rest"):
            out[kind]["models"][name] = await kserve_model(grpc_client, rest_client, base, h, kind, name, m)
    await grpc_client.close()
    await rest_client.close()
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, bytes):
        return x.decode("utf-8", "replace")
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


if __name__ == "__main__":
    job = json.load(sys.stdin)
    try:
        if sys.argv[1] == "triton":
            result = {"triton_grpc": triton("grpc", job), "triton_http": triton("http", job)}
        else:
            result = {"kserve": asyncio.run(kserve(job))}
    except Exception:  # noqa: BLE001
        print(json.dumps({"crash": traceback.format_exc()}))
        sys.exit(1)
    print(json.dumps(_jsonable(result)))
