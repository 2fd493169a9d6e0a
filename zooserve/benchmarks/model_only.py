"""Model-only throughput: the exported artifact called in-process on a ready batch (no decode, no
server) -- the limit the served numbers are compared with."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zooserve.export.build import BuildOptions, build
from zooserve.runtime.bundle import META_FILE, load_bundle


def artifact(name: str, fmt: str, work: Path, store: Path) -> Path:
    """Build dir of ``name`` in ``fmt`` (served as ``NAME_FMT``), reused when already built."""
    served = f"{name}_{fmt}"
    bundle = work / served
    meta = bundle / META_FILE
    if not (meta.is_file() and (store / f"{served}.mar").is_file()):
        t0 = time.perf_counter()
        print(f"[bench] building {served} ...", flush=True)
        build(name, BuildOptions(format=fmt, archive_name=served), out=store, work=work)
        print(f"[bench] built {served} in {time.perf_counter() - t0:.0f}s", flush=True)
    return bundle


def _model(name: str, fmt: str, work: Path, store: Path) -> Callable[..., Any]:
    if fmt == "eager":
        from zooserve.models import registry

        spec = registry.get(name)
        return spec.prepare(spec).targets["model"].module.eval()
    return load_bundle(artifact(name, fmt, work, store), device="cpu").modules["model"]


def time_model(model: Callable[..., Any], x: torch.Tensor, seconds: float) -> tuple[float, float]:
    """(items/s, median seconds per call): two warm-up calls, then calls until ``seconds`` pass
    (at least 3)."""
    with torch.inference_mode():
        for _ in range(2):
            model(x)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < 3 or time.perf_counter() - start < seconds:
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    times.sort()
    return x.shape[0] * len(times) / sum(times), times[len(times) // 2]


def bench_model(
    name: str, formats: list[str], batches: list[int], seconds: float, work: Path, store: Path
) -> list[dict[str, Any]]:
    """One row per (format, batch): images/s and ms per batch, all cores given to torch."""
    from zooserve.models import registry

    spec = registry.get(name)
    assert spec.input is not None, f"{name}: model-only bench covers image classifiers"
    torch.set_num_threads(os.cpu_count() or 1)
    rows = []
    for fmt in formats:
        if fmt != "eager" and fmt not in spec.formats:
            print(f"[bench] {name}: format {fmt} not supported, skipped", flush=True)
            continue
        model = _model(name, fmt, work, store)
        for bs in batches:
            x = torch.randn(bs, spec.input.channels, spec.input.size, spec.input.size)
            rate, median = time_model(model, x, seconds)
            rows.append(
                {"model": name, "format": fmt, "batch": bs, "items_per_s": rate, "ms_per_batch": median * 1e3}
            )
            print(
                f"[bench] model-only {name} {fmt} bs{bs}: {rate:.1f} img/s, {median * 1e3:.1f} ms", flush=True
            )
        del model
    return rows


def best(rows: list[dict[str, Any]], model: str, fmt: str) -> dict[str, Any] | None:
    cands = [r for r in rows if r["model"] == model and r["format"] == fmt]
    return max(cands, key=lambda r: r["items_per_s"]) if cands else None


def dump(rows: list[dict[str, Any]], path: Path) -> None:
    path.write_text(json.dumps(rows, indent=1), "utf-8")
