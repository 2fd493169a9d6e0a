"""A real Prometheus (Debian's package) scrapes the real TorchServe and our handler exporter."""

from __future__ import annotations

import promtest
import pytest
from tools import require

from zooserve.serving.server import free_ports

pytestmark = pytest.mark.integration
MODEL = "tiny_resnet"


@pytest.fixture(scope="module")
def prometheus(served, tmp_path_factory):
    require("prometheus", "prometheus")
    port = free_ports(1)[0]
    host = "127.0.0.1"
    targets = {
        "torchserve": [f"{host}:{served.cfg.ports.metrics}"],
        "zooserve-handlers": [f"{host}:{served.cfg.ports.exporter}"],
        "zooserve-gateway": [f"{host}:{served.cfg.ports.gateway_metrics}"],
    }
    proc = promtest.start_prometheus(targets, port, tmp_path_factory.mktemp("prometheus"))
    try:
        yield port
    finally:
        promtest.stop_prometheus(proc)


def test_request_count_and_p95_through_promql(served, prometheus, sample_jpegs) -> None:
    count = f'sum(zooserve_requests_total{{model="{MODEL}",outcome="ok"}})'
    before = promtest.wait_for_value(prometheus, count, lambda v: v is not None, timeout=30) or 0.0
    n = 12
    for _ in range(n):
        served.client.predict(MODEL, sample_jpegs["china.jpg"])
    after = promtest.wait_for_value(
        prometheus, count, lambda v: v is not None and v >= before + n, timeout=30
    )
    assert after == before + n
    # p95 over every observation so far (rate() needs two scrapes that straddle the requests)
    p95 = promtest.wait_for_value(
        prometheus,
        "histogram_quantile(0.95, sum by (le) "
        f'(zooserve_stage_seconds_bucket{{model="{MODEL}",stage="handler"}}))',
        lambda v: v is not None,
        timeout=30,
    )
    assert p95 is not None and 1e-4 < p95 < 30, p95  # seconds, not milliseconds
    # TorchServe's own metrics are scraped from its metrics port too
    ts = promtest.wait_for_value(
        prometheus, "sum(ts_inference_requests_total)", lambda v: v is not None and v > 0, timeout=30
    )
    assert ts is not None and ts >= n


def test_handler_histograms_are_in_seconds(served, sample_jpegs) -> None:
    import re

    import requests

    text = requests.get(f"{served.cfg.url('exporter')}/metrics", timeout=10).text
    sums = dict(
        re.findall(
            rf'zooserve_stage_seconds_(sum|count)\{{model="{MODEL}",stage="handler"\}} ([0-9.e+-]+)', text
        )
    )
    mean = float(sums["sum"]) / float(sums["count"])
    # a tiny model's batch takes milliseconds: in seconds that is well under 5; in ms it would not be
    assert 1e-5 < mean < 5.0, mean
