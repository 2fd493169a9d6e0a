"""``zooserve tune MODEL``: measure workers x threads x batchSize x maxBatchDelay on the served path.

One real TorchServe (free loopback ports, token auth on) serves a variant of the archive per grid
point (its model-config.yaml rewritten); ApacheBench pinned to one core drives it at each
concurrency. The pick: best concurrency-16 throughput, then, among points within 5 % of it, the
lowest concurrency-1 latency (TorchServe's batcher holds a lone request up to maxBatchDelay, so
the delay is paid at low load). ``--apply`` writes the pick into the build's model-config.yaml
and re-packs the archive.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path
from typing import Any

import torch
import yaml

from zooserve.bench import loadgen
from zooserve.bench.samples import write_body
from zooserve.bench.served import running
from zooserve.bench.timing import time_calls
from zooserve.errors import UserError
from zooserve.export.archive import pack, rewrite_config, write_model_config
from zooserve.manifest import CONFIG_FILE, MANIFEST_FILE, Manifest
from zooserve.runtime.bundle import load_bundle
from zooserve.serving.server import management, read_keys

THROUGHPUT_SLACK = 0.05  # a point within 5 % of the best throughput counts as "as fast"
LONE_SLACK_MS = 10.0  # a lone request may take at most model latency + this


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="served name (model_store/NAME.mar built from .zooserve/builds/NAME)")
    p.add_argument("--workers", default="1", help="comma list (default 1)")
    p.add_argument("--threads", default="1,2", help="torch threads per worker (workers x threads <= cores)")
    p.add_argument("--batch", default="1,8", help="batchSize values")
    p.add_argument(
        "--delay", default="1,5", help="maxBatchDelay values (ms; 0 means TorchServe's 100 ms default)"
    )
    p.add_argument("--concurrency", default="1,16", help="client concurrencies (first low, last high)")
    p.add_argument("--seconds", type=float, default=8.0, help="seconds per load point")
    p.add_argument("--apply", action="store_true", help="write the pick into the archive's model-config.yaml")
    p.add_argument("--store", type=Path, default=Path("model_store"))
    p.add_argument("--work", type=Path, default=Path(".zooserve/builds"))
    p.add_argument("--run-dir", type=Path, default=Path(".zooserve/tune"))


def grid(a: argparse.Namespace) -> list[dict[str, int]]:
    cores = len(os.sched_getaffinity(0))
    points = [
        {"workers": w, "threads": t, "batch": b, "delay": d}
        for w, t, b, d in itertools.product(
            _ints(a.workers), _ints(a.threads), _ints(a.batch), _ints(a.delay)
        )
        if w * t <= cores  # oversubscribing the cores only ever lost (2 workers x 2 threads: 2.7x slower)
    ]
    # a batch of one never waits, so its delay values are all the same point
    return [p for p in points if p["batch"] > 1 or p["delay"] == min(_ints(a.delay))]


def apply_point(cfg: dict[str, Any], point: dict[str, int]) -> dict[str, Any]:
    return cfg | {
        "minWorkers": point["workers"],
        "maxWorkers": point["workers"],
        "batchSize": point["batch"],
        "maxBatchDelay": point["delay"],
        "zooserve": {**cfg.get("zooserve", {}), "threads": point["threads"]},
    }


def model_latency_ms(bundle_dir: Path, threads: int, seconds: float = 3.0) -> float:
    """Batch-1 forward of the built artifact in this process (the floor a lone request can reach)."""
    torch.set_num_threads(threads)
    bundle = load_bundle(bundle_dir, device="cpu")
    spec = bundle.manifest.input
    assert spec is not None, "tune measures image models"
    x = torch.randn(1, spec.channels, spec.size, spec.size)
    model = bundle.modules["model"]
    return 1e3 * time_calls(lambda: model(x), 1, seconds, warmup=3, min_calls=5).median_s


def measure_grid(
    a: argparse.Namespace, src_mar: Path, body: Path, points: list[dict[str, int]]
) -> list[dict]:
    store = a.run_dir / "store"
    store.mkdir(parents=True, exist_ok=True)
    rows = []
    # TorchServe will not start on an empty store
    rewrite_config(src_mar, store / "tune0.mar", lambda c: apply_point(c, points[0]))
    with running(store, a.run_dir / "server", ["tune0"]) as cfg:
        mgmt = management(cfg)
        for i, p in enumerate(points):
            name = f"tune{i}"
            if i:
                rewrite_config(src_mar, store / f"{name}.mar", lambda c, p=p: apply_point(c, p))
                mgmt.register(f"{name}.mar", name, p["workers"])
            try:
                url, token = f"{cfg.url()}/predictions/{name}", read_keys(cfg).get("inference")
                loadgen.run_ab(url, body, token, max(_ints(a.concurrency)), 2)  # warm-up
                row: dict[str, Any] = dict(p)
                for c in _ints(a.concurrency):
                    r = loadgen.run_ab(url, body, token, c, a.seconds)
                    row |= {
                        f"rps_c{c}": r["rps"],
                        f"p50_c{c}": r["p50"],
                        f"p99_c{c}": r["p99"],
                        f"errors_c{c}": r["errors"],
                    }
                rows.append(row)
                print(_line(row, _ints(a.concurrency)), flush=True)
            finally:
                mgmt.unregister(name)
                (store / f"{name}.mar").unlink(missing_ok=True)
    return rows


def _line(row: dict[str, Any], conc: list[int]) -> str:
    cells = [f"{row['workers']:>7} {row['threads']:>7} {row['batch']:>5} {row['delay']:>8}"]
    cells += [f"{row[f'rps_c{c}']:>9.1f} {row[f'p50_c{c}'] or 0:>8}" for c in conc]
    return "  ".join(cells)


def pick(rows: list[dict[str, Any]], conc: list[int], floor_ms: float | None = None) -> dict[str, Any]:
    """Best high-concurrency throughput; within 5 % of it, prefer points whose lone-request p50 is
    <= model latency + 10 ms, then the lowest lone-request p50. ``met`` says whether both held."""
    lo, hi = f"p50_c{min(conc)}", f"rps_c{max(conc)}"
    best = max(r[hi] for r in rows)
    near = [r for r in rows if r[hi] >= (1 - THROUGHPUT_SLACK) * best]
    ok = [r for r in near if floor_ms is None or (r[lo] or 1e9) <= floor_ms + LONE_SLACK_MS]
    return min(ok or near, key=lambda r: (r[lo] or 1e9, -r[hi])) | {"met": bool(ok)}


def apply(a: argparse.Namespace, point: dict[str, int]) -> Path:
    """Write the pick into the build's model-config.yaml and re-pack the archive from it."""
    bundle = a.work / a.model
    cfg = yaml.safe_load((bundle / CONFIG_FILE).read_text("utf-8"))
    write_model_config(bundle / CONFIG_FILE, apply_point(cfg, point))
    manifest = Manifest.read(bundle)
    return pack(a.model, bundle, next(iter(manifest.artifacts.values())), a.store)


