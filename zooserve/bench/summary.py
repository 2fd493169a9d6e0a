"""The issue targets computed from one run, and ``docs/benchmarks.md`` (all numbers from that run)."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch


def _pick(rows: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(r.get(k) == v for k, v in match.items())]


def targets(res: dict[str, Any], model: str) -> list[dict[str, Any]]:
    """One row per target: measured value, goal, met, and the numbers it came from."""
    mo, sv = _pick(res.get("model_only", []), model=model), _pick(res.get("served", []), model=model)
    aoti = _pick(mo, format="aoti")
    ours = _pick(sv, variant="ours-aoti")
    rest, grpc = _pick(ours, proto="rest"), _pick(ours, proto="grpc")
    out: list[dict[str, Any]] = []
    if aoti and rest:
        best, top = max(aoti, key=lambda r: r["items_per_s"]), max(rest, key=lambda r: r["rps"])
        out.append(
            _t(
                "served REST ÷ AOTI model-only (best batch)",
                top["rps"] / best["items_per_s"],
                0.8,
                f"{top['rps']:.1f} req/s at c{top['concurrency']} ÷ "
                f"{best['items_per_s']:.1f} img/s at bs{best['batch']}",
            )
        )
    cmax = max((r["concurrency"] for r in rest), default=None)
    for stock in sorted({r["variant"] for r in sv if r["variant"].startswith("stock")}):
        a, b = _pick(rest, concurrency=cmax), _pick(sv, variant=stock, proto="rest", concurrency=cmax)
        if a and b:
            out.append(
                _t(
                    f"ours ÷ {stock}, REST c{cmax}",
                    a[0]["rps"] / b[0]["rps"],
                    1.5,
                    f"{a[0]['rps']:.1f} ÷ {b[0]['rps']:.1f} req/s",
                )
            )
    for g in grpc:
        r = _pick(rest, concurrency=g["concurrency"])
        if r:
            out.append(
                _t(
                    f"gRPC ÷ REST, c{g['concurrency']}",
                    g["rps"] / r[0]["rps"],
                    1.0,
                    f"{g['rps']:.1f} ÷ {r[0]['rps']:.1f} req/s",
                )
            )
    lone, bs1 = _pick(rest, concurrency=1), _pick(aoti, batch=1)
    if lone and bs1 and lone[0]["p50"] is not None:
        goal = bs1[0]["ms_per_batch"] + 10
        out.append(
            _t(
                "lone request p50 (ms) ≤ AOTI bs1 + 10 ms",
                lone[0]["p50"],
                goal,
                f"p50 {lone[0]['p50']:.1f} ms vs bs1 {bs1[0]['ms_per_batch']:.1f} ms + 10",
                lower=True,
            )
        )
    return out


def _t(name: str, value: float, goal: float, basis: str, lower: bool = False) -> dict[str, Any]:
    met = value <= goal if lower else value >= goal
    miss = f"{'over' if lower else 'short'} by {abs(value - goal):.2f} ({abs(value / goal - 1) * 100:.0f} %)"
    gap = "" if met else miss
    return {"target": name, "value": value, "goal": goal, "met": met, "basis": basis, "gap": gap}


def where_time_goes(res: dict[str, Any], model: str) -> list[str]:
    """Per-stage lines for our REST runs: handler time per batch and what is outside the handler."""
    lines = []
    for r in _pick(res.get("served", []), model=model, variant="ours-aoti"):
        if not r.get("handler_ms"):
            continue
        per_req = r["handler_ms"] / r["batch_mean"]
        lines.append(
            f"- {r['proto']} c{r['concurrency']}: mean batch {r['batch_mean']:.1f}; per batch decode "
            f"{r['decode_ms']:.1f} + preprocess {r['preprocess_ms']:.1f} + inference "
            f"{r['inference_ms']:.1f} + postprocess {r['postprocess_ms']:.1f} ms = handler "
            f"{r['handler_ms']:.1f} ms ({per_req:.1f} ms/request); "
            f"handler busy {r.get('handler_share', 0):.0f} % of the wall time, the rest is TorchServe "
            f"(frontend, queue, worker IPC) and the load generator; p50 {r['p50']:.1f} ms."
        )
    return lines


def machine() -> dict[str, str]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        ts = version("torchserve")
    except PackageNotFoundError:
        ts = "?"
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "torchserve": ts,
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def _load_warning(loadavg: str) -> list[str]:
    """The numbers only mean something on a quiet machine: say so when it was not."""
    one = float(loadavg.split()[0])
    if one <= 0.7:
        return []
    return [
        f"**Warning: the 1-min load average was {one:.2f} (> 0.7) when this run started: other processes "
        "shared the cores, so absolute numbers and the ratios between sections measured minutes apart are "
        "not reliable. Re-run on a quiet machine.**",
        "",
    ]


def write_summary(res: dict[str, Any], tables: dict[str, str], path: Path, out_dir: Path) -> None:
    rel = os.path.relpath(out_dir, path.parent)
    m = res["machine"]
    s = res["settings"]
    lines = [
        "# Benchmarks",
        "",
        "Generated by `zooserve bench`; every number below comes from the one run described here.",
        "",
        f"Command: `{res['command']}`",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']}, TorchServe {m['torchserve']}, "
        f"Python {m['python']}, Linux {m['kernel']}. Load average when the run started: {res['loadavg']}. "
        f"Run took {res['duration_s'] / 60:.1f} min (started {res['started']}).",
        "",
        *_load_warning(res["loadavg"]),
        "## Method",
        "",
        "- Model-only: the exported artifact called in-process on a random batch, torch threads = "
        f"{os.cpu_count()}, {s['seconds_model']:.1f} s per cell after 2 warm-up calls; images/s = batch × "
        "calls ÷ time in calls.",
        "- Served: TorchServe on free loopback ports, its own run dir, token auth on; body = scikit-learn's "
        f"china.jpg ({s['body_bytes']} bytes) as application/octet-stream; {s['seconds']:.0f} s per point, "
        "after a warm-up of 2×C requests (once per served model); each point ends with one extra request "
        "that waits out what `ab -t` left queued.",
        "- Load generators, pinned to one core (the last) with sched_setaffinity: REST = ApacheBench `ab -k` "
        "(C, keep-alive); gRPC = an asyncio `grpc.aio` client (zooserve/bench/loadgen.py), one process. "
        "Their own CPU time (user+sys from wait4) is in the served table.",
        f"- Batch settings (ours and stock alike): {s['batch_settings']}. Our handler sets torch threads = "
        "`zooserve.threads` from model-config.yaml and 1 inter-op thread. The stock `image_classifier` "
        f"handler sets none: `{s['stock_default']}` runs with TorchServe's/torch's defaults (workers saw "
        f"{s.get('stock_default_env') or 'no OMP_NUM_THREADS'}), `{s['stock_matched']}` with "
        f"OMP_NUM_THREADS={s['threads']} in the server's environment "
        f"(workers saw {s.get('stock_matched_env')}).",
        "- Stock = TorchServe 0.12's `image_classifier` handler (PIL decode + torchvision transforms per "
        "image) serving our build's TorchScript `model.pt`, with an index_to_name.json of our labels.",
        "",
    ]
    for model in res["models"]:
        tg = targets(res, model)
        if tg:
            lines += [
                f"## Targets: {model}",
                "",
                "| target | measured | goal | met | from | gap |",
                "|---|---|---|---|---|---|",
            ]
            lines += [
                f"| {t['target']} | {t['value']:.2f} | {t['goal']:.2f} | {'yes' if t['met'] else '**no**'} | "
                f"{t['basis']} | {t['gap']} |"
                for t in tg
            ]
            lines += ["", "Where the time goes (ours, AOTInductor):", "", *where_time_goes(res, model), ""]
    titles = {
        "model_only.md": "Model-only throughput (the limit)",
        "served.md": "Served throughput and latency",
        "stages.md": "Handler stages (ours)",
        "sweep.md": "batchSize / maxBatchDelay sweep (REST)",
        "text.md": "BERT: dynamic padding vs pad to 150",
        "captions.md": "Captioning: batched vs per-image",
    }
    for name, text in tables.items():
        lines += [f"## {titles.get(name, name)}", "", f"([{name}]({rel}/{name}))", "", text]
    lines += ["## Plots", ""] + [f"![{p}]({rel}/{p})" for p in res.get("plots", [])]
    lines += ["", *res.get("notes", [])]
    path.write_text("\n".join(lines) + "\n", "utf-8")
