"""Served measurements: start TorchServe on free loopback ports with its own run dir, drive it with
the pinned load generators, and read where the time went from the handler's stage metrics."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from zooserve.bench import cpu, loadgen
from zooserve.export.archive import rewrite_config
from zooserve.manifest import CONFIG_FILE, MANIFEST_FILE
from zooserve.runtime.metrics import STAGES
from zooserve.serving import server


@contextlib.contextmanager
def running(
    store: Path,
    run_dir: Path,
    models: list[str],
    env: dict[str, str | None] | None = None,
    gateway: bool = True,
) -> Iterator[server.ServerConfig]:
    """A server for ``models`` with its model API on (benchmarks register variants); ``env`` is set
    (None: unset) for the server and its workers only."""
    cfg = server.ServerConfig(model_store=store, run_dir=run_dir, gateway=gateway, model_api=True)
    cfg = server.on_free_ports(cfg)
    saved = {k: os.environ.get(k) for k in env or {}}
    try:
        for k, v in (env or {}).items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.start(cfg, models, timeout=600)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        yield cfg
    finally:
        server.stop(cfg)


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text endpoint: (name, sorted labels) -> value ({} if unreachable)."""
    try:
        text = requests.get(url, timeout=5).text
    except requests.RequestException:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def stage_totals(cfg: server.ServerConfig, model: str) -> dict[str, float]:
    """Cumulative zooserve_stage_seconds sums/counts and batch sizes for ``model`` (exporter port)."""
    out: dict[str, float] = {}
    for (name, labels), value in scrape(f"{cfg.url('exporter')}/metrics").items():
        lab = dict(labels)
        if lab.get("model") != model:
            continue
        for metric, key in (("zooserve_stage_seconds", lab.get("stage")), ("zooserve_batch_size", "batch")):
            for kind in ("sum", "count"):
                if name == f"{metric}_{kind}":
                    out[f"{key}_{kind}"] = out.get(f"{key}_{kind}", 0.0) + value
    return out


