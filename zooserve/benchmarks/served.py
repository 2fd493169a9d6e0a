"""Served measurements: start TorchServe on free loopback ports with its own run dir, drive it with
the pinned load generators, and read where the time went from the handler's stage metrics."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
import yaml

from zooserve import server
from zooserve.benchmarks import loadgen

STAGES = ("decode", "preprocess", "inference", "postprocess", "handler")


@contextlib.contextmanager
def running(
    store: Path, run_dir: Path, models: list[str], env: dict[str, str | None] | None = None
) -> Iterator[server.ServerConfig]:
    """A TorchServe for ``models``; ``env`` is set (None: unset) for the server and its workers only."""
    cfg = server.ServerConfig(
        model_store=store, run_dir=run_dir, ports=server.Ports(*server.free_ports(6)), v2=False
    )  # TorchServe alone: the v2 front-end would take its default ports
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


def stage_totals(cfg: server.ServerConfig, model: str) -> dict[str, float]:
    """Cumulative zooserve_stage_seconds sums/counts and batch sizes for ``model`` (exporter port)."""
    try:
        text = requests.get(f"{cfg.url('exporter')}/metrics", timeout=5).text
    except requests.RequestException:
        return {}
    out: dict[str, float] = {}
    pat = re.compile(
        r"^(zooserve_stage_seconds|zooserve_batch_size)_(sum|count)\{([^}]*)\} ([0-9.e+-]+)$", re.M
    )
    for metric, kind, labels, value in pat.findall(text):
        lab = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if lab.get("model") != model:
            continue
        key = f"{lab.get('stage', 'batch')}_{kind}" if metric == "zooserve_stage_seconds" else f"batch_{kind}"
        out[key] = out.get(key, 0.0) + float(value)
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


def measure(cfg: server.ServerConfig, model: str, proto: str, concurrency: int, seconds: float, body: Path,
            stages: bool = True, metric_model: str | None = None) -> dict[str, Any]:  # fmt: skip
    """One load point; ``metric_model`` is the name our handler labels metrics with (the build's)."""
    token = server.read_keys(cfg).get("inference")
    label = metric_model or model
    before = stage_totals(cfg, label) if stages else {}
    if proto == "rest":
        row = loadgen.run_ab(f"{cfg.url()}/predictions/{model}", body, token, concurrency, seconds)
    else:
        row = loadgen.run_grpc(
            f"{cfg.host}:{cfg.ports.grpc_inference}", model, body, token, concurrency, seconds
        )
    drain(cfg, model, body)  # before reading the stage totals: the batches of this point's requests
    if stages:
        row |= stage_breakdown(before, stage_totals(cfg, label))
    row |= {"served": model, "proto": proto, "concurrency": concurrency}
    print(f"[bench] {model} {proto} c{concurrency}: {row['rps']:.1f} req/s p50 {row['p50']} ms "
          f"p99 {row['p99']} ms, errors {row['errors']}, loadgen cpu {row['loadgen_cpu_s']:.2f}s", flush=True)  # fmt: skip
    return row


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
    cfg = yaml.safe_load((bundle / "model-config.yaml").read_text("utf-8"))
    return {k: v for k, v in cfg.items() if k != "zooserve"}


def pack_stock(name: str, ts_bundle: Path, store: Path, work: Path) -> str:
    """``NAME.mar``: our TorchScript model.pt under TorchServe's stock ``image_classifier`` handler,
    with the same workers/batch settings and an index_to_name.json from our labels."""
    import json

    labels = json.loads((ts_bundle / "zooserve.json").read_text("utf-8"))["labels"]
    tmp = work / f"{name}_src"
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "index_to_name.json").write_text(json.dumps({str(i): lab for i, lab in enumerate(labels)}))
    (tmp / "model-config.yaml").write_text(yaml.safe_dump(batch_settings(ts_bundle), sort_keys=False))
    cmd = [sys.executable, "-m", "model_archiver.model_packaging", "--model-name", name, "--version", "1.0",
           "--serialized-file", str(ts_bundle / "model.pt"), "--handler", "image_classifier",
           "--extra-files", str(tmp / "index_to_name.json"), "--config-file", str(tmp / "model-config.yaml"),
           "--export-path", str(store), "--force"]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    return name


def pack_variant(src_mar: Path, name: str, batch_size: int, delay_ms: int) -> str:
    """A copy of ``src_mar`` whose model-config.yaml has other batchSize/maxBatchDelay
    (TorchServe takes them from the archive's yaml over registration parameters)."""
    dst = src_mar.with_name(f"{name}.mar")
    with zipfile.ZipFile(src_mar) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "model-config.yaml":
                cfg = yaml.safe_load(data) | {"batchSize": batch_size, "maxBatchDelay": delay_ms}
                data = yaml.safe_dump(cfg, sort_keys=False).encode()
            zout.writestr(info, data)
    return name


def register(cfg: server.ServerConfig, name: str) -> None:
    headers = {"Authorization": f"Bearer {server.read_keys(cfg)['management']}"}
    r = requests.post(f"{cfg.url('management')}/models", headers=headers, timeout=600,
                      params={"url": f"{name}.mar", "model_name": name, "initial_workers": 1, "synchronous": "true"})  # fmt: skip
    r.raise_for_status()


def unregister(cfg: server.ServerConfig, name: str) -> None:
    headers = {"Authorization": f"Bearer {server.read_keys(cfg)['management']}"}
    requests.delete(f"{cfg.url('management')}/models/{name}", headers=headers, timeout=120)


def sweep(cfg: server.ServerConfig, src_mar: Path, points: list[tuple[int, int]], concurrency: int,
          seconds: float, body: Path) -> list[dict[str, Any]]:  # fmt: skip
    """Throughput/latency for each (batchSize, maxBatchDelay) at one concurrency, over REST."""
    rows = []
    for bs, delay in points:
        name = pack_variant(src_mar, f"{src_mar.stem}_b{bs}_d{delay}", bs, delay)
        register(cfg, name)
        try:
            warm(cfg, name, body, concurrency)
            row = measure(cfg, name, "rest", concurrency, seconds, body, metric_model=src_mar.stem)
            rows.append(row | {"batch_size": bs, "delay_ms": delay})
        finally:
            unregister(cfg, name)
            (src_mar.parent / f"{name}.mar").unlink(missing_ok=True)
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
