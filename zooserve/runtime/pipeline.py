"""The serving contract: four small stages over one TorchServe batch, and the loop that runs them.

``decode`` runs per request (it is where bad input is caught, so it can fail one request alone);
``preprocess``, ``forward`` and ``postprocess`` run once per batch over the requests that decoded.
Handlers are thin adapters around ``run_batch``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from zooserve.errors import InferenceFailed, RequestError, ServiceError
from zooserve.runtime import metrics


@dataclass
class Request:
    """One inference request as TorchServe hands it over (REST body or gRPC input map)."""

    body: Any  # bytes | str | dict | list | None (TorchServe pre-decodes JSON and text/*)
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names
    content_type: str = ""

    def flag(self, name: str) -> bool:
        """A boolean option from a header (``X-Attention: 1``) or a JSON body key."""
        value = self.headers.get(f"x-{name}".lower())
        if value is None and isinstance(self.body, dict):
            value = self.body.get(name)
        return str(value).lower() in ("1", "true", "yes")


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
    def postprocess(self, outputs: Any, items: list[Any]) -> list[dict[str, Any] | ServiceError]:
        """Batch outputs -> one JSON-able response body per item, or the RequestError of an item
        the batch stages found unusable (answered alone; its batch-mates are served)."""


def run_batch(pipeline: Pipeline, requests: Sequence[Request]) -> list[Response]:
    """Run the stages; a request that fails to decode gets its own 4xx, the rest are served."""
    model = pipeline.model_name
    t0 = time.perf_counter()
    responses: list[Response | None] = [None] * len(requests)
    items, positions = [], []
    for i, req in enumerate(requests):
        try:
            items.append(pipeline.decode(req))
            positions.append(i)
        except RequestError as e:
            responses[i] = Response(e.status, e.to_json())
    t1 = time.perf_counter()
    metrics.observe_stage(model, "decode", t1 - t0)
    if items:
        try:
            bodies = _stages(pipeline, items)
        except RequestError as e:  # a batch-level request limit (e.g. pixel budget): split and retry
            bodies = _one_by_one(pipeline, items) if len(items) > 1 else [e]
        except ServiceError as e:
            bodies = [e] * len(items)
        except Exception as e:  # noqa: BLE001 - a model bug must not look like a client error
            err = InferenceFailed(f"{type(e).__name__}: {e}")
            bodies = [err] * len(items)
        for pos, body in zip(positions, bodies, strict=True):
            responses[pos] = (
                Response(body.status, body.to_json())
                if isinstance(body, ServiceError)
                else Response(200, body)
            )
    metrics.observe_batch(model, len(requests), time.perf_counter() - t0, [r.status for r in responses if r])
    return [r for r in responses if r is not None]


def _stages(pipeline: Pipeline, items: list[Any]) -> list[Any]:
    model = pipeline.model_name
    with metrics.timed(model, "preprocess"):
        inputs = pipeline.preprocess(items)
    with metrics.timed(model, "inference"):
        outputs = pipeline.forward(inputs)
    with metrics.timed(model, "postprocess"):
        return pipeline.postprocess(outputs, items)


def _one_by_one(pipeline: Pipeline, items: list[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        try:
            out.extend(_stages(pipeline, [item]))
        except ServiceError as e:
            out.append(e)
    return out