def stage_breakdown(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Mean ms per batch for each stage and the mean batch size over one load run."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    batches = d.get("handler_count", 0.0)
    if not batches:
        return {}
    out = {f"{s}_ms": 1e3 * d.get(f"{s}_sum", 0.0) / batches for s in STAGES}
    out["batch_mean"] = d.get("batch_sum", 0.0) / max(d.get("batch_count", 0.0), 1.0)
    return out


def measure(
    cfg: server.ServerConfig,
    model: str,
    proto: str,
    concurrency: int,
    seconds: float,
    body: Path,
    stages: bool = True,
    metric_model: str | None = None,
) -> dict[str, Any]:
    """One load point; ``metric_model`` is the name our handler labels metrics with (the build's)."""
    token = server.read_keys(cfg).get("inference")
    label = metric_model or model
    before = stage_totals(cfg, label) if stages else {}
    cpu_before, t0 = cpu.seconds_by_role(cfg), time.monotonic()
    if proto == "rest":
        row = loadgen.run_ab(f"{cfg.url()}/predictions/{model}", body, token, concurrency, seconds)
    else:
        row = loadgen.run_grpc(
            f"{cfg.host}:{cfg.ports.grpc_inference}", model, body, token, concurrency, seconds
        )
    drain(cfg, model, body)  # before reading the stage totals: the batches of this point's requests
    row |= cpu.percent(cpu_before, cpu.seconds_by_role(cfg), time.monotonic() - t0)
    if stages:
        row |= stage_breakdown(before, stage_totals(cfg, label))
    row |= {"served": model, "proto": proto, "concurrency": concurrency}
    print(
        f"[bench] {model} {proto} {body.name} c{concurrency}: {row['rps']:.1f} req/s "
        f"p50 {_ms(row['p50'])} ms p99 {_ms(row['p99'])} ms, errors {row['errors']}, "
        f"loadgen cpu {row['loadgen_cpu_s']:.2f}s",
        flush=True,
    )
    return row


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def warm(cfg: server.ServerConfig, model: str, body: Path, concurrency: int) -> None:
    """A short run first: the first batches of a fresh worker pay allocator/first-call costs."""
    url, token = f"{cfg.url()}/predictions/{model}", server.read_keys(cfg).get("inference")
    loadgen.run_ab(url, body, token, concurrency, 0, requests=2 * concurrency)


def drain(cfg: server.ServerConfig, model: str, body: Path) -> None:
    """``ab -t`` stops with up to C requests still queued in TorchServe; one more request, answered
    after them (the queue is FIFO), keeps them out of the next point's numbers."""
    loadgen.run_ab(
        f"{cfg.url()}/predictions/{model}", body, server.read_keys(cfg).get("inference"), 1, 0, requests=1
    )


# ---- archives: the stock handler's and batch-setting variants of ours ----------------------------
def batch_settings(bundle: Path) -> dict[str, Any]:
    """TorchServe's own keys from our build's model-config.yaml (workers, batching, timeout)."""
    cfg = yaml.safe_load((bundle / CONFIG_FILE).read_text("utf-8"))
    return {k: v for k, v in cfg.items() if k != "zooserve"}


def pack_stock(name: str, ts_bundle: Path, store: Path, work: Path) -> str:
    """``NAME.mar``: our TorchScript model.pt under TorchServe's stock ``image_classifier`` handler,
    with the same workers/batch settings and an index_to_name.json from our labels."""
    labels = json.loads((ts_bundle / MANIFEST_FILE).read_text("utf-8"))["labels"]
    tmp = work / f"{name}_src"
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "index_to_name.json").write_text(json.dumps({str(i): lab for i, lab in enumerate(labels)}))
    (tmp / "model-config.yaml").write_text(yaml.safe_dump(batch_settings(ts_bundle), sort_keys=False))
    cmd = [
        sys.executable,
        "-m",
        "model_archiver.model_packaging",
        "--model-name",
        name,
        "--version",
        "1.0",
        "--serialized-file",
        str(ts_bundle / "model.pt"),
        "--handler",
        "image_classifier",
        "--extra-files",
        str(tmp / "index_to_name.json"),
        "--config-file",
        str(tmp / "model-config.yaml"),
        "--export-path",
        str(store),
        "--force",
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    return name


def sweep(
    cfg: server.ServerConfig,
    src_mar: Path,
    points: list[tuple[int, int]],
    concurrency: int,
    seconds: float,
    body: Path,
) -> list[dict[str, Any]]:
    """Throughput/latency for each (batchSize, maxBatchDelay) at one concurrency, over REST."""
    rows = []
    mgmt = server.management(cfg)
    for bs, delay in points:
        name = f"{src_mar.stem}_b{bs}_d{delay}"
        dst = src_mar.with_name(f"{name}.mar")
        rewrite_config(
            src_mar, dst, lambda c, bs=bs, delay=delay: c | {"batchSize": bs, "maxBatchDelay": delay}
        )
        mgmt.register(dst.name, name)
        try:
            warm(cfg, name, body, concurrency)
            row = measure(cfg, name, "rest", concurrency, seconds, body, metric_model=src_mar.stem)
            rows.append(row | {"batch_size": bs, "delay_ms": delay})
        finally:
            mgmt.unregister(name)
            dst.unlink(missing_ok=True)
    return rows


def worker_threads_env(cfg: server.ServerConfig) -> dict[str, str]:
    """OMP/MKL thread variables a worker of this server actually runs with (from /proc)."""
    pid = server.running_pid(cfg)
    out: dict[str, str] = {}
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if os.getpgid(int(env.parent.name)) != pid:
                continue
            items = env.read_bytes().split(b"\0")
            cmd = (env.parent / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if b"model_service_worker" in cmd:
            for item in items:
                k, _, v = item.decode(errors="replace").partition("=")
                if k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                    out[k] = v
    return out
