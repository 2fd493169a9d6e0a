"""The processes a server is made of: started in their own process group, recorded in pid files
that carry the process's identity, stopped as a group.

A pid file holds the pid *and* the process's start time (``/proc/PID/stat`` field 22): a stale
file whose pid has been reused by an unrelated process is recognised as stale, and that process is
never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

TICK_S = 1 / os.sysconf("SC_CLK_TCK")  # /proc's unit of CPU time


def proc_stat(pid: int | str) -> tuple[str, list[str]] | None:
    """(command name, fields 3.. of ``/proc/PID/stat``), None when the process does not exist. The
    name is cut out first: it may hold spaces and parentheses."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.index("(") + 1 : text.rindex(")")], text.rsplit(")", 1)[1].split()


def cpu_seconds(fields: list[str]) -> float:
    """User + system CPU seconds of a process (all its threads) from its ``proc_stat`` fields."""
    return (int(fields[11]) + int(fields[12])) * TICK_S


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None when it does not exist."""
    stat = proc_stat(pid)
    return None if stat is None else int(stat[1][19])  # field 22 of the whole line


def write_pid(path: Path, proc: subprocess.Popen) -> None:
    path.write_text(json.dumps({"pid": proc.pid, "start": start_ticks(proc.pid)}), "utf-8")


def read_pid(path: Path) -> int | None:
    """The recorded process if it is still the same one, else None (no file, or stale)."""
    try:
        record = json.loads(path.read_text("utf-8"))
        pid, start = int(record["pid"]), record["start"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return pid if pid > 0 and start is not None and start_ticks(pid) == start else None


def terminate_group(pid: int, timeout: float) -> None:
    """SIGTERM the process group, SIGKILL what is left after ``timeout``."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not group_members(pgid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def group_members(pgid: int) -> list[int]:
    """The live (non-zombie) processes of group ``pgid`` (zombies wait for a parent that may be us)."""
    members = []
    for pid_dir in Path("/proc").glob("[0-9]*"):
        stat = proc_stat(pid_dir.name)
        if stat is not None and int(stat[1][2]) == pgid and stat[1][0] != "Z":
            members.append(int(pid_dir.name))
    return members


EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on loopback, drawn *below* the kernel's ephemeral range: a port the
    kernel hands out for binding to port 0 is also what it gives the next outgoing connection (a
    load generator's, TorchServe's own), which can take it before the server binds it."""
    try:
        low = int(EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    first = max(1024, low - 16384)
    rng = random.SystemRandom()
    ports: list[int] = []
    for port in rng.sample(range(first, low), min(low - first, 512)):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            return ports
    raise OSError(f"no {n} free ports between {first} and {low}")
