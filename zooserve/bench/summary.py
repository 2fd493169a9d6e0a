"""The issue targets computed from one run, and ``docs/benchmarks.md`` (all numbers from that run)."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from zooserve.bench import precision
from zooserve.bench.precision import variant

# keys a row may lack (results written before the photo workloads): what it measured then
DEFAULTS = {"workload": "small", "precision": "fp32", "gateway": True, "proto": "rest"}
SERVED_OVER_MODEL = 0.85  # served ÷ model-only at every precision, small photo (issue 16)
OVER_STOCK = {  # (workload, precision) -> ours ÷ stock TorchServe at the highest concurrency
    ("small", "fp32"): 1.5,
    ("small", "bf16"): 3.0,
    ("12mp", "fp32"): 2.5,
    ("12mp", "bf16"): 4.0,
}
PRECISIONS = ("fp32", "bf16", "int8")


def _pick(rows: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(r.get(k, DEFAULTS.get(k)) == v for k, v in match.items())]


def _limit(model_rows: list[dict[str, Any]], precision: str) -> dict[str, Any] | None:
    """The best AOTI model-only cell of ``precision``: the limit served numbers are compared with."""
    rows = _pick(model_rows, format="aoti", precision=precision)
    return max(rows, key=lambda r: r["items_per_s"]) if rows else None


def _stocks(served_rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["variant"] for r in served_rows if r["variant"].startswith("stock")})


def targets(res: dict[str, Any], model: str) -> list[dict[str, Any]]:
    """One row per target: measured value, goal, met, and the numbers it came from."""
    mo, sv = _pick(res.get("model_only", []), model=model), _pick(res.get("served", []), model=model)
    out: list[dict[str, Any]] = []
    rest = _pick(sv, variant=variant("fp32"), proto="rest", workload="small")
    for p in PRECISIONS:
        limit, ours = _limit(mo, p), _pick(sv, variant=variant(p), proto="rest", workload="small")
        if limit and ours:
            top = max(ours, key=lambda r: r["rps"])
            t = _t(
                f"served ÷ model-only, {p}, small photo (REST)",
                top["rps"] / limit["items_per_s"],
                SERVED_OVER_MODEL,
                f"{top['rps']:.1f} req/s at c{top['concurrency']} ÷ "
                f"{limit['items_per_s']:.1f} img/s at bs{limit['batch']}",
            )
            t["gap"] += _at_served_batch(t, mo, p, top["rps"], res.get("settings", {}).get("batch_settings"))
            out.append(t)
    cmax = max((r["concurrency"] for r in _pick(sv, proto="rest")), default=None)
    for (w, p), goal in OVER_STOCK.items():
        a = _pick(sv, variant=variant(p), proto="rest", workload=w, concurrency=cmax)
        for stock in _stocks(_pick(sv, workload=w)):
            b = _pick(sv, variant=stock, workload=w, concurrency=cmax)
            if not (a and b):
                continue
            t = _t(
                f"ours {p} ÷ {stock}, {w} photo, REST c{cmax}",
                a[0]["rps"] / b[0]["rps"],
                goal,
                f"{a[0]['rps']:.1f} ÷ {b[0]['rps']:.1f} req/s",
            )
            limit = _limit(mo, p)
            if not t["met"] and limit:  # the measured explanation: what the model alone allows
                ceiling = limit["items_per_s"] / b[0]["rps"]
                t["gap"] += f"; model-only {p} ceiling ÷ stock = {ceiling:.2f}" + (
                    " (below the goal: the model itself is the limit)" if ceiling < goal else ""
                )
            out.append(t)
    for g in _pick(sv, variant=variant("fp32"), proto="grpc", workload="small"):
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
    lone, bs1 = _pick(rest, concurrency=1), _pick(mo, format="aoti", precision="fp32", batch=1)
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


def _at_served_batch(t: dict[str, Any], mo: list[dict[str, Any]], p: str, rps: float, batch: Any) -> str:
    """When the best model-only batch is bigger than the server forms, the measured explanation:
    the model alone at the served batchSize (what serving can reach without a new batch setting)."""
    size = batch.get("batchSize") if isinstance(batch, dict) else None
    rows = [r for r in _pick(mo, format="aoti", precision=p) if size and r["batch"] <= size]
    if t["met"] or not rows:
        return ""
    best = max(rows, key=lambda r: r["items_per_s"])
    if best["items_per_s"] >= _limit(mo, p)["items_per_s"]:  # type: ignore[index]
        return ""
    return (
        f"; at the served batchSize {size} the model alone does {best['items_per_s']:.1f} img/s "
        f"(bs{best['batch']}): served ÷ that = {rps / best['items_per_s']:.2f}"
    )


def photo_table(res: dict[str, Any], model: str) -> list[str]:
    """Per photo workload and precision, at the highest concurrency: ours through the gateway, ours
    on TorchServe alone, stock, the model-only limit and the ratios; lone-request p50 at c1."""
    mo, sv = _pick(res.get("model_only", []), model=model), _pick(res.get("served", []), model=model)
    rest = _pick(sv, proto="rest")
    if not any(r.get("workload") == "12mp" for r in rest) and not any(
        r.get("precision") != "fp32" for r in rest
    ):
        return []
    concs = sorted({r["concurrency"] for r in rest})
    lo, hi = concs[0], concs[-1]

    def rps(label: str, w: str, c: int, key: str = "rps") -> float | None:
        rows = _pick(rest, variant=label, workload=w, concurrency=c)
        return rows[0].get(key) if rows else None

    def ratio(x: float | None, y: float | None) -> str:
        return f"{x / y:.2f}" if x and y else "-"

    def num(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    stock = precision.STOCK
    lines = [
        f"| photo | precision | ours c{hi} req/s | TorchServe alone c{hi} | stock c{hi} | model-only img/s | "
        f"served ÷ model-only | ours ÷ stock | gateway ÷ alone | c{lo} p50 ms ours / alone / stock |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for w in dict.fromkeys(r.get("workload", "small") for r in rest):
        for p in PRECISIONS:
            ours, alone = rps(variant(p), w, hi), rps(variant(p, gateway=False), w, hi)
            if ours is None and alone is None:
                continue
            st = rps(stock, w, hi)
            limit = _limit(mo, p)
            best = limit["items_per_s"] if limit else None
            p50 = " / ".join(
                num(rps(v, w, lo, "p50")) for v in (variant(p), variant(p, gateway=False), stock)
            )
            lines.append(
                f"| {w} | {p} | {num(ours)} | {num(alone)} | {num(st)} | {num(best)} | {ratio(ours, best)} | "
                f"{ratio(ours, st)} | {ratio(ours, alone)} | {p50} |"
            )
    return lines


def _t(name: str, value: float, goal: float, basis: str, lower: bool = False) -> dict[str, Any]:
    met = value <= goal if lower else value >= goal
    miss = f"{'over' if lower else 'short'} by {abs(value - goal):.2f} ({abs(value / goal - 1) * 100:.0f} %)"
    gap = "" if met else miss
    return {"target": name, "value": value, "goal": goal, "met": met, "basis": basis, "gap": gap}


def served_vs_limit(res: dict[str, Any], model: str) -> list[str]:
    """Why served ÷ model-only is what it is, per precision and photo at the highest concurrency,
    as an exact product: served req/s = handler busy share × inference's share of the handler ×
    the model's speed inside the worker (images per second of inference time), and that speed
    against the model alone on the same machine."""
    mo = _pick(res.get("model_only", []), model=model)
    rows = [
        r
        for r in _pick(res.get("served", []), model=model, proto="rest", gateway=True)
        if r["variant"].startswith("ours-aoti") and r.get("inference_ms") and r.get("handler_share")
    ]
    cmax = max((r["concurrency"] for r in rows), default=None)
    lines = []
    for r in _pick(rows, concurrency=cmax):
        limit = _limit(mo, r.get("precision", "fp32"))
        if not limit:
            continue
        busy, share = r["handler_share"] / 100, r["inference_ms"] / r["handler_ms"]
        speed = 1e3 * r["batch_mean"] / r["inference_ms"]
        lines.append(
            f"- {r.get('precision', 'fp32')} {r.get('workload', 'small')} c{cmax}: served {r['rps']:.1f} ≈ "
            f"{busy:.2f} (handler busy; the rest is queueing, TorchServe and the gateway) × {share:.2f} "
            f"(inference's share of the handler: decode {r['decode_ms']:.1f} + preprocess "
            f"{r['preprocess_ms']:.1f} ms per batch of {r['batch_mean']:.1f}) × {speed:.1f} img/s (the "
            f"model inside the worker) = {busy * share * speed:.1f}; the model alone does "
            f"{limit['items_per_s']:.1f} img/s at bs{limit['batch']}, so the worker's model ran at "
            f"{speed / limit['items_per_s']:.2f} of it.{_cpu_split(r)}"
        )
    return lines


def where_time_goes(res: dict[str, Any], model: str) -> list[str]:
    """Per-stage lines for our REST runs: handler time per batch and what is outside the handler."""
    lines = []
    for r in _pick(res.get("served", []), model=model):
        if not (r["variant"].startswith("ours-aoti") and r.get("handler_ms")):
            continue
        per_req = r["handler_ms"] / r["batch_mean"]
        what = f"{r['variant']} {r.get('workload', 'small')} {r['proto']}"
        lines.append(
            f"- {what} c{r['concurrency']}: mean batch {r['batch_mean']:.1f}; per batch decode "
            f"{r['decode_ms']:.1f} + preprocess {r['preprocess_ms']:.1f} + inference "
            f"{r['inference_ms']:.1f} + postprocess {r['postprocess_ms']:.1f} ms = handler "
            f"{r['handler_ms']:.1f} ms ({per_req:.1f} ms/request); "
            f"handler busy {r.get('handler_share', 0):.0f} % of the wall time, the rest is "
            f"{'the gateway, ' if r.get('gateway', True) else ''}TorchServe (frontend, queue, worker IPC) "
            f"and the load generator; p50 {r['p50']:.1f} ms.{_cpu_split(r)}"
        )
    return lines


def _cpu_split(r: dict[str, Any]) -> str:
    """CPU over the point, % of one core (served.py / cpu.py); '' for rows measured without it."""
    if "cpu_workers_pct" not in r:
        return ""
    parts = [("workers", "cpu_workers_pct"), ("TorchServe frontend", "cpu_frontend_pct")]
    parts += [("gateway", "cpu_gateway_pct")] if r.get("gateway", True) else []
    parts += [("load generator", "loadgen_cpu_pct"), ("exporter", "cpu_exporter_pct")]
    text = ", ".join(f"{name} {r.get(key, 0.0):.0f}" for name, key in parts)
    return f" CPU, % of one core: {text}."


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
        f"{s.get('stock_default_env') or 'no OMP_NUM_THREADS'})"
        + (
            f", `{s['stock_matched']}` with OMP_NUM_THREADS={s['threads']} in the server's environment "
            f"(workers saw {s.get('stock_matched_env')})."
            if s["stock_matched"] != "-"
            else "."
        ),
        "- Stock = TorchServe 0.12's `image_classifier` handler (PIL decode + torchvision transforms per "
        "image) serving our build's TorchScript `model.pt`, with an index_to_name.json of our labels, "
        "called directly (no gateway: stock TorchServe has none). Ours goes through the gateway (the "
        "product's default) unless marked `(no gateway)` (TorchServe alone, `zooserve serve --no-gateway`).",
        *[f"- Photo workload `{w}`: {text}." for w, text in s.get("workloads", {}).items()],
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
            loss = served_vs_limit(res, model)
            if loss:
                lines += [
                    "Where served loses to the model alone (ours through the gateway; how to read it: "
                    "[served_vs_model.md](served_vs_model.md)):",
                    "",
                    *loss,
                    "",
                ]
        photos = photo_table(res, model)
        if photos:
            lines += [f"## Precisions and photos: {model}", "", *photos, ""]
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
