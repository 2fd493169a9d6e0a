"""TorchServe's own Open Inference service (``org.pytorch.serve.grpc.openinference``) as the
front-end's backend: serialized messages in and out, failures as zooserve's typed errors."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from zooserve.errors import (
    DeadlineExceeded,
    InferenceFailed,
    ModelNotFound,
    Overloaded,
    PayloadTooLarge,
    ServiceError,
    Unauthorized,
)

SERVICE = "org.pytorch.serve.grpc.openinference.GRPCInferenceService"
METHODS = ("ServerLive", "ServerReady", "ModelReady", "ModelMetadata", "ModelInfer")
Metadata = Sequence[tuple[str, str]]


class Backend:
    def __init__(self, target: str, max_message_bytes: int, timeout: float = 130.0) -> None:
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self.target = target
        self.timeout = timeout
        self.channel = grpc.aio.insecure_channel(target, options=options)
        # no (de)serializers: bytes pass through as they are
        self._calls = {m: self.channel.unary_unary(f"/{SERVICE}/{m}") for m in METHODS}

    async def call(
        self, method: str, request: bytes, metadata: Metadata, timeout: float | None = None
    ) -> bytes:
        try:
            return await self._calls[method](request, metadata=metadata, timeout=timeout or self.timeout)
        except grpc.aio.AioRpcError as e:
            raise backend_error(e.code(), e.details() or "") from None

    async def close(self) -> None:
        await self.channel.close()


def backend_error(code: grpc.StatusCode, details: str) -> ServiceError:
    """TorchServe's gRPC failure as the typed error the client gets (codes from errors.py)."""
    first = details.splitlines()[0] if details else code.name
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        return Unauthorized("token missing, wrong or expired (send 'authorization: Bearer <inference key>')")
    if "ModelNotFoundException" in details or "ModelVersionNotFoundException" in details:
        return ModelNotFound(first)
    if code == grpc.StatusCode.NOT_FOUND:
        return ModelNotFound(first)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceeded("no answer before the request's deadline")
    if code == grpc.StatusCode.UNAVAILABLE:
        return Overloaded(f"TorchServe is not reachable: {first}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return PayloadTooLarge(first)
    if "has no worker" in details or "queue is full" in details.lower():
        return Overloaded(first)
    return InferenceFailed(f"TorchServe {code.name}: {first}")
