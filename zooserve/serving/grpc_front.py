"""TorchServe's gRPC APIs (``inference.proto``, ``management.proto``) as the gateway serves them.

Messages pass through as bytes. ``Predictions`` is admitted like a REST call: its deadline is the
call's gRPC deadline (else the model's default), and the deadline and request id reach the
handler as extra input-map entries, appended to the serialized request (protobuf merges repeated
and map fields of concatenated messages, so nothing is re-encoded). A request that failed alone
in its batch comes back from TorchServe as OK with our JSON error: here it becomes the gRPC status
of that error (the same table as REST), with the JSON in the details. The request id goes back in
the initial metadata (TorchServe's gRPC answers carry no handler timing: the gateway's stage
histograms and spans are filled by REST calls). Management: as over REST, registration only of a
store archive, and unregistering or scaling down drains the model first.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from zooserve import errors
from zooserve._proto import inference_pb2, management_pb2
from zooserve.errors import DeadlineExceeded, Overloaded, RequestError, ServiceError
from zooserve.serving.calls import REQUEST_ID
from zooserve.serving.dispatch import Dispatcher, handler_worked
from zooserve.serving.rest_front import DRAIN_TIMEOUT_S, check_archive, registering
from zooserve.serving.upstream import Backend

INFERENCE = "org.pytorch.serve.grpc.inference.InferenceAPIsService"
MANAGEMENT = "org.pytorch.serve.grpc.management.ManagementAPIsService"
log = logging.getLogger(__name__)
Unary = Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]


def _metadata(context: grpc.aio.ServicerContext) -> list[tuple[str, str]]:
    return [(k, v) for k, v in (context.invocation_metadata() or ()) if not k.startswith(":")]


async def _abort(context: grpc.aio.ServicerContext, err: ServiceError) -> None:
    trailers: tuple[tuple[str, str], ...] = ()
    if isinstance(err, Overloaded):
        trailers = (("retry-after", str(err.retry_after_s)),)
    context.set_trailing_metadata(trailers)
    await context.abort(grpc.StatusCode[err.grpc_code], json.dumps(err.to_json()))


def inference_handler(backend: Backend, dispatcher: Dispatcher) -> grpc.GenericRpcHandler:
    channel = backend.grpc_inference

    def forward(method: str) -> Any:
        return channel.unary_unary(f"/{INFERENCE}/{method}")

    predictions, ping = forward("Predictions"), forward("Ping")

    async def predict(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        metadata = _metadata(context)
        auth = dict(metadata).get("authorization")
        try:
            model = inference_pb2.PredictionsRequest.FromString(request).model_name
        except Exception:  # noqa: BLE001 - undecodable bytes: TorchServe says what it says
            return await predictions(request, metadata=metadata)
        if not backend.keys.allows(auth, "inference"):
            return await _unary(predictions, request, metadata, context)
        remaining = context.time_remaining()
        try:
            async with dispatcher.call("grpc", model, dict(metadata).get(REQUEST_ID), remaining) as outcome:
                call = outcome.call
                await context.send_initial_metadata(((REQUEST_ID, call.request_id),))
                extra = inference_pb2.PredictionsRequest(
                    input={k: v.encode() for k, v in call.forward_headers().items()}
                ).SerializeToString()
                try:
                    reply = await outcome.forward(
                        predictions(request + extra, metadata=metadata, timeout=outcome.budget()),
                        _worked,
                    )
                except DeadlineExceeded:
                    outcome.code = "DEADLINE_EXCEEDED"
                    raise
                except grpc.aio.AioRpcError as e:
                    outcome.code = e.code().name
                    if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                        raise DeadlineExceeded("no answer before the request's deadline") from None
                    if "ModelNotFoundException" in (e.details() or "") or "ModelVersionNotFound" in (
                        e.details() or ""
                    ):
                        await context.abort(grpc.StatusCode.NOT_FOUND, e.details() or "")
                    await context.abort(e.code(), e.details() or "")
                    raise AssertionError("unreachable") from None
                err = _error_in(reply)  # (TorchServe's gRPC answer carries no handler timing)
                outcome.code = err.grpc_code if err else "OK"
                if err is not None:
                    await _abort(context, err)
                return reply
        except ServiceError as e:
            await _abort(context, e)
        raise AssertionError("unreachable")  # abort() raises

    async def health(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await _unary(ping, request, _metadata(context), context)

    handlers = {
        "Predictions": grpc.unary_unary_rpc_method_handler(predict),
        "Ping": grpc.unary_unary_rpc_method_handler(health),
        "StreamPredictions": grpc.unary_stream_rpc_method_handler(
            _stream_through(channel.unary_stream(f"/{INFERENCE}/StreamPredictions"))
        ),
        "StreamPredictions2": grpc.stream_stream_rpc_method_handler(
            _bidi_through(channel.stream_stream(f"/{INFERENCE}/StreamPredictions2"))
        ),
    }
    return grpc.method_handlers_generic_handler(INFERENCE, handlers)


def _worked(reply: bytes) -> bool:
    return handler_worked(inference_pb2.PredictionResponse.FromString(reply).prediction)


def _error_in(reply: bytes) -> ServiceError | None:
    """Our JSON error body inside an OK reply (TorchServe drops per-request statuses)."""
    text = inference_pb2.PredictionResponse.FromString(reply).prediction
    if not text.startswith(b'{"code":'):
        return None
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("code"), int) and body["code"] >= 400:
        return errors.from_json(body)
    return None


async def _unary(method: Any, request: bytes, metadata: Any, context: grpc.aio.ServicerContext) -> bytes:
    """Forward one unary call; TorchServe's failure becomes this call's, status and details."""
    try:
        return await method(request, metadata=metadata, timeout=context.time_remaining())
    except grpc.aio.AioRpcError as e:
        await context.abort(e.code(), e.details() or "")
    raise AssertionError("unreachable")


def _stream_through(method: Any) -> Any:
    async def handle(request: bytes, context: grpc.aio.ServicerContext) -> Any:
        async for reply in method(request, metadata=_metadata(context), timeout=context.time_remaining()):
            yield reply

    return handle


def _bidi_through(method: Any) -> Any:
    async def handle(requests: Any, context: grpc.aio.ServicerContext) -> Any:
        async for reply in method(requests, metadata=_metadata(context), timeout=context.time_remaining()):
            yield reply

    return handle


def management_handler(backend: Backend, dispatcher: Dispatcher, model_store: Path) -> grpc.GenericRpcHandler:
    channel = backend.grpc_management

    def method(name: str) -> Any:
        return channel.unary_unary(f"/{MANAGEMENT}/{name}")

    def through(name: str) -> Unary:
        forward = method(name)

        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await _unary(forward, request, _metadata(context), context)

        return handle

    async def register(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        asked = management_pb2.RegisterModelRequest.FromString(request)
        try:
            check_archive(asked.url, model_store)
        except RequestError as e:
            await _abort(context, e)
        forward = through("RegisterModel")(request, context)
        if not backend.keys.allows(dict(_metadata(context)).get("authorization"), "management"):
            return await forward  # TorchServe refuses it
        model = asked.model_name or asked.url.removesuffix(".mar")
        # errors raise; a synchronous registration answers once the model admits calls
        return await registering(backend, dispatcher, model, forward, lambda _: True, asked.synchronous)

    def draining(name: str, model_of: Callable[[bytes], str | None]) -> Unary:
        forward = through(name)

        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            auth = dict(_metadata(context)).get("authorization")
            model = model_of(request) if backend.keys.allows(auth, "management") else None
            if model is None:
                return await forward(request, context)
            await dispatcher.admission.drain(model, DRAIN_TIMEOUT_S)
            try:
                return await forward(request, context)
            finally:
                dispatcher.admission.reopen(model)

        return handle

    def unregistered(request: bytes) -> str | None:
        return management_pb2.UnregisterModelRequest.FromString(request).model_name or None

    def scaled(request: bytes) -> str | None:
        # a scale request with no drain: draining is harmless, a dropped request is not
        return management_pb2.ScaleWorkerRequest.FromString(request).model_name or None

    handlers: dict[str, Unary] = {
        name: through(name) for name in ("DescribeModel", "ListModels", "SetDefault")
    }
    handlers |= {
        "RegisterModel": register,
        "UnregisterModel": draining("UnregisterModel", unregistered),
        "ScaleWorker": draining("ScaleWorker", scaled),
    }
    return grpc.method_handlers_generic_handler(
        MANAGEMENT, {n: grpc.unary_unary_rpc_method_handler(h) for n, h in handlers.items()}
    )
