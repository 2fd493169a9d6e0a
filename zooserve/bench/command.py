"""``zooserve bench``: model-only limit, served REST/gRPC, stock TorchServe handler, batch sweep,
and every precision on every photo workload (small photo, 12 MP camera JPEG) against stock. The
work lives in the other modules of ``zooserve.bench``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from zooserve.bench import fidelity, run
from zooserve.bench.model_only import EAGER
from zooserve.bench.samples import WORKLOADS
from zooserve.errors import UserError
from zooserve.models import registry
from zooserve.specs import Format, Precision

WHAT = ("model", "served", "stock", "sweep", "all", "precision", "fidelity", "report")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _points(text: str) -> list[tuple[int, int]]:
    """``"1:5,8:20"`` -> [(batchSize, maxBatchDelay ms), ...]"""
    return [(int(b), int(d)) for b, d in (p.split(":") for p in text.split(",") if p.strip())]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "what",
        choices=WHAT,
        help="precision: each precision's model-only limit and, on each photo workload, served through "
        "the gateway, on TorchServe alone, and stock TorchServe; all: every part; fidelity: fast vs exact "
        "JPEG decode on large photos (lenet5 and sharpened ResNets, docs/precision.md); report: tables, "
        "plots and summary again from --out's results.json (no measuring)",
    )
    p.add_argument("models", nargs="*", metavar="MODEL", help="default: resnet50")
    p.add_argument("--formats", default="eager,torchscript,aoti", help="model-only formats")
    p.add_argument("--batches", default="1,8,16,32", help="model-only batch sizes")
    p.add_argument("--concurrency", default="1,4,16", help="served concurrencies")
    p.add_argument("--seconds", type=float, default=15.0, help="seconds per served load point")
    p.add_argument("--model-seconds", type=float, help="seconds per model-only cell (default seconds/4)")
    p.add_argument("--sweep", default="1:5,4:5,16:5,8:1,8:20,8:50", help="batchSize:maxBatchDelay points")
    p.add_argument("--out", type=Path, default=Path("docs/benchmarks"), help="tables, plots, results.json")
    p.add_argument("--summary", type=Path, default=Path("docs/benchmarks.md"))
    p.add_argument("--work", type=Path, default=Path(".zooserve/bench"), help="builds and run dirs (reused)")
    p.add_argument("--precisions", default="fp32,bf16,int8", help="AOTI precisions of the precision part")
    p.add_argument(
        "--workloads",
        default=",".join(WORKLOADS),
        help="photo workloads of the precision part: "
        + "; ".join(f"{k}: {v[0]}" for k, v in WORKLOADS.items()),
    )
    p.add_argument(
        "--images", type=int, default=100, help="fidelity: large photos (and large digits) per model"
    )
    p.add_argument("--quick", action="store_true", help="short smoke run (3 s points, fewer cells)")


def main(args: argparse.Namespace) -> None:
    a = args
    try:
        a.formats = [f for f in a.formats.split(",") if f]
        a.batches, a.concurrency, a.sweep = _ints(a.batches), _ints(a.concurrency), _points(a.sweep)
    except ValueError:
        raise UserError("--batches/--concurrency take integers like 1,8,16; --sweep takes 8:5,16:5") from None
    if a.quick:
        a.seconds = min(a.seconds, 3.0)
        a.batches, a.concurrency, a.sweep = a.batches[:2], a.concurrency[:2], a.sweep[:2]
    a.precisions = [p for p in a.precisions.split(",") if p]
    a.workloads = [w for w in a.workloads.split(",") if w]
    unknown = [f for f in a.formats if f != EAGER and f not in set(Format)]
    unknown += [p for p in a.precisions if p not in (Precision.FP32, Precision.BF16, Precision.INT8)]
    unknown += [w for w in a.workloads if w not in WORKLOADS]
    if unknown or not (a.batches and a.concurrency and a.precisions and a.workloads) or a.seconds <= 0:
        raise UserError(
            f"bad bench options: {', '.join(unknown) or 'empty lists'} (formats {','.join(Format)}, "
            f"precisions fp32,bf16,int8, workloads {','.join(WORKLOADS)}), seconds {a.seconds}"
        )
    a.models = a.models or ["resnet50"]
    for name in a.models:
        registry.get(name)  # unknown names: a clear UserError
    a.model_seconds = a.model_seconds or max(0.5, a.seconds / 4)
    a.sweep_seconds = a.seconds * 2 / 3
    a.command_line = "zooserve bench " + a.what + " " + " ".join(a.models)
    if a.what == "fidelity":
        fidelity.run(a)
    elif a.what == "report":
        try:
            res = json.loads((a.out / "results.json").read_text("utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"no results to report in {a.out}: {e}") from None
        run.write(res, a)
    else:
        run.write(run.run(a), a)
