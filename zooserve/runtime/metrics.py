"""Handler metrics with prometheus-client, in seconds, labelled by model.

Why prometheus-client and not TorchServe's metrics API: TorchServe's Prometheus histograms use
fixed default buckets and cannot express a batch-size distribution. TorchServe runs each worker as
its own process, so we use prometheus-client's multiprocess mode: workers write to
``$PROMETHEUS_MULTIPROC_DIR`` and ``zooserve.serving.exporter`` serves the merged view (port 8083 by
default) next to TorchServe's own metrics on 8082. Without that variable (tests, notebooks) the
metrics live in the process registry.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from prometheus_client import Counter, Histogram

# 0.5 ms .. 30 s: resolves milliseconds for tiny models and seconds for big CPU batches
SECONDS_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25,
    0.4, 0.6, 1.0, 1.5, 2.5, 4.0, 6.0, 10.0, 30.0,
)  # fmt: skip
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128, 256)
STAGES = ("decode", "preprocess", "inference", "postprocess", "handler")

STAGE_SECONDS = Histogram(
    "zooserve_stage_seconds",
    "Time spent per handler stage for one batch",
    ["model", "stage"],
    buckets=SECONDS_BUCKETS,
)
BATCH_SIZE = Histogram(
    "zooserve_batch_size", "Requests per batch formed by TorchServe", ["model"], buckets=BATCH_BUCKETS
)
REQUESTS = Counter("zooserve_requests", "Requests answered by the handler, by outcome", ["model", "outcome"])


def outcome(status: int) -> str:
    return "ok" if status < 400 else "client_error" if status < 500 else "server_error"


def observe_stage(model: str, stage: str, seconds: float) -> None:
    STAGE_SECONDS.labels(model, stage).observe(seconds)


@contextmanager
def timed(model: str, stage: str, into: dict[str, float] | None = None) -> Iterator[None]:
    """Observe the block's duration; ``into[stage]`` accumulates it too (a split batch runs a
    stage more than once)."""
    t = time.perf_counter()
    try:
        yield
    finally:
        seconds = time.perf_counter() - t
        observe_stage(model, stage, seconds)
        if into is not None:
            into[stage] = into.get(stage, 0.0) + seconds


def observe_batch(model: str, size: int, seconds: float, statuses: Sequence[int]) -> None:
    observe_stage(model, "handler", seconds)
    BATCH_SIZE.labels(model).observe(size)
    for status in statuses:
        REQUESTS.labels(model, outcome(status)).inc()
