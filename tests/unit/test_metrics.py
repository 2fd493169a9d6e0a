"""Handler histograms are recorded in seconds with buckets that resolve milliseconds."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY

from zooserve.runtime import metrics


def _bucket(le: str, model: str) -> float:
    value = REGISTRY.get_sample_value(
        "zooserve_stage_seconds_bucket", {"model": model, "stage": "inference", "le": le}
    )
    return value or 0.0


def test_a_30ms_stage_lands_between_the_20ms_and_35ms_buckets() -> None:
    with metrics.timed("unit-test", "inference"):
        time.sleep(0.03)
    # 30 ms is 0.03 s: above the 0.02 bucket, inside 0.05. Written as milliseconds ("30") it would
    # fall outside every bucket below 30 and this would fail.
    assert _bucket("0.02", "unit-test") == 0.0
    assert _bucket("0.05", "unit-test") == 1.0


def test_buckets_resolve_milliseconds_and_cover_seconds() -> None:
    b = metrics.SECONDS_BUCKETS
    assert b[0] <= 0.001 and b[-1] >= 10
    assert sum(1 for x in b if x <= 0.1) >= 8  # enough resolution below 100 ms
    assert list(b) == sorted(b)


def test_outcomes() -> None:
    assert [metrics.outcome(s) for s in (200, 400, 413, 500, 503)] == [
        "ok",
        "client_error",
        "client_error",
        "server_error",
        "server_error",
    ]