def main(args: argparse.Namespace) -> None:
    a = args
    try:
        points, conc = grid(a), _ints(a.concurrency)
    except ValueError:
        raise UserError("--workers/--threads/--batch/--delay/--concurrency take integers like 1,2") from None
    src_mar, bundle = a.store / f"{a.model}.mar", a.work / a.model
    if not src_mar.is_file() or not (bundle / MANIFEST_FILE).is_file():
        raise UserError(f"{a.model}: need {src_mar} and its build dir {bundle} (zooserve build {a.model})")
    if 0 in _ints(a.delay):
        print(
            "note: TorchServe treats maxBatchDelay 0 as its 100 ms default (measured); 1 is the shortest wait"
        )
    if not points or not conc or a.seconds <= 0:
        raise UserError("empty grid: workers x threads must fit the cores and every list needs a value")
    a.run_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.read(bundle)
    floor = model_latency_ms(bundle, max(p["threads"] for p in points))
    print(
        f"{a.model}: model-only batch-1 latency {floor:.1f} ms; {len(points)} grid points x {conc} "
        f"concurrency x {a.seconds:g} s (load {os.getloadavg()[0]:.2f})"
    )
    head = f"{'workers':>7} {'threads':>7} {'batch':>5} {'delay_ms':>8}  "
    print(head + "  ".join(f"{'req/s c' + str(c):>9} {'p50 ms':>8}" for c in conc), flush=True)
    channels = manifest.input.channels if manifest.input else None
    rows = measure_grid(a, src_mar, write_body(a.run_dir, channels), points)
    best = pick(rows, conc, floor)
    lone = best[f"p50_c{min(conc)}"] or 0
    print(
        f"pick: workers={best['workers']} threads={best['threads']} batchSize={best['batch']} "
        f"maxBatchDelay={best['delay']} ({best[f'rps_c{max(conc)}']:.1f} req/s at c{max(conc)}, "
        f"lone p50 {lone} ms vs model {floor:.1f} ms)"
    )
    if not best["met"]:
        print(
            f"note: no point keeps both c{max(conc)} throughput within 5 % of the best and the lone "
            f"request within model latency + {LONE_SLACK_MS:g} ms; picked for throughput"
        )
    (a.run_dir / "tune.json").write_text(
        json.dumps({"model_ms": floor, "rows": rows, "pick": best}, indent=1)
    )
    if a.apply:
        print(f"applied to {bundle / 'model-config.yaml'} and re-packed {apply(a, best)}")
