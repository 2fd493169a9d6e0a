"""Model-only throughput: the exported artifact called in-process on a ready batch (no decode, no
server) -- the limit the served numbers are compared with."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zooserve.bench.timing import time_calls
from zooserve.export.build import BuildOptions, build
from zooserve.manifest import MANIFEST_FILE
from zooserve.models import registry
from zooserve.runtime.bundle import load_bundle
from zooserve.specs import Format, Precision

EAGER = "eager"  # the prepared nn.Module, not an artifact


def artifact(name: str, fmt: Format, work: Path, store: Path, precision: Precision = Precision.FP32) -> Path:
    """Build dir of ``name`` in ``fmt`` (served as ``NAME_FMT[_PRECISION]``), reused when built."""
    served = f"{name}_{fmt}" + ("" if precision == Precision.FP32 else f"_{precision}")
    bundle = work / served
    if not ((bundle / MANIFEST_FILE).is_file() and (store / f"{served}.mar").is_file()):
        t0 = time.perf_counter()
        print(f"[bench] building {served} ...", flush=True)
        build(name, BuildOptions(format=fmt, precision=precision, archive_name=served), out=store, work=work)
        print(f"[bench] built {served} in {time.perf_counter() - t0:.0f}s", flush=True)
    return bundle


def _model(name: str, fmt: str, work: Path, store: Path, precision: Precision) -> Callable[..., Any]:
    if fmt == EAGER:
        spec = registry.get(name)
        return spec.prepare(spec).targets["model"].module.eval()
    bundle = artifact(name, Format(fmt), work, store, precision=precision)
    return load_bundle(bundle, device="cpu").modules["model"]


def bench_model(
    name: str,
    formats: list[str],
    batches: list[int],
    seconds: float,
    work: Path,
    store: Path,
    precision: Precision = Precision.FP32,
) -> list[dict[str, Any]]:
    """One row per (format, batch): images/s and ms per batch, all cores given to torch."""
    spec = registry.get(name)
    assert spec.input is not None, f"{name}: model-only bench covers image classifiers"
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for fmt in formats:
        if fmt != EAGER and fmt not in spec.formats:
            print(f"[bench] {name}: format {fmt} not supported, skipped", flush=True)
            continue
        model = _model(name, fmt, work, store, precision)
        for bs in batches:
            x = torch.randn(bs, spec.input.channels, spec.input.size, spec.input.size)
            t = time_calls(lambda m=model, x=x: m(x), bs, seconds)
            row = {"model": name, "format": fmt, "precision": str(precision), "batch": bs}
            rows.append(row | {"items_per_s": t.items_per_s, "ms_per_batch": t.median_s * 1e3})
            ms = t.median_s * 1e3
            print(
                f"[bench] model-only {name} {fmt}/{precision} bs{bs}: {t.items_per_s:.1f} img/s, {ms:.1f} ms"
            )
        del model
    return rows
