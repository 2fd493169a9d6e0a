"""The front-end's own Prometheus metrics (served on its metrics port, Triton's 8002 by default)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Outcome:
    code: str = "OK"  # gRPC status name, or the HTTP status for REST


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # never the multiprocess directory the handler metrics use: the gateway's registry
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "zooserve_v2_requests",
            "v2 requests by protocol, method and status code",
            ["protocol", "method", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "zooserve_v2_request_duration_seconds",
            "v2 request time in the front-end, TorchServe included",
            ["protocol", "method"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "zooserve_v2_requests_in_flight", "v2 requests being served", ["protocol"], registry=self.registry
        )
        self.elements = Counter(
            "zooserve_v2_infer_elements",
            "batch elements forwarded to TorchServe",
            ["model"],
            registry=self.registry,
        )

        self._children: dict[tuple[str, ...], Any] = {}  # labels() looked up once per label set

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (metric._name, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    @contextmanager
    def track(self, protocol: str, method: str) -> Iterator[Outcome]:
        outcome = Outcome()
        gauge = self._child(self.in_flight, protocol)
        gauge.inc()
        start = time.perf_counter()
        try:
            yield outcome
        except BaseException:
            if outcome.code == "OK":
                outcome.code = "INTERNAL" if protocol == "grpc" else "500"
            raise
        finally:
            gauge.dec()
            self._child(self.duration, protocol, method).observe(time.perf_counter() - start)
            self._child(self.requests, protocol, method, outcome.code).inc()

    def count_elements(self, model: str, n: int) -> None:
        self._child(self.elements, model).inc(n)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
