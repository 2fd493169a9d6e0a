"""One benchmark run: model-only limit, our served model (REST + gRPC), the stock handler, the
batch sweep, every precision on every photo workload (``precision.py``), extras for
BERT/captioning; then tables, plots and the summary."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from zooserve.bench import captions, model_only, precision, report, served, summary
from zooserve.bench.samples import WORKLOADS, write_workloads
from zooserve.bench.text import bench_padding
from zooserve.manifest import Manifest
from zooserve.models import registry
from zooserve.runtime.bundle import load_bundle
from zooserve.specs import Format, Task


def _tag(rows: list[dict[str, Any]], **extra: Any) -> list[dict[str, Any]]:
    return [r | extra for r in rows]


SMALL = {"precision": "fp32", "workload": "small"}  # what the served/stock/sweep parts measure


def classify(name: str, a: argparse.Namespace, res: dict[str, Any], bodies: dict[str, Path]) -> None:
    work, store = a.work, a.work / "store"
    store.mkdir(parents=True, exist_ok=True)
    parts = {a.what} if a.what != "all" else {"model", "served", "stock", "sweep", "precision"}
    body = bodies["small"]
    if "model" in parts:
        res["model_only"] += model_only.bench_model(name, a.formats, a.batches, a.model_seconds, work, store)
    if not parts & {"served", "stock", "sweep", "precision"}:
        return
    aoti = model_only.artifact(name, Format.AOTI, work, store)
    threads = str(Manifest.read(aoti).serving.threads)
    res["settings"] |= {"batch_settings": served.batch_settings(aoti), "threads": threads}
    if parts & {"served", "stock", "sweep"}:
        _served_small(name, a, res, body, parts, threads)
    if "precision" in parts:
        if res["settings"]["stock_default"] == "-":
            res["settings"]["stock_default"] = precision.STOCK
        precision.measure(name, a, res, bodies)


def _served_small(
    name: str, a: argparse.Namespace, res: dict[str, Any], body: Path, parts: set[str], threads: str
) -> None:
    """The small photo: ours (AOTI and TorchScript, REST and gRPC), the sweep, stock TorchServe
    (with its default threads and with ours), each stock server without the gateway (stock
    TorchServe is called directly)."""
    work, store = a.work, a.work / "store"
    ts = model_only.artifact(name, Format.TORCHSCRIPT, work, store)
    conc, secs = a.concurrency, a.seconds
    ours_aoti, ours_ts = f"{name}_aoti", f"{name}_torchscript"
    if parts & {"served", "sweep"}:
        with served.running(store, work / "run-ours", [ours_aoti, ours_ts]) as cfg:
            if "served" in parts:
                for model, variant, protos in (
                    (ours_aoti, "ours-aoti", ("rest", "grpc")),
                    (ours_ts, "ours-torchscript", ("rest",)),
                ):
                    served.warm(cfg, model, body, max(conc))
                    for proto in protos:
                        for c in conc:
                            row = served.measure(cfg, model, proto, c, secs, body)
                            tags = SMALL | {"gateway": True}
                            res["served"].append(row | {"model": name, "variant": variant} | tags)
            if "sweep" in parts:
                rows = served.sweep(
                    cfg, store / f"{ours_aoti}.mar", a.sweep, max(conc), a.sweep_seconds, body
                )
                res["sweep"] += _tag(rows, model=name, **SMALL)
    if "stock" in parts:
        stock = served.pack_stock(f"{name}_stock", ts, store, work)
        for variant, env in (
            (precision.STOCK, precision.STOCK_ENV),
            (f"stock (OMP_NUM_THREADS={threads})", {"OMP_NUM_THREADS": threads}),
        ):
            with served.running(store, work / "run-stock", [stock], env=env, gateway=False) as cfg:
                key = "stock_default" if "default" in variant else "stock_matched"
                res["settings"] |= {key: variant, f"{key}_env": served.worker_threads_env(cfg) or None}
                served.warm(cfg, stock, body, max(conc))
                for c in conc:
                    row = served.measure(cfg, stock, "rest", c, secs, body, stages=False)
                    tags = SMALL | {"gateway": False}
                    res["served"].append(row | {"model": name, "variant": variant} | tags)


def extras(name: str, task: Task, a: argparse.Namespace, res: dict[str, Any]) -> None:
    """BERT padding and captioning benches run in-process (model-only): see notes in the summary."""
    store = a.work / "store"
    b = load_bundle(model_only.artifact(name, Format.AOTI, a.work, store), device="cpu")
    if task == Task.CLASSIFY_TEXT:
        res["text"] += bench_padding(b, a.model_seconds)
        res["notes"].append(
            "BERT padding: in-process preprocess+forward (text.py has no pad-to option to serve)."
        )
    elif task == Task.CAPTION:
        res["captions"].append(captions.run(bundle=b, batch=8, beam=3).row())


def run(a: argparse.Namespace) -> dict[str, Any]:
    t0 = time.time()
    a.work.mkdir(parents=True, exist_ok=True)
    bodies = write_workloads(a.work, ["small", *(w for w in a.workloads if w != "small")])
    res: dict[str, Any] = {
        "command": "zooserve bench " + shlex.join(sys.argv[2:])
        if sys.argv[1:2] == ["bench"]
        else a.command_line,
        "machine": summary.machine(),
        "loadavg": Path("/proc/loadavg").read_text().strip(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "models": a.models,
        "model_only": [],
        "served": [],
        "sweep": [],
        "text": [],
        "captions": [],
        "notes": [],
        "settings": {
            "seconds": a.seconds,
            "seconds_model": a.model_seconds,
            "body_bytes": bodies["small"].stat().st_size,
            "workloads": {w: f"{WORKLOADS[w][0]}, {p.stat().st_size} bytes" for w, p in bodies.items()},
            "batch_settings": "-",
            "threads": "-",
            "stock_default": "-",
            "stock_matched": "-",
        },
    }
    for name in a.models:
        task = registry.get(name).task
        if task == Task.CLASSIFY:
            classify(name, a, res, {w: p for w, p in bodies.items() if w in a.workloads or w == "small"})
        elif a.what in ("model", "all"):
            extras(name, task, a, res)
    res["duration_s"] = time.time() - t0
    return res


def write(res: dict[str, Any], a: argparse.Namespace) -> None:
    tables = report.write(res, a.out)
    (a.out / "results.json").write_text(json.dumps(res, indent=1, default=str), "utf-8")
    summary.write_summary(res, tables, a.summary, a.out)
    print(
        f"[bench] wrote {a.summary} and {len(tables)} tables, {len(res['plots'])} plots in {a.out}",
        flush=True,
    )
