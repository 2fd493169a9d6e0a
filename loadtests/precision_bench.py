"""Precision benchmark for docs/precision.md: model-only img/s of fp32 / bf16 / int8 AOTInductor
(and frozen TorchScript fp32, the stock model) and, with ``--served``, REST at concurrency 1 and 16
for ours vs TorchServe's stock ``image_classifier`` handler on the TorchScript file.

    python loadtests/precision_bench.py resnet50 --work /tmp/zq/work --store /tmp/zq/store [--served]

Expects builds named NAME_fp32, NAME_bf16, NAME_int8 (aoti) and NAME_fp32_ts (torchscript) in
--work / --store (``zooserve build NAME --precision P --name NAME_P``). Waits for a quiet machine
(1-min load < --max-load, up to --wait s) and records the load it measured at.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch

from zooserve.runtime.bundle import load_bundle

VARIANTS = ["fp32_ts", "fp32", "bf16", "int8"]


def wait_quiet(max_load: float, wait: float) -> float:
    deadline = time.monotonic() + wait
    while os.getloadavg()[0] >= max_load and time.monotonic() < deadline:
        time.sleep(15)
    return os.getloadavg()[0]


def model_only(name: str, work: Path, batches: list[int], seconds: float, extra: list[Path]) -> list[dict]:
    """``extra``: more .pt2 files (e.g. the other channels_last choice), named by their stem."""
    from zooserve.benchmarks.model_only import time_model
    from zooserve.runtime.bundle import load_artifact

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    rows = []
    cpu = torch.device("cpu")
    models = [(v, work / f"{name}_{v}") for v in VARIANTS if (work / f"{name}_{v}").is_dir()]
    for v, path in models + [(p.stem, p) for p in extra]:
        model = (
            load_bundle(path, device="cpu").modules["model"]
            if path.is_dir()
            else load_artifact(path, "aoti", cpu)
        )
        for bs in batches:
            rate, median = time_model(model, torch.randn(bs, 3, 224, 224), seconds)
            rows.append({"variant": v, "batch": bs, "img_s": round(rate, 1), "ms": round(median * 1e3, 1),
                         "load": round(os.getloadavg()[0], 2)})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    return rows


def served(name: str, work: Path, store: Path, seconds: float, concurrency: list[int]) -> list[dict]:
    from zooserve.benchmarks.served import measure, pack_stock, running, warm
    from zooserve.tune import sample_body

    run = Path("/tmp") / f"precision_bench_{os.getpid()}"
    sstore = run / "store"
    sstore.mkdir(parents=True)
    models = []
    for v in ("fp32", "bf16", "int8"):
        if (store / f"{name}_{v}.mar").is_file():
            shutil.copy(store / f"{name}_{v}.mar", sstore)
            models.append(f"{name}_{v}")
    models.append(pack_stock(f"{name}_stock", work / f"{name}_fp32_ts", sstore, run))
    body = sample_body(run, 3)
    rows = []
    try:
        with running(sstore, run / "server", models) as cfg:
            for m in models:
                warm(cfg, m, body, max(concurrency))
                for c in concurrency:
                    r = measure(cfg, m, "rest", c, seconds, body, stages=False)
                    rows.append({"served": m, "concurrency": c, "rps": round(r["rps"], 1), "p50": r["p50"],
                                 "p99": r["p99"], "errors": r["errors"], "load": round(os.getloadavg()[0], 2)})  # fmt: skip
    finally:
        shutil.rmtree(run, ignore_errors=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model", nargs="?", default="resnet50")
    p.add_argument("--work", type=Path, default=Path(".zooserve/builds"))
    p.add_argument("--store", type=Path, default=Path("model_store"))
    p.add_argument("--batches", default="1,8,16")
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--served", action="store_true")
    p.add_argument("--extra", type=Path, nargs="*", default=[], help="more .pt2 files to time")
    p.add_argument("--served-seconds", type=float, default=15.0)
    p.add_argument("--max-load", type=float, default=0.7)
    p.add_argument("--wait", type=float, default=1200.0)
    p.add_argument("--out", type=Path, default=Path("/tmp/precision_bench.json"))
    a = p.parse_args()
    load = wait_quiet(a.max_load, a.wait)
    print(f"start: 1-min load {load:.2f}", flush=True)
    res = {
        "start_load": load,
        "model": model_only(a.model, a.work, [int(b) for b in a.batches.split(",")], a.seconds, a.extra),
    }
    if a.served:
        res["served"] = served(a.model, a.work, a.store, a.served_seconds, [1, 16])
    a.out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
