"""Run a real Prometheus against loopback targets, for tests.

Used by ``tests/integration/test_prometheus.py`` (TorchServe on free loopback ports) and
``tests/unit/test_exporter_prometheus.py``. Prometheus comes from Debian's ``prometheus`` package
(``/usr/bin/prometheus``); callers skip when :func:`prometheus_binary` returns ``None``.

The scrape configuration is ``deploy/prometheus/prometheus.yml`` adapted: same jobs and metric
paths, targets replaced by the given loopback addresses, and a short scrape interval.
"""

from __future__ import annotations

import copy
import ipaddress
import math
import os
import shutil
import subprocess
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

import requests
import yaml

DEPLOY_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "prometheus.yml"
DEFAULT_BINARY = "/usr/bin/prometheus"


def prometheus_binary() -> str | None:
    """Path of the prometheus server binary, or ``None`` when it is not installed."""
    if os.access(DEFAULT_BINARY, os.X_OK):
        return DEFAULT_BINARY
    return shutil.which("prometheus")


def _check_loopback(target: str) -> None:
    host = target.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"scrape target {target!r} is not a loopback address")


def adapt_config(
    targets: Iterable[str] | Mapping[str, Iterable[str]],
    *,
    scrape_interval: str = "1s",
    base: Path | None = DEPLOY_CONFIG,
) -> dict:
    """The Prometheus configuration for ``targets``.

    ``targets`` is either a list of ``host:port`` (one job, ``zooserve``, scrapes them all) or a
    mapping ``job name -> [host:port, ...]``: jobs of the base file keep their settings
    (``metrics_path``, ...) with the targets replaced; jobs not in the mapping are dropped and jobs
    not in the base file are added with defaults.
    """
    jobs: dict[str, list[str]] = (
        {name: list(ts) for name, ts in targets.items()}
        if isinstance(targets, Mapping)
        else {"zooserve": list(targets)}
    )
    for ts in jobs.values():
        for t in ts:
            _check_loopback(t)
    base_jobs: dict[str, dict] = {}
    if base is not None and Path(base).exists():
        for job in yaml.safe_load(Path(base).read_text()).get("scrape_configs", []):
            base_jobs[job["job_name"]] = job
    scrape_configs = []
    for name, ts in jobs.items():
        job = copy.deepcopy(base_jobs.get(name, {"job_name": name}))
        job["static_configs"] = [{"targets": ts}]
        job["scrape_interval"] = scrape_interval
        job["scrape_timeout"] = scrape_interval
        scrape_configs.append(job)
    return {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": scrape_interval},
        "scrape_configs": scrape_configs,
    }


def start_prometheus(
    config_targets: Iterable[str] | Mapping[str, Iterable[str]],
    port: int,
    tmpdir: str | os.PathLike[str],
    *,
    scrape_interval: str = "1s",
    timeout: float = 30.0,
) -> subprocess.Popen:
    """Start Prometheus on ``127.0.0.1:port`` scraping ``config_targets``; return once it is ready.

    Config, TSDB and log go under ``tmpdir``. Stop it with :func:`stop_prometheus` (always: the
    caller owns the process). Raises ``FileNotFoundError`` when Prometheus is not installed and
    ``RuntimeError`` (with the log tail) when it exits or is not ready within ``timeout`` seconds.
    """
    binary = prometheus_binary()
    if binary is None:
        raise FileNotFoundError("prometheus is not installed (Debian package 'prometheus')")
    tmp = Path(tmpdir)
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(adapt_config(config_targets, scrape_interval=scrape_interval), sort_keys=False)
    )
    log = open(tmp / "prometheus.log", "wb")  # noqa: SIM115 - handed to the child, closed in stop
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        cwd=tmp,
    )
    proc._zooserve_log = log  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if requests.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.2)
    stop_prometheus(proc)
    tail = (tmp / "prometheus.log").read_text(errors="replace")[-2000:]
    raise RuntimeError(
        f"prometheus on 127.0.0.1:{port} did not become ready (exit {proc.returncode}):\n{tail}"
    )


def stop_prometheus(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate (then kill) a Prometheus started by :func:`start_prometheus`."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    log = getattr(proc, "_zooserve_log", None)
    if log is not None:
        log.close()


def query(port: int, promql: str, timeout: float = 5.0) -> float | None:
    """Evaluate an instant PromQL query; the value of its single sample.

    ``None`` when the result is empty or NaN (e.g. ``histogram_quantile`` over no data yet).
    Raises ``ValueError`` when the query returns several series (aggregate it first) and
    ``RuntimeError`` when Prometheus rejects it.
    """
    r = requests.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": promql}, timeout=timeout)
    body = r.json()
    if body.get("status") != "success":
        raise RuntimeError(f"query {promql!r} failed: {body.get('errorType')}: {body.get('error')}")
    data = body["data"]
    if data["resultType"] in ("scalar", "string"):
        value = data["result"][1]
    else:
        result = data["result"]
        if not result:
            return None
        if len(result) > 1:
            raise ValueError(f"query {promql!r} returned {len(result)} series; aggregate it (sum, max, ...)")
        value = result[0]["value"][1] if "value" in result[0] else result[0]["values"][-1][1]
    number = float(value)
    return None if math.isnan(number) else number


def wait_for_value(
    port: int, promql: str, predicate=lambda v: v is not None, timeout: float = 20.0, interval: float = 0.5
) -> float | None:
    """Poll :func:`query` until ``predicate(value)`` holds; return the last value either way."""
    deadline = time.monotonic() + timeout
    value = query(port, promql)
    while not predicate(value) and time.monotonic() < deadline:
        time.sleep(interval)
        value = query(port, promql)
    return value
