"""``zooserve tune MODEL``: measure workers x threads x batchSize x maxBatchDelay on the served path.

One real TorchServe (free loopback ports, token auth on) serves a variant of the archive per grid
point (its model-config.yaml rewritten); ApacheBench pinned to one core drives it at each
concurrency. The pick: best concurrency-16 throughput, then, among points within 5 % of it, the
lowest concurrency-1 latency (TorchServe's batcher holds a lone request up to maxBatchDelay, so
the delay is paid at low load). ``--apply`` writes the pick into the build's model-config.yaml
and re-packs the archive.

Imports stay light at module level: cli.py builds this parser on every command.
"""

from __future__ import annotations

import argparse
import itertools
import os
from pathlib import Path
from typing import Any

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


def variant(src_mar: Path, dst: Path, point: dict[str, int]) -> Path:
    """A copy of the archive whose model-config.yaml carries this grid point."""
    import zipfile

    import yaml

    with zipfile.ZipFile(src_mar) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "model-config.yaml":
                data = yaml.safe_dump(apply_point(yaml.safe_load(data), point), sort_keys=False).encode()
            zout.writestr(info, data)
    return dst


def apply_point(cfg: dict[str, Any], point: dict[str, int]) -> dict[str, Any]:
    return cfg | {
        "minWorkers": point["workers"], "maxWorkers": point["workers"],
        "batchSize": point["batch"], "maxBatchDelay": point["delay"],
        "zooserve": {**cfg.get("zooserve", {}), "threads": point["threads"]},
    }  # fmt: skip


def model_latency_ms(bundle_dir: Path, threads: int, seconds: float = 3.0) -> float:
    """Batch-1 forward of the built artifact in this process (the floor a lone request can reach)."""
    import time

    import torch

    from zooserve.runtime.bundle import load_bundle

    torch.set_num_threads(threads)
    bundle = load_bundle(bundle_dir, device="cpu")
    spec = bundle.meta["input"]
    x = torch.randn(1, spec["channels"], spec["size"], spec["size"])
    model = bundle.modules["model"]
    with torch.inference_mode():
        for _ in range(3):
            model(x)
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds or n < 5:
            model(x)
            n += 1
    return 1e3 * (time.perf_counter() - t0) / n


def sample_body(run_dir: Path, channels: int) -> Path:
    """china.jpg (a real 640x427 photo) or, for 1-channel models, a digit PNG."""
    body = run_dir / "body.bin"
    if channels == 1:
        from torchvision.io import encode_png

        from zooserve.models.lenet import digits_split

        body.write_bytes(bytes(encode_png(digits_split()[2][0]).numpy()))
    else:
        import io

        from PIL import Image
        from sklearn.datasets import load_sample_image

        buf = io.BytesIO()
        Image.fromarray(load_sample_image("china.jpg")).save(buf, "JPEG", quality=90)
        body.write_bytes(buf.getvalue())
    return body


def register(cfg: Any, name: str, workers: int) -> None:
    import requests

    from zooserve import server

    headers = {"Authorization": f"Bearer {server.read_keys(cfg)['management']}"}
    r = requests.post(f"{cfg.url('management')}/models", headers=headers, timeout=600,
                      params={"url": f"{name}.mar", "model_name": name, "initial_workers": workers,
                              "synchronous": "true"})  # fmt: skip
    r.raise_for_status()


