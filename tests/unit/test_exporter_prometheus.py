"""zooserve.serving.exporter + zooserve.promtest against a real Prometheus (Debian's /usr/bin/prometheus).

A child process records handler-style histograms in prometheus-client multiprocess mode (as the
TorchServe workers do), ``python -m zooserve.serving.exporter`` serves the merged files, and a real
Prometheus scrapes it; PromQL through its HTTP API must see exactly the observations made.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time

import promtest
import pytest
import requests
from tools import require

pytestmark = pytest.mark.timeout(60)

N = 7  # observations recorded by the child


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _record(multiproc_dir, n: int) -> None:
    code = textwrap.dedent(
        f"""
        from prometheus_client import Counter, Histogram
        h = Histogram("zooserve_stage_seconds", "t", ["model", "stage"], buckets=(0.001, 0.01, 0.1, 1.0))
        c = Counter("zooserve_requests", "r", ["model", "outcome"])
        for i in range({n}):
            h.labels("tiny", "handler").observe(0.004 + i * 0.001)
            c.labels("tiny", "ok").inc()
        """
    )
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=30)


@pytest.fixture
def exporter(tmp_path):
    mp = tmp_path / "multiproc"
    mp.mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "zooserve.serving.exporter", "--port", str(port), "--dir", str(mp)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                requests.get(f"http://127.0.0.1:{port}/metrics", timeout=1)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"exporter did not start: {proc.stdout.read().decode()}") from None
                time.sleep(0.1)
        yield port, mp
    finally:
        proc.terminate()
        proc.wait(10)


def test_exporter_serves_multiprocess_files(exporter):
    port, mp = exporter
    _record(mp, 3)
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'zooserve_stage_seconds_count{model="tiny",stage="handler"} 3.0' in text
    assert 'zooserve_requests_total{model="tiny",outcome="ok"} 3.0' in text
    _record(mp, 2)  # a second "worker": the exporter merges both files on each scrape
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    assert 'zooserve_stage_seconds_count{model="tiny",stage="handler"} 5.0' in text


def test_exporter_bad_port_is_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "zooserve.serving.exporter", "--port", str(busy), "--dir", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "cannot serve" in r.stderr


def test_adapt_config_keeps_jobs_and_refuses_remote_targets():
    cfg = promtest.adapt_config({"torchserve": ["127.0.0.1:1"], "zooserve-handlers": ["localhost:2"]})
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["torchserve"]["static_configs"] == [{"targets": ["127.0.0.1:1"]}]
    assert jobs["zooserve-handlers"]["metrics_path"] == "/metrics"
    with pytest.raises(ValueError):
        promtest.adapt_config(["10.0.0.1:8082"])


def test_real_prometheus_scrapes_exporter(exporter, tmp_path):
    require("prometheus", "prometheus")
    port, mp = exporter
    _record(mp, N)
    prom_port = _free_port()
    prom = promtest.start_prometheus([f"127.0.0.1:{port}"], prom_port, tmp_path / "prom")
    try:
        count_q = 'sum(zooserve_stage_seconds_count{model="tiny",stage="handler"})'
        assert promtest.wait_for_value(prom_port, count_q, lambda v: v == N) == N
        assert promtest.query(prom_port, 'sum(zooserve_requests_total{outcome="ok"})') == N
        p95 = promtest.query(
            prom_port,
            'histogram_quantile(0.95, sum by (le) (zooserve_stage_seconds_bucket{stage="handler"}))',
        )
        assert p95 is not None and 0.001 < p95 <= 0.01  # all observations are 4..10 ms
        assert promtest.query(prom_port, 'zooserve_stage_seconds_count{model="absent"}') is None
        with pytest.raises(ValueError):
            promtest.query(prom_port, "up or vector(1)")
    finally:
        promtest.stop_prometheus(prom)
    assert prom.poll() is not None
