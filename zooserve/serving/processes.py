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


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # field 22 of the whole line


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
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
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
