"""The v2 operations, shared by the gRPC and REST forms: health, metadata and inference.

Authorization is TorchServe's own: every operation makes at least one call to TorchServe with the
caller's ``authorization`` metadata, so a wrong token fails exactly as it would there (mapped to
UNAUTHENTICATED / 401). Inference is forwarded per batch element, so TorchServe's batching and the
handler's per-request errors apply to each element; a call fails as a whole when any element does
(as Triton does), with the element's own error type.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError

from zooserve import __version__, errors
from zooserve._proto import grpc_predict_v2_pb2 as v2pb
from zooserve._proto import open_inference_grpc_pb2 as tspb
from zooserve.errors import DeadlineExceeded, InvalidTensor, ModelNotFound, ServiceError
from zooserve.serving.catalog import ModelInfo
from zooserve.serving.dispatch import Dispatcher, handler_worked
from zooserve.serving.v2.backend import Backend, Metadata
from zooserve.serving.v2.metrics import Metrics
from zooserve.serving.v2.tasks import Prediction, spec_for
from zooserve.serving.v2.tensors import InferAnswer, InferCall

SERVER_NAME = "zooserve"
EXTENSIONS = ("binary_tensor_data", "parameters")
MAX_BATCH = 64  # elements in one call; each becomes a TorchServe request
# request parameters that steer the protocol itself, not the model
RESERVED_PARAMETERS = {
    "binary_data_output",
    "sequence_id",
    "sequence_start",
    "sequence_end",
    "priority",
    "timeout",
}


class Frontend:
    def __init__(self, backend: Backend, dispatcher: Dispatcher, metrics: Metrics) -> None:
        self.backend = backend
        self.dispatcher = dispatcher
        self.catalog = dispatcher.catalog
        self.metrics = metrics

    # ---- health and metadata -------------------------------------------------------------------
    async def forward(self, method: str, request: bytes, auth: Metadata) -> bytes:
        """ServerLive / ServerReady / ModelReady: the standard message as TorchServe's (same wire)."""
        return await self.backend.call(method, request, auth)

    async def live(self, auth: Metadata) -> bool:
        return v2pb.ServerLiveResponse.FromString(await self.forward("ServerLive", b"", auth)).live

    async def ready(self, auth: Metadata) -> bool:
        return v2pb.ServerReadyResponse.FromString(await self.forward("ServerReady", b"", auth)).ready

    async def model_ready(self, name: str, version: str, auth: Metadata) -> bool:
        self.catalog.get(name)  # rejects names that cannot be a model
        req = v2pb.ModelReadyRequest(name=name, version=version).SerializeToString()
        return v2pb.ModelReadyResponse.FromString(await self.forward("ModelReady", req, auth)).ready

    async def server_metadata(self, auth: Metadata) -> dict[str, Any]:
        await self.live(auth)  # TorchServe has no ServerMetadata RPC; this checks the token
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    async def model_metadata(self, name: str, version: str, auth: Metadata) -> v2pb.ModelMetadataResponse:
        """TorchServe's answer (name, versions; it checks the token and the model) with the
        platform and tensors filled in from the task."""
        info = self.catalog.get(name)
        req = v2pb.ModelMetadataRequest(name=name, version=version).SerializeToString()
        meta = v2pb.ModelMetadataResponse.FromString(await self.forward("ModelMetadata", req, auth))
        meta.platform = info.platform
        task = spec_for(info.task)
        for spec, field in ((task.input,), meta.inputs), (task.outputs, meta.outputs):
            field.extend(v2pb.ModelMetadataResponse.TensorMetadata(**s.as_dict()) for s in spec)
        return meta

    # ---- inference -----------------------------------------------------------------------------
    async def infer(
        self, call: InferCall, auth: Metadata, raw: bytes | None = None, ctx: CallContext | None = None
    ) -> InferAnswer:
        """``raw``: the serialized standard request when it came over gRPC; forwarded as it is
        when TorchServe can take it so (one element, typed contents, no parameters). Each element
        is one admitted call of the gateway (``ctx``: protocol, request id, timeout)."""
        ctx = ctx or CallContext("v2")
        info = self.catalog.get(call.model)
        if info.task is None:  # not a zooserve archive: let TorchServe say whether it exists
            await self.forward(
                "ModelMetadata", v2pb.ModelMetadataRequest(name=call.model).SerializeToString(), auth
            )
        elements = check_call(call, info)
        options = _options(call.parameters)
        if raw is not None and len(elements) == 1 and not options:
            requests = [raw]
        else:
            requests = [_ts_request(call, info, e, options) for e in elements]
        self.metrics.count_elements(call.model if info.task else "other", len(requests))
        if len(requests) == 1:
            replies: list[bytes | BaseException] = [await self._admitted(call.model, requests[0], auth, ctx)]
        else:
            replies = await asyncio.gather(
                *(self._admitted(call.model, r, auth, ctx) for r in requests), return_exceptions=True
            )
        predictions = [_prediction(reply, i, len(replies)) for i, reply in enumerate(replies)]
        outputs = spec_for(info.task).answer(predictions)
        if call.outputs:
            by_name = {t.name: t for t in outputs}
            outputs = [by_name[n] for n in call.outputs]
        return InferAnswer(call.model, call.version, call.id, outputs)

    async def _admitted(self, model: str, request: bytes, auth: Metadata, ctx: CallContext) -> bytes:
        """One element to TorchServe as an admitted call: its deadline and id ride along as extra
        ``x-NAME`` inputs, appended to the serialized request (protobuf merges repeated fields)."""
        async with self.dispatcher.call(ctx.protocol, model, ctx.request_id, ctx.timeout_s) as outcome:
            extra = tspb.ModelInferRequest()
            for name, value in outcome.call.forward_headers().items():
                extra.inputs.add(name=name, datatype="BYTES", shape=[1]).contents.bytes_contents.append(
                    value.encode()
                )
            try:
                sent = request + extra.SerializeToString()
                reply = await outcome.forward(
                    self.backend.call("ModelInfer", sent, auth, outcome.budget()), _worked
                )
            except DeadlineExceeded:
                outcome.code = "DEADLINE_EXCEEDED"
                raise
            outcome.code = "OK"
            return reply


