"""A Locust-compatible gRPC client for TorchServe's inference API.

Each call is reported through ``events.request`` like Locust's HTTP clients, so gRPC rows appear in
the same stats, CSV and HTML report (request type ``grpc``). gRPC's blocking calls are made
cooperative with gevent (``init_gevent``) so one Locust process can run many users.
"""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User
from locust.exception import LocustError

grpc_gevent.init_gevent()


def _stubs() -> tuple[Any, Any]:
    from zooserve.serving import grpc_stubs

    return grpc_stubs.load("inference_pb2"), grpc_stubs.load("inference_pb2_grpc")


class GrpcClient:
    """``predict(model, data, name)``: one Predictions call, reported to Locust; returns the JSON reply."""

    def __init__(self, target: str, token: str | None, request_event: Any, timeout: float = 60.0) -> None:
        self.pb2, pb2_grpc = _stubs()
        self.channel = grpc.insecure_channel(target)
        self.stub = pb2_grpc.InferenceAPIsServiceStub(self.channel)
        self.set_token(token)
        self.request_event = request_event
        self.timeout = timeout

    def set_token(self, token: str | None) -> None:
        self.metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def predict(self, model: str, data: bytes, name: str | None = None) -> Any:
        request = self.pb2.PredictionsRequest(model_name=model, input={"data": data})
        start = time.perf_counter()
        body: Any = None
        exception: Exception | None = None
        length = 0
        try:
            reply = self.stub.Predictions(request, metadata=self.metadata, timeout=self.timeout)
            length = len(reply.prediction)
            body = json.loads(reply.prediction)
            # TorchServe 0.12's gRPC frontend returns a per-request failure as OK + our error body
            if isinstance(body, dict) and isinstance(body.get("code"), int) and body["code"] >= 400:
                exception = LocustError(f"{body['code']} {body.get('type')}: {body.get('message')}")
        except grpc.RpcError as e:
            exception = e
        except ValueError as e:
            exception = e
        self.request_event.fire(
            request_type="grpc",
            name=name or f"grpc {model}",
            response_time=(time.perf_counter() - start) * 1e3,
            response_length=length,
            exception=exception,
            context={},
        )
        return body

    def close(self) -> None:
        self.channel.close()


class GrpcUser(User):
    """Base class: subclasses get ``self.client`` (a GrpcClient) for ``grpc_target``."""

    abstract = True
    grpc_target = "127.0.0.1:7070"
    token: str | None = None

    def __init__(self, environment: Any) -> None:
        super().__init__(environment)
        self.client = GrpcClient(self.grpc_target, self.token, environment.events.request)

    def on_stop(self) -> None:
        self.client.close()
