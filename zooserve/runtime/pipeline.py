"""The serving contract: four small stages over one TorchServe batch, and the loop that runs them.

``decode`` runs per request (it is where bad input is caught, so it can fail one request alone);
``preprocess``, ``forward`` and ``postprocess`` run once per batch over the requests that decoded.
Handlers are thin adapters around ``run_batch``, which never raises: every request gets a response.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zooserve.errors import InferenceFailed, MalformedRequest, ServiceError
from zooserve.runtime import metrics


@dataclass
class Request:
    """One inference request as TorchServe hands it over (REST body or gRPC input map)."""

    body: Any  # bytes | str | dict | list | None (TorchServe pre-decodes JSON and text/*)
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names
    content_type: str = ""


@dataclass
class Response:
    status: int
    body: dict[str, Any]


class Pipeline(ABC):
    """One task's stages. Subclasses hold the loaded model; each stage is testable alone."""

    model_name: str = ""

    @abstractmethod
    def decode(self, request: Request) -> Any:
        """Turn one request into an item (raise a RequestError for bad input)."""

    @abstractmethod
    def preprocess(self, items: list[Any]) -> Any:
        """All decoded items -> one model input (a batch)."""

    @abstractmethod
    def forward(self, inputs: Any) -> Any:
        """One forward pass over the batch."""

    @abstractmethod
    def postprocess(self, outputs: Any, items: list[Any]) -> list[dict[str, Any]]:
        """Batch outputs -> one JSON-able response body per item."""


def run_batch(pipeline: Pipeline, requests: Sequence[Request | ServiceError]) -> list[Response]:
    """One response per request, in order, whatever the requests carry.

    A request that fails to decode (or arrives already failed, as a ``ServiceError``) gets its own
    error response. If a batch stage fails, the batch is split in halves and retried until the
    request that causes the failure is alone: it gets the error, its batch-mates their answers.
    """
    model = pipeline.model_name
    t0 = time.perf_counter()
    responses: list[Response | None] = [None] * len(requests)
    items, positions = [], []
    for i, req in enumerate(requests):
        try:
            if isinstance(req, ServiceError):
                raise req
            items.append(pipeline.decode(req))
            positions.append(i)
        except Exception as e:  # noqa: BLE001 - whatever a request's bytes or options raise is its own 4xx
            responses[i] = _error_response(e, client_side=True)
    metrics.observe_stage(model, "decode", time.perf_counter() - t0)
    if items:
        for pos, body in zip(positions, _isolated(pipeline, items), strict=True):
            responses[pos] = body if isinstance(body, Response) else Response(200, body)
    done = [r for r in responses if r is not None]
    metrics.observe_batch(model, len(requests), time.perf_counter() - t0, [r.status for r in done])
    return done


def _isolated(pipeline: Pipeline, items: list[Any]) -> list[Any]:
    """The stages over ``items``; on failure, over each half, down to the one item that fails."""
    try:
        return _stages(pipeline, items)
    except Exception as e:  # noqa: BLE001 - a failure must stay with the request that causes it
        if len(items) == 1:
            return [_error_response(e, client_side=False)]
        half = len(items) // 2
        return _isolated(pipeline, items[:half]) + _isolated(pipeline, items[half:])


def _error_response(e: Exception, client_side: bool) -> Response:
    """Our typed error as is; anything else is the client's 400 while reading its request, or,
    in a batch stage that fails on this request alone, a 500 that is ours."""
    if not isinstance(e, ServiceError):
        detail = f"{type(e).__name__}: {str(e)[:200]}"
        e = MalformedRequest(f"cannot read the request: {detail}") if client_side else InferenceFailed(detail)
    return Response(e.status, e.to_json())


def _stages(pipeline: Pipeline, items: list[Any]) -> list[Any]:
    model = pipeline.model_name
    with metrics.timed(model, "preprocess"):
        inputs = pipeline.preprocess(items)
    with metrics.timed(model, "inference"):
        outputs = pipeline.forward(inputs)
    with metrics.timed(model, "postprocess"):
        return pipeline.postprocess(outputs, items)
