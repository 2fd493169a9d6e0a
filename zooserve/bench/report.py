"""Markdown tables, PNG plots and the ``docs/benchmarks.md`` summary from one run's results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

Rows = list[dict[str, Any]]


def _f(v: Any, nd: int = 1) -> str:
    return "-" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def table(rows: Rows, cols: list[tuple[str, str]], nd: int = 1) -> str:
    head = "| " + " | ".join(t for _, t in cols) + " |\n|" + "---|" * len(cols) + "\n"
    return head + "\n".join("| " + " | ".join(_f(r.get(k), nd) for k, _ in cols) + " |" for r in rows) + "\n"


MODEL_COLS = [("model", "model"), ("format", "format"), ("precision", "precision"), ("batch", "batch"),
              ("items_per_s", "images/s"), ("ms_per_batch", "ms/batch (median)")]  # fmt: skip
SERVED_COLS = [("variant", "server"), ("workload", "photo"), ("proto", "proto"),
               ("concurrency", "concurrency"), ("rps", "req/s"), ("p50", "p50 ms"), ("p95", "p95 ms"),
               ("p99", "p99 ms"), ("requests", "requests"), ("errors", "errors"),
               ("loadgen_cpu_pct", "load gen CPU % of 1 core"), ("cpu_workers_pct", "workers CPU %"),
               ("cpu_frontend_pct", "frontend CPU %"), ("cpu_gateway_pct", "gateway CPU %")]  # fmt: skip
STAGE_COLS = [("variant", "server"), ("workload", "photo"), ("proto", "proto"),
              ("concurrency", "concurrency"), ("batch_mean", "mean batch"), ("decode_ms", "decode"),
              ("preprocess_ms", "preprocess"),
              ("inference_ms", "inference"), ("postprocess_ms", "postprocess"),
              ("handler_ms", "handler total"), ("handler_share", "handler busy %")]  # fmt: skip
SWEEP_COLS = [("batch_size", "batchSize"), ("delay_ms", "maxBatchDelay ms"), ("concurrency", "concurrency"),
              ("rps", "req/s"), ("p50", "p50 ms"), ("p95", "p95 ms"), ("p99", "p99 ms"),
              ("batch_mean", "mean batch"), ("errors", "errors")]  # fmt: skip


def enrich(rows: Rows) -> Rows:
    """Derived columns: load generator CPU as % of one core; share of wall time the handler was busy."""
    for r in rows:
        if r.get("seconds"):
            r["loadgen_cpu_pct"] = 100 * r.get("loadgen_cpu_s", 0.0) / r["seconds"]
            if r.get("handler_ms") and r.get("batch_mean"):
                batches = r["requests"] / r["batch_mean"]
                r["handler_share"] = 100 * batches * r["handler_ms"] / 1e3 / r["seconds"]
    return rows


def plots(res: dict[str, Any], out: Path) -> list[str]:
    made = []
    served, model_rows = res.get("served", []), res.get("model_only", [])
    limits: dict[str, float] = {}  # precision -> best AOTI model-only img/s
    for r in model_rows:
        if r["format"] == "aoti":
            p = r.get("precision", "fp32")
            limits[p] = max(limits.get(p, 0.0), r["items_per_s"])
    limit = limits.get("fp32")

    def key(r: dict[str, Any]) -> tuple[str, str, str]:
        return r["variant"], r["proto"], r.get("workload", "small")

    series = sorted({key(r) for r in served})
    if served:
        fig, ax = _subplots(figsize=(7, 4.5))
        for s in series:
            pts = sorted((r["concurrency"], r["rps"]) for r in served if key(r) == s)
            ax.plot(*zip(*pts, strict=True), marker="o", label=" ".join(s))
        if limit:
            ax.axhline(limit, ls="--", c="k", label="AOTI fp32 model-only best (limit)")
        ax.set(
            xscale="log", xlabel="concurrency", ylabel="requests/s", title="Served throughput vs concurrency"
        )
        ax.legend(fontsize=6)
        made.append(_save(fig, out / "throughput_vs_concurrency.png"))

        concs = sorted({r["concurrency"] for r in served})
        fig, axes = _subplots(1, len(concs), figsize=(4 * len(concs), 4.5), sharey=True, squeeze=False)
        for ax, c in zip(axes[0], concs, strict=True):
            rows = [r for r in served if r["concurrency"] == c]
            names = [f"{r['variant']}\n{r['proto']} {r.get('workload', 'small')}" for r in rows]
            for k, w in (("p50", -0.27), ("p95", 0), ("p99", 0.27)):
                ax.bar([j + w for j in range(len(rows))], [r.get(k) or 0 for r in rows], 0.27, label=k)
            ax.set_xticks(range(len(rows)), names, fontsize=5, rotation=70)
            ax.set(title=f"concurrency {c}", yscale="log")
        axes[0][0].set_ylabel("latency ms")
        axes[0][0].legend()
        made.append(_save(fig, out / "latency_percentiles.png"))

        ours = [s for s in series if s[0].startswith("ours") and s[2] == "small"]
        if limits and ours:  # each precision against its own limit, on the small photo
            fig, ax = _subplots(figsize=(7, 4.5))
            for s in ours:
                rows = [r for r in served if key(r) == s and r.get("precision", "fp32") in limits]
                pts = sorted((r["concurrency"], r["rps"] / limits[r.get("precision", "fp32")]) for r in rows)
                if pts:
                    ax.plot(*zip(*pts, strict=True), marker="o", label=" ".join(s[:2]))
            ax.axhline(0.85, ls="--", c="r", label="target 0.85")
            ax.set(
                xscale="log",
                xlabel="concurrency",
                ylabel="served ÷ model-only limit (same precision)",
                title="Served ÷ limit, small photo",
            )
            ax.legend(fontsize=7)
            made.append(_save(fig, out / "served_vs_limit.png"))
    if model_rows:
        fig, ax = _subplots(figsize=(6, 4))
        for fmt in dict.fromkeys((r["format"], r.get("precision", "fp32")) for r in model_rows):
            pts = [
                (r["batch"], r["items_per_s"])
                for r in model_rows
                if (r["format"], r.get("precision", "fp32")) == fmt
            ]
            ax.plot(*zip(*pts, strict=True), marker="o", label="/".join(fmt))
        ax.set(xscale="log", xlabel="batch", ylabel="images/s", title="Model-only throughput")
        _ticks(ax, [r["batch"] for r in model_rows])
        ax.legend()
        made.append(_save(fig, out / "model_only.png"))
    if res.get("sweep"):
        fig, ax = _subplots(figsize=(6, 4.5))
        for r in res["sweep"]:
            ax.errorbar(r["p50"], r["rps"], xerr=[[0], [max(r["p99"] - r["p50"], 0)]], fmt="o", capsize=3)
            ax.annotate(f"b{r['batch_size']} d{r['delay_ms']}", (r["p50"], r["rps"]), fontsize=7)
        ax.set(
            xlabel="latency ms (p50, bar to p99)",
            ylabel="requests/s",
            title="batchSize / maxBatchDelay sweep",
        )
        made.append(_save(fig, out / "sweep.png"))
    return made


def _ticks(ax: Any, values: list[int]) -> None:
    vals = sorted(set(values))
    ax.set_xticks(vals, [str(v) for v in vals])
    ax.minorticks_off()


def _subplots(*grid: int, figsize: tuple[float, float], **kwargs: Any) -> tuple[Figure, Any]:
    """pyplot's subplots without pyplot's global state (no backend to pick, nothing to close)."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kwargs)


def _save(fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path.name


def tables(res: dict[str, Any]) -> dict[str, str]:
    out = {}
    if res.get("model_only"):
        out["model_only.md"] = table(res["model_only"], MODEL_COLS)
    if res.get("served"):
        out["served.md"] = table(res["served"], SERVED_COLS)
        ours = [r for r in res["served"] if r.get("handler_ms")]
        if ours:
            out["stages.md"] = (
                "Mean milliseconds per batch in each handler stage (zooserve_stage_seconds).\n\n"
                + table(ours, STAGE_COLS)
            )
    if res.get("sweep"):
        out["sweep.md"] = table(res["sweep"], SWEEP_COLS)
    for key, cols in (("text", None), ("captions", None)):
        if res.get(key):
            rows = res[key]
            out[f"{key}.md"] = table(rows, cols or [(k, k) for k in rows[0]])
    return out


def write(res: dict[str, Any], out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    for key in ("served", "sweep"):
        enrich(res.get(key, []))
    written = tables(res)
    for name, text in written.items():
        (out / name).write_text(text, "utf-8")
    res["plots"] = plots(res, out)
    return written
