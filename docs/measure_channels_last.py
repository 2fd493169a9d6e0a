"""fp32 AOTInductor with and without channels_last, per family: model-only img/s at batch 8, all
artifacts loaded in one process and timed in interleaved, shuffled rounds (ratios are taken within a
round, so load from other processes hits both sides alike). Issue 16, docs/precision.md.

    python docs/measure_channels_last.py alexnet resnet50 --cache /tmp/cl --rounds 12

Artifacts are built with zooserve's own compile path (``compile_aoti``: freezing, autograd off) into
``--cache`` (``NAME_fp32.pt2``, ``NAME_fp32cl.pt2``) unless already there; channels_last is the
``CastWrapper(float32, channels_last=True)`` the bf16 build uses, 1-input-channel convs kept NCHW.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from zooserve.export import precision as P
from zooserve.export.aoti import compile_aoti
from zooserve.models import registry


def build(name: str, cache: Path) -> dict[str, Path]:
    out = {}
    for tag in ("fp32", "fp32cl"):
        path = cache / f"{name}_{tag}.pt2"
        if not path.exists():
            spec = registry.get(name)
            torch.manual_seed(0)
            target = spec.prepare(spec).targets["model"]
            if tag == "fp32cl":
                target = replace(target, module=P.CastWrapper(target.module, torch.float32, True))
            t0 = time.time()
            compile_aoti(target, path)
            print(f"built {path.name} in {time.time() - t0:.0f} s", flush=True)
        out[tag] = path
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/zooserve-channels-last"))
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--calls", type=int, default=2, help="calls per artifact per round")
    a = ap.parse_args()
    a.cache.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    arts = {(m, tag): p for m in a.models for tag, p in build(m, a.cache).items()}
    loaded = {k: torch._inductor.aoti_load_package(str(p)) for k, p in arts.items()}
    x = torch.randn(a.batch, 3, 224, 224)
    load0 = os.getloadavg()
    rates: dict[tuple[str, str], list[float]] = {k: [] for k in loaded}
    rng = random.Random(0)
    with torch.inference_mode():
        for f in loaded.values():
            f(x)
            f(x)
        for _ in range(a.rounds):
            order = list(loaded.items())
            rng.shuffle(order)
            for k, f in order:
                t0 = time.perf_counter()
                for _ in range(a.calls):
                    f(x)
                rates[k].append(a.batch * a.calls / (time.perf_counter() - t0))
    load1 = os.getloadavg()
    print(f"threads {torch.get_num_threads()}, batch {a.batch}, rounds {a.rounds}; load {load0} -> {load1}")
    for m in a.models:
        plain, cl = rates[(m, "fp32")], rates[(m, "fp32cl")]
        ratios = [c / p for c, p in zip(cl, plain, strict=True)]
        print(
            json.dumps(
                {
                    "model": m,
                    "channels_last_over_plain_same_round_median": round(statistics.median(ratios), 3),
                    "rounds_channels_last_faster": sum(r > 1 for r in ratios),
                    "plain_img_s_median_best": [round(statistics.median(plain), 1), round(max(plain), 1)],
                    "cl_img_s_median_best": [round(statistics.median(cl), 1), round(max(cl), 1)],
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
