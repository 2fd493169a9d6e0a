"""``zooserve bench precision MODEL``: model-only img/s of fp32 / bf16 / int8 AOTInductor (and
frozen TorchScript fp32, the stock model) and, served, REST at each concurrency for ours in every
precision vs TorchServe's stock ``image_classifier`` handler on the TorchScript file, in one run.
Results go to ``OUT/precision.json`` (docs/precision.md quotes them)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import torch

from zooserve.bench import model_only, served
from zooserve.bench.samples import write_body
from zooserve.bench.timing import time_calls
from zooserve.models import registry
from zooserve.runtime.bundle import load_bundle
from zooserve.specs import Format, Precision

REDUCED = (Precision.BF16, Precision.INT8)


def variants(name: str, work: Path, store: Path) -> dict[str, Path]:
    """label -> build dir: TorchScript fp32 and AOTI in each precision (built when missing)."""
    out = {"torchscript-fp32": model_only.artifact(name, Format.TORCHSCRIPT, work, store)}
    out["aoti-fp32"] = model_only.artifact(name, Format.AOTI, work, store)
    for p in REDUCED:
        out[f"aoti-{p}"] = model_only.artifact(name, Format.AOTI, work, store, precision=p)
    return out


def model_rows(
    name: str, builds: dict[str, Path], batches: list[int], seconds: float
) -> list[dict[str, Any]]:
    spec = registry.get(name).input
    assert spec is not None
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    rows = []
    for label, bundle in builds.items():
        model = load_bundle(bundle, device="cpu").modules["model"]
        for bs in batches:
            x = torch.randn(bs, spec.channels, spec.size, spec.size)
            t = time_calls(lambda m=model, x=x: m(x), bs, seconds)
            rows.append(
                {
                    "variant": label,
                    "batch": bs,
                    "img_s": round(t.items_per_s, 1),
                    "ms": round(t.median_s * 1e3, 1),
                    "load": round(os.getloadavg()[0], 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return rows


def served_rows(
    name: str, builds: dict[str, Path], a: argparse.Namespace, body: Path
) -> list[dict[str, Any]]:
    store = a.work / "store"
    models = [b.name for label, b in builds.items() if label.startswith("aoti")]
    models.append(served.pack_stock(f"{name}_stock", builds["torchscript-fp32"], store, a.work))
    rows = []
    with served.running(store, a.work / "run-precision", models) as cfg:
        for m in models:
            served.warm(cfg, m, body, max(a.concurrency))
            for c in a.concurrency:
                r = served.measure(cfg, m, "rest", c, a.seconds, body, stages=False)
                rows.append(
                    {
                        "served": m,
                        "concurrency": c,
                        "rps": round(r["rps"], 1),
                        "p50": r["p50"],
                        "p99": r["p99"],
                        "errors": r["errors"],
                        "load": round(os.getloadavg()[0], 2),
                    }
                )
    return rows


def run(a: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"start_load": os.getloadavg()[0], "models": {}}
    body = write_body(a.work, channels=3)
    for name in a.models:
        builds = variants(name, a.work, a.work / "store")
        results["models"][name] = {
            "model_only": model_rows(name, builds, a.batches, a.model_seconds),
            "served": served_rows(name, builds, a, body),
        }
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "precision.json").write_text(json.dumps(results, indent=1), "utf-8")
    return results
