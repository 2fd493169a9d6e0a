"""``Client(protocol="v2")``: the same predictions through the standard Open Inference Protocol
front-end (``inference.GRPCInferenceService`` on the v2 gRPC port, ``/v2`` REST on the v2 HTTP
port), with the same typed errors. Imports no torch and no server code.

The model's input name comes from its v2 metadata (asked once per model); request options
(``X-TopK``, ``X-Attention`` headers) become v2 request parameters (``topk``, ``attention``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import grpc
import requests
from google.protobuf.json_format import MessageToDict

from zooserve import errors
from zooserve.serving import grpc_stubs
from zooserve.serving.v2.pbconv import answer_from_pb, call_to_pb
from zooserve.serving.v2.tensors import InferCall, Tensor, to_raw

if TYPE_CHECKING:
    from zooserve.client import Client

SERVICE = "/inference.GRPCInferenceService"
GRPC_TO_HTTP = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,
    "UNAVAILABLE": 503,
}


def error_from(message: str, status: int) -> errors.ServiceError:
    """``"InvalidImage: cannot decode"`` (what the front-end sends) -> ``errors.InvalidImage``."""
    kind, _, text = message.partition(": ")
    return errors.from_json({"type": kind, "message": text or message, "code": status})


def _element(data: bytes | str | dict[str, Any]) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    raise errors.ConfigError("protocol='v2' sends image bytes or text (options go in headers: X-TopK, ...)")


def _parameters(headers: dict[str, str] | None) -> dict[str, Any]:
    return {k.lower().removeprefix("x-"): v for k, v in (headers or {}).items() if k.lower().startswith("x-")}


class V2:
    """The v2 calls of one ``Client`` (its host, token, timeout)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self._inputs: dict[tuple[str, str], str] = {}
        self._calls: dict[str, Any] = {}
        self._channel: Any = None

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel, self._calls = None, {}

    # ---- gRPC --------------------------------------------------------------------------------
    def _grpc(self, method: str) -> Any:
        if method not in self._calls:
            pb = grpc_stubs.load("grpc_predict_v2_pb2")
            if self._channel is None:
                self._channel = grpc.insecure_channel(f"{self.client.host}:{self.client.v2_grpc_port}")
            self._calls[method] = self._channel.unary_unary(
                f"{SERVICE}/{method}",
                request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=getattr(pb, f"{method}Response").FromString,
            )
        return self._calls[method]

    def _grpc_call(self, method: str, request: Any) -> Any:
        metadata = [(k.lower(), v) for k, v in self.client._auth().items()]
        try:
            return self._grpc(method)(request, metadata=metadata, timeout=self.client.timeout)
        except grpc.RpcError as e:
            code = e.code().name
            err = error_from(e.details() or code, GRPC_TO_HTTP.get(code, 500))
            err.grpc_code = code  # type: ignore[misc]
            raise err from None

    # ---- REST --------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return f"http://{self.client.host}:{self.client.v2_port}/v2/{path}"

    def _rest(
        self, method: str, path: str, data: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Any:
        session, url = self.client._session, self._url(path)

        def attempt(left: float) -> Any:
            hdrs = {**self.client._auth(), "X-Request-Timeout-Ms": str(int(left * 1e3)), **(headers or {})}
            try:
                r = session.request(method, url, data=data, headers=hdrs, timeout=left)
            except requests.RequestException as e:
                raise errors.ServerError(
                    f"cannot reach the v2 front-end at {url}: {type(e).__name__}"
                ) from None
            if r.status_code != 200:
                try:
                    message = r.json().get("error", r.text)
                except ValueError:
                    message = r.text
                raise error_from(str(message), r.status_code)
            return r

        return self.client._retrying(attempt, None)

    # ---- calls -------------------------------------------------------------------------------
    def metadata(self, model: str, version: str = "", grpc: bool = False) -> dict[str, Any]:
        if not grpc:
            return self._rest("GET", f"models/{model}" + (f"/versions/{version}" if version else "")).json()
        req = grpc_stubs.load("grpc_predict_v2_pb2").ModelMetadataRequest(name=model, version=version)
        return MessageToDict(self._grpc_call("ModelMetadata", req), preserving_proto_field_name=True)

    def input_name(self, model: str, version: str, grpc: bool) -> str:
        key = (model, version)
        if key not in self._inputs:
            self._inputs[key] = self.metadata(model, version, grpc)["inputs"][0]["name"]
        return self._inputs[key]

    def predict(
        self,
        model: str,
        data: bytes | str | dict[str, Any],
        headers: dict[str, str] | None = None,
        grpc: bool = False,
        version: str | None = None,
    ) -> dict[str, Any]:
        element = _element(data)
        name = self.input_name(model, version or "", grpc)
        call = InferCall(
            model, version or "", "", [Tensor(name, "BYTES", [1], [element])], _parameters(headers)
        )
        call.outputs = ["predictions"]
        if grpc:
            answer = answer_from_pb(self._grpc_call("ModelInfer", call_to_pb(call)))
            return json.loads(answer.outputs[0].data[0])
        head = json.dumps(
            {
                "inputs": [
                    {
                        "name": name,
                        "datatype": "BYTES",
                        "shape": [1],
                        "parameters": {"binary_data_size": len(to_raw(call.inputs[0]))},
                    }
                ],
                "outputs": [{"name": "predictions"}],
                **({"parameters": call.parameters} if call.parameters else {}),
            }
        ).encode()
        r = self._rest(
            "POST",
            f"models/{model}" + (f"/versions/{version}" if version else "") + "/infer",
            data=head + to_raw(call.inputs[0]),
            headers={
                "Inference-Header-Content-Length": str(len(head)),
                "Content-Type": "application/octet-stream",
            },
        )
        return json.loads(r.json()["outputs"][0]["data"][0])
