"""Python client for zooserve: REST and gRPC, same payloads, same typed errors.

Reads TorchServe's token key file (again on every call: tokens are renewed), gives every call a
deadline that the server counts queue time against (``X-Request-Timeout-Ms`` / the gRPC
deadline), retries what the server says to retry (503 ``Overloaded`` with its ``Retry-After``,
gRPC UNAVAILABLE, no connection) with jittered backoff within that deadline, and raises the typed
error of any other answer.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import requests

from zooserve import errors
from zooserve.client_v2 import V2
from zooserve.serving import grpc_stubs

DEFAULT_KEY_FILE = Path(".zooserve/key_file.json")
TIMEOUT_HEADER = "X-Request-Timeout-Ms"  # the gateway counts queue time against it


def read_token(key_file: Path, which: str = "inference") -> str | None:
    if not key_file.is_file():
        return None
    data = json.loads(key_file.read_text("utf-8"))
    entry = data.get(which)
    return entry.get("key") if isinstance(entry, dict) else None


def payload(data: bytes | str | dict[str, Any]) -> tuple[bytes, str]:
    """Body bytes and content type: images as octet-stream, text as UTF-8, dicts as JSON."""
    if isinstance(data, bytes):
        return data, "application/octet-stream"
    if isinstance(data, str):
        return data.encode("utf-8"), "text/plain; charset=utf-8"
    return json.dumps(data).encode("utf-8"), "application/json"


# TorchServe's own error types for what our table names otherwise
TORCHSERVE_TYPES = {
    "ModelNotFoundException": "ModelNotFound",
    "ModelVersionNotFoundException": "ModelNotFound",
}


def _error_from(status: int, text: str, retry_after: str | None = None) -> errors.ServiceError:
    """The typed error of a non-200 answer: ours by its JSON ``type``, anything else as RemoteError."""
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict) and "type" in body:
        err = errors.from_json(body | {"type": TORCHSERVE_TYPES.get(body["type"], body["type"])}, status)
    else:
        err = errors.RemoteError(f"HTTP {status}: {text[:200]}", status)
    if isinstance(err, errors.Overloaded) and retry_after and retry_after.isdigit():
        err.retry_after_s = int(retry_after)
    return err


@dataclass
class Client:
    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int = 7070
    key_file: Path = DEFAULT_KEY_FILE
    token: str | None = None  # overrides the key file
    timeout: float = 60.0
    retries: int = 3
    protocol: str = "torchserve"  # or "v2": the standard Open Inference Protocol front-end
    v2_port: int = 8000
    v2_grpc_port: int = 8001

    def __post_init__(self) -> None:
        self._session = requests.Session()
        self._channel: Any = None
        if self.protocol not in ("torchserve", "v2"):
            raise errors.ConfigError(f"protocol must be 'torchserve' or 'v2', not {self.protocol!r}")
        self.v2 = V2(self)

    # ---- REST ----------------------------------------------------------------------------------
    def _auth(self) -> dict[str, str]:
        token = self.token or read_token(self.key_file)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def predict(
        self,
        model: str,
        data: bytes | str | dict[str, Any],
        headers: dict[str, str] | None = None,
        grpc: bool = False,
        version: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """One prediction within ``timeout`` seconds (default ``self.timeout``), retries included;
        raises the server's typed error (``errors.InvalidImage``...) on 4xx."""
        if self.protocol == "v2":
            return self.v2.predict(model, data, headers, grpc, version)
        if grpc:
            return self.predict_grpc(model, data, headers, version, timeout)
        body, ctype = payload(data)
        url = f"http://{self.host}:{self.port}/predictions/{model}" + (f"/{version}" if version else "")

        def attempt(left: float) -> Any:
            hdrs = {
                "Content-Type": ctype,
                TIMEOUT_HEADER: str(int(left * 1e3)),
                **self._auth(),
                **(headers or {}),
            }
            try:
                r = self._session.post(url, data=body, headers=hdrs, timeout=left)
            except requests.Timeout:
                raise errors.DeadlineExceeded(f"no answer within {left:.1f} s") from None
            except requests.ConnectionError as e:
                raise errors.ServerError(
                    f"cannot reach zooserve at {self.host}:{self.port}: {type(e).__name__}"
                ) from None
            if r.status_code != 200:
                raise _error_from(r.status_code, r.text, r.headers.get("Retry-After"))
            return r.json()

        return self._retrying(attempt, timeout)

    def ping(self) -> bool:
        try:
            return self._session.get(
                f"http://{self.host}:{self.port}/ping", headers=self._auth(), timeout=5
            ).ok
        except requests.RequestException:
            return False

    def _retrying(self, attempt: Callable[[float], Any], timeout: float | None) -> Any:
        """``attempt(seconds_left)`` until it answers; a refusal the server says to retry (503
        ``Overloaded``, gRPC UNAVAILABLE, no connection) is retried after a jittered backoff (or the
        server's Retry-After) while the deadline allows, at most ``retries`` times."""
        deadline = time.monotonic() + (timeout or self.timeout)
        for n in range(self.retries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                raise errors.DeadlineExceeded(f"no answer within {timeout or self.timeout:g} s")
            try:
                return attempt(left)
            except (errors.Overloaded, errors.ServerError) as e:
                wait = getattr(e, "retry_after_s", None) or 0.1 * 2**n
                wait = random.uniform(0.5, 1.0) * min(wait, 5.0)  # jitter: retries do not arrive together
                if n == self.retries or time.monotonic() + wait >= deadline:
                    raise
                time.sleep(wait)
        raise AssertionError("unreachable")

    # ---- gRPC ----------------------------------------------------------------------------------
    def _grpc_channel(self) -> Any:
        if self._channel is None:
            self._channel = grpc.insecure_channel(f"{self.host}:{self.grpc_port}")
        return self._channel

    def _stub(self) -> Any:
        return grpc_stubs.load("inference_pb2_grpc").InferenceAPIsServiceStub(self._grpc_channel())

    def predict_grpc(
        self,
        model: str,
        data: bytes | str | dict[str, Any],
        headers: dict[str, str] | None = None,
        version: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        pb2 = grpc_stubs.load("inference_pb2")
        body, ctype = payload(data)
        # TorchServe hands each input map entry to the handler as a named field: the content type
        # and options (x-topk, x-attention) ride along as entries, as headers do over REST
        inputs = {
            "data": body,
            "content-type": ctype.encode(),
            **{k.lower(): v.encode() for k, v in (headers or {}).items()},
        }
        request = pb2.PredictionsRequest(model_name=model, model_version=version or "", input=inputs)

        def attempt(left: float) -> Any:
            metadata = [(k.lower(), v) for k, v in self._auth().items()]
            try:
                reply = self._stub().Predictions(request, metadata=metadata, timeout=left)
            except grpc.RpcError as e:
                raise grpc_error(e) from None
            return _checked(json.loads(reply.prediction))

        return self._retrying(attempt, timeout)

    def predict_v2(self, model: str, data: bytes | str, version: str = "") -> dict[str, Any]:
        """The same prediction through the standard Open Inference Protocol (v2) gRPC service
        (``inference.GRPCInferenceService`` on the v2 gRPC port)."""
        return self.v2.predict(model, data, grpc=True, version=version or None)

    def close(self) -> None:
        self.v2.close()
        self._session.close()
        if self._channel is not None:
            self._channel.close()


def _checked(body: Any) -> Any:
    """TorchServe 0.12's gRPC frontend drops per-request status codes (only whole-batch failures
    become gRPC errors), so a request that failed alone arrives as OK carrying our error body."""
    if (
        isinstance(body, dict)
        and isinstance(body.get("code"), int)
        and body["code"] >= 400
        and "type" in body
    ):
        raise _error_from(body["code"], json.dumps(body))
    return body


# gRPC status -> the HTTP status REST answers in the same situation
GRPC_TO_HTTP = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}


def grpc_error(e: Any) -> errors.ZooError:
    """A gRPC failure as the same typed error REST would raise (TorchServe puts the body in details)."""
    code = e.code().name
    details = e.details() or ""
    status = GRPC_TO_HTTP.get(code, 500)
    if details.lstrip().startswith("{"):
        return _error_from(status, details)
    if (
        code == "NOT_FOUND"
        or "ModelNotFoundException" in details
        or "ModelVersionNotFoundException" in details
    ):
        return errors.ModelNotFound(details.splitlines()[0] if details else "model not found")
    if code == "UNAVAILABLE":
        return errors.Overloaded(f"gRPC {code}: {details}")
    if code == "DEADLINE_EXCEEDED":
        return errors.DeadlineExceeded(f"gRPC {code}: {details}")
    return errors.RemoteError(f"gRPC {code}: {details}", status, code)