@dataclass(frozen=True)
class CallContext:
    protocol: str  # label of the gateway's metrics: "v2-grpc", "v2-rest"
    request_id: str | None = None
    timeout_s: float | None = None


def check_call(call: InferCall, info: ModelInfo) -> list[bytes]:
    """The call's elements, or InvalidTensor saying what does not fit the model (Triton's wording)."""
    if not call.model:
        raise ModelNotFound("model name is required")
    want = spec_for(info.task).input
    if len(call.inputs) != 1:
        raise InvalidTensor(
            f"expected 1 input ({want.name!r}) for model {call.model!r}, got {len(call.inputs)}"
        )
    tensor = call.inputs[0]
    if tensor.name != want.name:
        raise InvalidTensor(
            f"unexpected inference input {tensor.name!r} for model {call.model!r} (expects {want.name!r})"
        )
    if tensor.datatype != want.datatype:
        raise InvalidTensor(
            f"inference input {tensor.name!r} data-type is {tensor.datatype!r}, "
            f"but model {call.model!r} expects {want.datatype!r}"
        )
    shape = tensor.shape
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)) or shape[0] < 1:
        raise InvalidTensor(f"input {tensor.name!r} has shape {shape}; expected [N] or [N, 1] with N >= 1")
    if shape[0] > MAX_BATCH:
        raise InvalidTensor(f"batch of {shape[0]} elements is over the limit of {MAX_BATCH}")
    if len(tensor.data) != shape[0]:
        raise InvalidTensor(f"input {tensor.name!r} has {len(tensor.data)} elements but shape {shape}")
    unknown = [n for n in call.outputs if n not in spec_for(info.task).output_names()]
    if unknown:
        raise InvalidTensor(f"unexpected inference output {unknown[0]!r} for model {call.model!r}")
    return [bytes(e) for e in tensor.data]


def _options(parameters: dict[str, Any]) -> list[tuple[str, bytes]]:
    """Request parameters the handler reads as options (``topk``, ``attention``), passed to it as
    extra ``x-NAME`` BYTES inputs, since TorchServe 0.12 drops OIP request parameters."""
    out = []
    for key, value in parameters.items():
        if key in RESERVED_PARAMETERS or key.startswith("triton_"):
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        out.append((f"x-{key.lower()}", text.encode()))
    return out


def _ts_request(call: InferCall, info: ModelInfo, element: bytes, options: list[tuple[str, bytes]]) -> bytes:
    req = tspb.ModelInferRequest(model_name=call.model, model_version=call.version, id=call.id)
    for name, value in [(spec_for(info.task).input.name, element), *options]:
        req.inputs.add(name=name, datatype="BYTES", shape=[1]).contents.bytes_contents.append(value)
    return req.SerializeToString()


def _worked(reply: bytes) -> bool:
    try:
        return handler_worked(tspb.ModelInferResponse.FromString(reply).outputs[0].contents.bytes_contents[0])
    except (IndexError, DecodeError):
        return False


def _prediction(reply: bytes | BaseException, index: int, count: int) -> Prediction:
    """The handler's JSON body for one element; its error body becomes that typed error."""
    if isinstance(reply, BaseException):  # TorchServe refused the call (token, model, ...)
        raise reply
    where = f"element {index}: " if count > 1 else ""
    try:
        text = tspb.ModelInferResponse.FromString(reply).outputs[0].contents.bytes_contents[0]
        body = json.loads(text)
    except (IndexError, ValueError) as e:
        raise errors.InferenceFailed(
            f"{where}TorchServe answered without a prediction ({type(e).__name__})"
        ) from None
    if (
        isinstance(body, dict)
        and isinstance(body.get("code"), int)
        and body["code"] >= 400
        and "type" in body
    ):
        err = errors.from_json(body)
        if where:
            err.args = (f"{where}{err}",)
        raise err
    if not isinstance(body, dict):
        raise errors.InferenceFailed(f"{where}TorchServe answered {type(body).__name__}, not a JSON object")
    return Prediction(body, text)


def message(err: ServiceError) -> str:
    """What the client sees: our error type, then the message (``InvalidImage: cannot decode``)."""
    return f"{err.type}: {err}"
