"""The precision and photo part of ``zooserve bench`` (``precision``, and in ``all``): for each
precision (fp32 / bf16 / int8 AOTInductor) its model-only limit, then each photo workload
(``samples.WORKLOADS``: the small photo and a 12 MP camera JPEG) served over REST by ours through
the gateway (the product), by ours on TorchServe alone (``--no-gateway``: what the gateway costs),
and by TorchServe's stock ``image_classifier`` handler on the fp32 TorchScript file, all in one run.
Rows join the run's ``model_only`` / ``served`` lists, tagged with ``precision``, ``workload`` and
``gateway``; ``summary`` turns them into the targets."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from zooserve.bench import model_only, served
from zooserve.specs import Format, Precision

DIRECT = " (no gateway)"
STOCK = "stock (default threads)"  # the same variant name as the stock part of the run
STOCK_ENV: dict[str, str | None] = {"OMP_NUM_THREADS": None, "MKL_NUM_THREADS": None}


def variant(precision: Precision | str, gateway: bool = True) -> str:
    """Our served variant's name: ``ours-aoti`` (fp32, as the served part names it), ``ours-aoti-bf16``..."""
    name = "ours-aoti" if precision == Precision.FP32 else f"ours-aoti-{precision}"
    return name if gateway else name + DIRECT


def _done(res: dict[str, Any], name: str) -> set[tuple[str, str, int]]:
    """(variant, workload, concurrency) already measured in this run (``all``'s served/stock parts)."""
    return {
        (r["variant"], r.get("workload", "small"), r["concurrency"])
        for r in res["served"]
        if r.get("model") == name and r.get("proto", "rest") == "rest"
    }


def measure(name: str, a: argparse.Namespace, res: dict[str, Any], bodies: dict[str, Path]) -> None:
    work, store = a.work, a.work / "store"
    precisions = [Precision(p) for p in a.precisions]
    builds = {p: model_only.artifact(name, Format.AOTI, work, store, precision=p) for p in precisions}
    measured = {
        (r.get("format"), r.get("precision", "fp32")) for r in res["model_only"] if r["model"] == name
    }
    for p in precisions:
        if ("aoti", str(p)) not in measured:
            res["model_only"] += model_only.bench_model(
                name, ["aoti"], a.batches, a.model_seconds, work, store, precision=p
            )
    ours = {p: b.name for p, b in builds.items()}
    stock = served.pack_stock(
        f"{name}_stock", model_only.artifact(name, Format.TORCHSCRIPT, work, store), store, work
    )
    conc = a.concurrency
    ends = sorted({min(conc), max(conc)})

    def point(cfg: Any, model: str, label: str, p: Precision, w: str, c: int, gateway: bool) -> None:
        if (label, w, c) in _done(res, name):
            return
        stages = not label.startswith("stock")
        row = served.measure(cfg, model, "rest", c, a.seconds, bodies[w], stages=stages)
        tags = {"precision": str(p), "workload": w, "gateway": gateway}
        res["served"].append(row | {"model": name, "variant": label} | tags)

    with served.running(store, work / "run-ours", list(ours.values())) as cfg:
        for p, m in ours.items():
            for w, body in bodies.items():
                served.warm(cfg, m, body, max(conc))
                for c in conc:
                    point(cfg, m, variant(p), p, w, c, gateway=True)
    with served.running(
        store, work / "run-direct", [*ours.values(), stock], env=STOCK_ENV, gateway=False
    ) as cfg:
        for p, m in ours.items():
            for w, body in bodies.items():
                served.warm(cfg, m, body, max(conc))
                for c in ends:
                    point(cfg, m, variant(p, gateway=False), p, w, c, gateway=False)
        for w, body in bodies.items():
            served.warm(cfg, stock, body, max(conc))
            for c in conc:
                point(cfg, stock, STOCK, Precision.FP32, w, c, gateway=False)