def measure_grid(
    a: argparse.Namespace, src_mar: Path, body: Path, points: list[dict[str, int]]
) -> list[dict]:
    from zooserve.benchmarks import loadgen
    from zooserve.benchmarks.served import running, unregister
    from zooserve.server import read_keys

    store = a.run_dir / "store"
    store.mkdir(parents=True, exist_ok=True)
    rows = []
    variant(src_mar, store / "tune0.mar", points[0])  # TorchServe will not start on an empty store
    with running(store, a.run_dir / "server", ["tune0"]) as cfg:
        for i, p in enumerate(points):
            name = f"tune{i}"
            if i:
                variant(src_mar, store / f"{name}.mar", p)
                register(cfg, name, p["workers"])
            try:
                url, token = f"{cfg.url()}/predictions/{name}", read_keys(cfg).get("inference")
                loadgen.run_ab(url, body, token, max(_ints(a.concurrency)), 2)  # warm-up
                row: dict[str, Any] = dict(p)
                for c in _ints(a.concurrency):
                    r = loadgen.run_ab(url, body, token, c, a.seconds)
                    row |= {f"rps_c{c}": r["rps"], f"p50_c{c}": r["p50"], f"p99_c{c}": r["p99"],
                            f"errors_c{c}": r["errors"]}  # fmt: skip
                rows.append(row)
                print(_line(row, _ints(a.concurrency)), flush=True)
            finally:
                unregister(cfg, name)
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
    import json

    import yaml

    from zooserve.export.archive import CONFIG_FILE, pack, write_model_config
    from zooserve.runtime.bundle import META_FILE

    bundle = a.work / a.model
    cfg = yaml.safe_load((bundle / CONFIG_FILE).read_text("utf-8"))
    write_model_config(bundle / CONFIG_FILE, apply_point(cfg, point))
    meta = json.loads((bundle / META_FILE).read_text("utf-8"))
    return pack(a.model, bundle, meta["artifacts"][next(iter(meta["artifacts"]))], a.store)


def main(args: argparse.Namespace) -> None:
    from zooserve.errors import UserError

    a = args
    try:
        points, conc = grid(a), _ints(a.concurrency)
    except ValueError:
        raise UserError("--workers/--threads/--batch/--delay/--concurrency take integers like 1,2") from None
    src_mar, bundle = a.store / f"{a.model}.mar", a.work / a.model
    if not src_mar.is_file() or not (bundle / "zooserve.json").is_file():
        raise UserError(f"{a.model}: need {src_mar} and its build dir {bundle} (zooserve build {a.model})")
    if 0 in _ints(a.delay):
        print(
            "note: TorchServe treats maxBatchDelay 0 as its 100 ms default (measured); 1 is the shortest wait"
        )
    if not points or not conc or a.seconds <= 0:
        raise UserError("empty grid: workers x threads must fit the cores and every list needs a value")
    import json

    a.run_dir.mkdir(parents=True, exist_ok=True)
    meta = json.loads((bundle / "zooserve.json").read_text("utf-8"))
    floor = model_latency_ms(bundle, max(p["threads"] for p in points))
    print(f"{a.model}: model-only batch-1 latency {floor:.1f} ms; {len(points)} grid points x {conc} "
          f"concurrency x {a.seconds:g} s (load {os.getloadavg()[0]:.2f})")  # fmt: skip
    head = f"{'workers':>7} {'threads':>7} {'batch':>5} {'delay_ms':>8}  "
    print(head + "  ".join(f"{'req/s c' + str(c):>9} {'p50 ms':>8}" for c in conc), flush=True)
    rows = measure_grid(a, src_mar, sample_body(a.run_dir, meta["input"]["channels"]), points)
    best = pick(rows, conc, floor)
    lone = best[f"p50_c{min(conc)}"] or 0
    print(f"pick: workers={best['workers']} threads={best['threads']} batchSize={best['batch']} "
          f"maxBatchDelay={best['delay']} ({best[f'rps_c{max(conc)}']:.1f} req/s at c{max(conc)}, "
          f"lone p50 {lone} ms vs model {floor:.1f} ms)")  # fmt: skip
    if not best["met"]:
        print(f"note: no point keeps both c{max(conc)} throughput within 5 % of the best and the lone "
              f"request within model latency + {LONE_SLACK_MS:g} ms; picked for throughput")  # fmt: skip
    (a.run_dir / "tune.json").write_text(
        json.dumps({"model_ms": floor, "rows": rows, "pick": best}, indent=1)
    )
    if a.apply:
        print(f"applied to {bundle / 'model-config.yaml'} and re-packed {apply(a, best)}")
