"""The standard ``inference.GRPCInferenceService`` over grpc.aio, as a generic handler: requests
arrive as bytes, so metadata RPCs reach TorchServe without being decoded here at all."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from zooserve._proto import grpc_predict_v2_pb2 as v2pb
from zooserve.errors import InvalidTensor, ServiceError
from zooserve.serving.calls import REQUEST_ID
from zooserve.serving.v2.backend import Metadata
from zooserve.serving.v2.frontend import CallContext, Frontend, message
from zooserve.serving.v2.metrics import Metrics
from zooserve.serving.v2.pbconv import answer_to_pb, call_from_pb

SERVICE = "inference.GRPCInferenceService"
log = logging.getLogger(__name__)
Method = Callable[[bytes, Metadata, CallContext], Awaitable[bytes]]


def _parse(cls: Any, data: bytes) -> Any:
    try:
        return cls.FromString(data)
    except DecodeError:
        raise InvalidTensor(f"request is not a valid {cls.DESCRIPTOR.full_name}") from None


def _auth(context: grpc.aio.ServicerContext) -> Metadata:
    return tuple((k, v) for k, v in (context.invocation_metadata() or ()) if k == "authorization")


def _context(context: grpc.aio.ServicerContext) -> CallContext:
    """The call's request id (metadata ``x-request-id``) and gRPC deadline, for the gateway."""
    rid = dict(context.invocation_metadata() or ()).get(REQUEST_ID)
    return CallContext("v2-grpc", rid if isinstance(rid, str) else None, context.time_remaining())


def methods(front: Frontend) -> dict[str, Method]:
    async def server_metadata(_req: bytes, auth: Metadata, _ctx: CallContext) -> bytes:
        return v2pb.ServerMetadataResponse(**await front.server_metadata(auth)).SerializeToString()

    async def model_ready(req: bytes, auth: Metadata, _ctx: CallContext) -> bytes:
        r = _parse(v2pb.ModelReadyRequest, req)
        front.catalog.get(r.name)  # a name that cannot be a model is NOT_FOUND, before TorchServe
        return await front.forward("ModelReady", req, auth)

    async def model_metadata(req: bytes, auth: Metadata, _ctx: CallContext) -> bytes:
        r = _parse(v2pb.ModelMetadataRequest, req)
        return (await front.model_metadata(r.name, r.version, auth)).SerializeToString()

    async def model_infer(req: bytes, auth: Metadata, ctx: CallContext) -> bytes:
        pb = _parse(v2pb.ModelInferRequest, req)
        unchanged = req if not pb.raw_input_contents else None
        answer = await front.infer(call_from_pb(pb), auth, raw=unchanged, ctx=ctx)
        return answer_to_pb(answer).SerializeToString()

    async def passthrough(name: str, req: bytes, auth: Metadata, _ctx: CallContext) -> bytes:
        return await front.forward(name, req, auth)

    return {
        "ServerLive": lambda req, auth, ctx: passthrough("ServerLive", req, auth, ctx),
        "ServerReady": lambda req, auth, ctx: passthrough("ServerReady", req, auth, ctx),
        "ModelReady": model_ready,
        "ServerMetadata": server_metadata,
        "ModelMetadata": model_metadata,
        "ModelInfer": model_infer,
    }


def handler(front: Frontend, metrics: Metrics) -> grpc.GenericRpcHandler:
    def unary(name: str, method: Method) -> grpc.RpcMethodHandler:
        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            with metrics.track("grpc", name) as outcome:
                try:
                    return await method(request, _auth(context), _context(context))
                except ServiceError as err:
                    outcome.code = err.grpc_code
                    await context.abort(grpc.StatusCode[err.grpc_code], message(err))
                except Exception as err:
                    if isinstance(err, grpc.aio.AbortError):
                        raise
                    log.exception("%s failed", name)
                    outcome.code = "INTERNAL"
                    await context.abort(
                        grpc.StatusCode.INTERNAL, f"InferenceFailed: {type(err).__name__}: {err}"
                    )
            raise AssertionError("unreachable")  # abort() raises

        return grpc.unary_unary_rpc_method_handler(handle)

    return grpc.method_handlers_generic_handler(SERVICE, {n: unary(n, m) for n, m in methods(front).items()})


def server(front: Frontend, metrics: Metrics, address: str, max_message_bytes: int) -> grpc.aio.Server:
    srv = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
        ]
    )
    srv.add_generic_rpc_handlers((handler(front, metrics),))
    srv.add_insecure_port(address)
    return srv
