"""Where a served load point's CPU went: TorchServe's frontend (the JVM), its model workers, the
gateway and the metrics exporter, read from ``/proc`` before and after the point. On a two-core
machine the model's threads compete with all of these, so served ÷ model-only can only be as high
as the share of the cores left to the workers' inference."""

from __future__ import annotations

from pathlib import Path

from zooserve.serving import processes, server

ROLES = ("workers", "frontend", "gateway", "exporter")


def seconds_by_role(cfg: server.ServerConfig) -> dict[str, float]:
    """CPU seconds used so far by each part of the server; TorchServe's workers share the JVM's
    process group (the JVM starts them), the gateway and exporter have their own."""
    groups = {
        pid: what
        for what in ("torchserve", "gateway", "exporter")
        if (pid := server.running_pid(cfg, what)) is not None
    }
    out = dict.fromkeys(ROLES, 0.0)
    for pid_dir in Path("/proc").glob("[0-9]*"):
        stat = processes.proc_stat(pid_dir.name)
        if stat is None or (what := groups.get(int(stat[1][2]))) is None:
            continue
        comm, fields = stat
        role = ("frontend" if comm == "java" else "workers") if what == "torchserve" else what
        out[role] += processes.cpu_seconds(fields)
    return out


def percent(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
    """Each role's CPU over the interval as % of one core (200 % = both cores of this machine)."""
    return {f"cpu_{r}_pct": 100 * (after[r] - before[r]) / wall_s for r in ROLES if wall_s > 0}
