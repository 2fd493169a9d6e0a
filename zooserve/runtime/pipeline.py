"""The serving contract: four small stages over one TorchServe batch, and the loop that runs them.

``decode`` runs per request (it is where bad input is caught, so it can fail one request alone),
on ``decode_workers`` threads at once; ``preprocess``, ``forward`` and ``postprocess`` run once per
batch over the requests that decoded.
Handlers are thin adapters around ``run_batch``, which never raises: every request gets a response.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from zooserve.errors import DeadlineExceeded, InferenceFailed, MalformedRequest, ServiceError, client_text
from zooserve.runtime import metrics


@dataclass
class Request:
    """One inference request as TorchServe hands it over (REST body or gRPC input map)."""

    body: Any  # bytes | str | dict | list | None (TorchServe pre-decodes JSON and text/*)
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names
    content_type: str = ""
    deadline: float | None = None  # wall-clock time (time.time()) after which the answer is useless


@dataclass
class BatchTimes:
    """Where one batch's time went (seconds), and when it started (wall clock)."""

    started: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)


@dataclass
class Response:
    status: int
    body: dict[str, Any]


class Pipeline(ABC):
    """One task's stages. Subclasses hold the loaded model; each stage is testable alone."""

    model_name: str = ""
    # requests of one batch decoded at once, on threads (Pillow and torchvision release the GIL);
    # the handler sets the model's ``decode_workers`` serving option
    decode_workers: int = 1

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
    def postprocess(self, outputs: Any, items: list[Any]) -> list[dict[str, Any] | ServiceError]:
        """Batch outputs -> one JSON-able response body per item, or the RequestError of an item
        the batch stages found unusable (answered alone; its batch-mates are served)."""

    @abstractmethod
    def example_item(self) -> Any:
        """A decoded item like a typical request's, for warm-up."""

    def warmup(self, batch_sizes: Sequence[int]) -> float:
        """Run every stage once per batch size on example items, so that first-call costs
        (allocations, compiled kernels' first launch) are paid before serving; seconds taken."""
        t0 = time.perf_counter()
        item = self.example_item()
        for n in batch_sizes:
            items = [item] * n
            for _ in range(2):  # TorchScript's profiling executor optimises a shape on its second call
                self.postprocess(self.forward(self.preprocess(items)), items)
        return time.perf_counter() - t0


def run_batch(pipeline: Pipeline, requests: Sequence[Request | ServiceError]) -> list[Response]:
    """One response per request, in order, whatever the requests carry."""
    return run_batch_timed(pipeline, requests)[0]


def run_batch_timed(
    pipeline: Pipeline, requests: Sequence[Request | ServiceError]
) -> tuple[list[Response], BatchTimes]:
    """``run_batch`` and where its time went.

    A request whose deadline has passed is answered DeadlineExceeded before any work is done for
    it. A request that fails to decode (or arrives already failed, as a ``ServiceError``) gets its
    own error response. If a batch stage fails, the batch is split in halves and retried until the
    request that causes the failure is alone: it gets the error, its batch-mates their answers.
    """
    model = pipeline.model_name
    times = BatchTimes(started=time.time())
    t0 = time.perf_counter()
    responses: list[Response | None] = [None] * len(requests)
    items, positions = [], []
    for i, item in enumerate(_decode_all(pipeline, requests, times.started)):
        if isinstance(item, Response):
            responses[i] = item
        else:
            items.append(item)
            positions.append(i)
    times.stages["decode"] = time.perf_counter() - t0
    metrics.observe_stage(model, "decode", times.stages["decode"])
    if items:
        for pos, body in zip(positions, _isolated(pipeline, items, times), strict=True):
            if isinstance(body, ServiceError):  # an item the batch stages found unusable
                body = Response(body.status, body.to_json())
            responses[pos] = body if isinstance(body, Response) else Response(200, body)
    done = [r for r in responses if r is not None]
    times.stages["handler"] = time.perf_counter() - t0
    metrics.observe_batch(model, len(requests), times.stages["handler"], [r.status for r in done])
    return done, times


def _decode_all(pipeline: Pipeline, requests: Sequence[Request | ServiceError], now: float) -> list[Any]:
    """Each request's decoded item, or the Response that answers it (late, pre-failed, bad input)."""

    def one(req: Request | ServiceError) -> Any:
        try:
            if isinstance(req, ServiceError):
                raise req
            if req.deadline is not None and now > req.deadline:
                late_ms = (now - req.deadline) * 1e3
                raise DeadlineExceeded(f"the deadline passed {late_ms:.0f} ms before the model reached it")
            return pipeline.decode(req)
        except Exception as e:  # noqa: BLE001 - whatever a request's bytes or options raise is its own 4xx
            return _error_response(e, client_side=True)

    if pipeline.decode_workers > 1 and len(requests) > 1:
        return list(_decoders(pipeline.decode_workers).map(one, requests))
    return [one(r) for r in requests]


@cache
def _decoders(workers: int) -> ThreadPoolExecutor:
    """One pool per worker process (and thread count), kept for the process's life."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="zooserve-decode")


def _isolated(pipeline: Pipeline, items: list[Any], times: BatchTimes) -> list[Any]:
    """The stages over ``items``; on failure, over each half, down to the one item that fails."""
    try:
        return _stages(pipeline, items, times)
    except Exception as e:  # noqa: BLE001 - a failure must stay with the request that causes it
        if len(items) == 1:
            return [_error_response(e, client_side=False)]
        half = len(items) // 2
        return _isolated(pipeline, items[:half], times) + _isolated(pipeline, items[half:], times)


def _error_response(e: Exception, client_side: bool) -> Response:
    """Our typed error as is; anything else is the client's 400 while reading its request, or,
    in a batch stage that fails on this request alone, a 500 that is ours."""
    if not isinstance(e, ServiceError):
        detail = f"{type(e).__name__}: {client_text(e)}"
        e = MalformedRequest(f"cannot read the request: {detail}") if client_side else InferenceFailed(detail)
    return Response(e.status, e.to_json())


def _stages(pipeline: Pipeline, items: list[Any], times: BatchTimes) -> list[Any]:
    model = pipeline.model_name
    with metrics.timed(model, "preprocess", times.stages):
        inputs = pipeline.preprocess(items)
    with metrics.timed(model, "inference", times.stages):
        outputs = pipeline.forward(inputs)
    with metrics.timed(model, "postprocess", times.stages):
        bodies = pipeline.postprocess(outputs, items)
    if len(bodies) != len(items):  # inside the bisection: a short answer fails only its culprit
        raise RuntimeError(f"postprocess answered {len(bodies)} of {len(items)} requests")
    return bodies
