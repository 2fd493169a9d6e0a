"""Handler histograms are recorded in seconds with buckets that resolve milliseconds."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from zooserve.runtime import metrics


def _bucket(le: str, model: str) -> float:
    value = REGISTRY.get_sample_value(
        "zooserve_stage_seconds_bucket", {"model": model, "stage": "inference", "le": le}
    )
    return value or 0.0


def test_a_30ms_stage_is_recorded_as_0_03_seconds(monkeypatch) -> None:
    """The clock is the test's: the stage takes exactly 30 ms. Recorded as 0.030 it falls in the
    0.035 bucket and not the 0.02 one; recorded as milliseconds (30) it would land in the 30 bucket
    and miss 0.035, so this fails on the unit mistake, not on a scheduler's whim."""
    ticks = iter([100.0, 100.030])
    monkeypatch.setattr(metrics.time, "perf_counter", lambda: next(ticks))
    into: dict[str, float] = {}
    with metrics.timed("unit-test", "inference", into):
        pass
    assert into == {"inference": pytest.approx(0.030)}
    assert _bucket("0.02", "unit-test") == 0.0
    assert _bucket("0.035", "unit-test") == 1.0


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
