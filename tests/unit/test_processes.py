"""Pid files with identity and process-group termination (``zooserve.serving.processes``).

Every process signalled here is one this test started with ``start_new_session=True`` (its own
group): nothing else is ever signalled."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zooserve.serving import processes
from zooserve.serving.processes import free_ports, read_pid, start_ticks, terminate_group, write_pid


@pytest.fixture
def spawn() -> Iterator:
    """Start a command in its own session; whatever is left is killed (by its group) at the end."""
    started: list[subprocess.Popen] = []

    def run(*argv: str) -> subprocess.Popen:
        proc = subprocess.Popen(list(argv), start_new_session=True)
        started.append(proc)
        return proc

    yield run
    for proc in started:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # its own group (start_new_session): only what we started
        proc.wait(timeout=10)


def _wait_for_children(pgid: int, n: int, timeout: float = 5.0) -> list[int]:
    """The pids of group ``pgid`` once it has at least ``n`` live members."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        members = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(stat.parent.name))
        if len(members) >= n:
            return members
        time.sleep(0.02)
    raise AssertionError(f"group {pgid} never had {n} members")


# ---- start ticks and pid files -------------------------------------------------------------------
def test_start_ticks_of_this_process_and_of_none() -> None:
    ticks = start_ticks(os.getpid())
    assert isinstance(ticks, int) and ticks > 0
    assert start_ticks(os.getpid()) == ticks  # stable: it is the start time, not a clock
    assert start_ticks(2**22 + 12345) is None  # above pid_max: never a process


def test_a_pid_file_round_trips_while_its_process_lives(tmp_path: Path, spawn) -> None:
    proc = spawn("sleep", "30")
    path = tmp_path / "server.pid"
    write_pid(path, proc)
    record = json.loads(path.read_text("utf-8"))
    assert record == {"pid": proc.pid, "start": start_ticks(proc.pid)} and record["start"] is not None
    assert read_pid(path) == proc.pid
    proc.kill()
    proc.wait(timeout=10)
    assert read_pid(path) is None  # gone (and reaped)


def test_a_live_pid_with_another_start_time_is_stale(tmp_path: Path) -> None:
    """The pid was reused: a live process, but not the one the file recorded."""
    path = tmp_path / "server.pid"
    me, ticks = os.getpid(), start_ticks(os.getpid())
    assert ticks is not None
    path.write_text(json.dumps({"pid": me, "start": ticks}), "utf-8")
    assert read_pid(path) == me
    for wrong in (ticks + 1, ticks - 1, 0, str(ticks), None, float(ticks) + 0.5):
        path.write_text(json.dumps({"pid": me, "start": wrong}), "utf-8")
        assert read_pid(path) is None, wrong


@pytest.mark.parametrize(
    "text",
    [
        "",
        "12345",  # an old-style bare pid: no identity, never trusted
        "not json",
        "[1, 2]",
        '"pid"',
        '{"pid": "x", "start": 1}',
        '{"start": 1}',
        '{"pid": 1}',
        '{"pid": 0, "start": 0}',
        '{"pid": -1, "start": 0}',
        '{"pid": null, "start": 1}',
        '{"pid": 99999999999, "start": 1}',
    ],
)
def test_unreadable_or_identityless_pid_files_read_as_none(tmp_path: Path, text: str) -> None:
    path = tmp_path / "server.pid"
    path.write_text(text, "utf-8")
    assert read_pid(path) is None


def test_a_missing_pid_file_reads_as_none(tmp_path: Path) -> None:
    assert read_pid(tmp_path / "absent.pid") is None
    assert read_pid(tmp_path) is None  # a directory


# ---- stopping a group ----------------------------------------------------------------------------
def test_terminate_group_stops_a_sleep_at_sigterm(spawn) -> None:
    proc = spawn("sleep", "30")
    t0 = time.perf_counter()
    terminate_group(proc.pid, timeout=5)
    assert time.perf_counter() - t0 < 3  # SIGTERM was enough: no wait for the timeout
    assert proc.wait(timeout=5) == -signal.SIGTERM


def test_terminate_group_reaches_every_member_of_the_group(spawn) -> None:
    proc = spawn("sh", "-c", "sleep 30 & sleep 30 & wait")
    members = _wait_for_children(proc.pid, 3)
    assert proc.pid in members
    terminate_group(proc.pid, timeout=5)
    assert proc.wait(timeout=5) != 0
    assert not processes._group_alive(proc.pid)
    for pid in members:
        assert start_ticks(pid) is None or _is_zombie(pid)


def test_terminate_group_kills_what_ignores_sigterm_after_the_timeout(spawn) -> None:
    proc = spawn("sh", "-c", "trap '' TERM; sleep 30 & wait; sleep 30")  # the sleeps inherit the ignore
    _wait_for_children(proc.pid, 2)
    t0 = time.perf_counter()
    terminate_group(proc.pid, timeout=0.5)
    elapsed = time.perf_counter() - t0
    assert 0.45 <= elapsed < 3, elapsed  # waited the timeout, then SIGKILL
    assert proc.wait(timeout=5) == -signal.SIGKILL
    assert _group_gone(proc.pid)


def test_terminate_group_of_a_finished_process_is_a_no_op(spawn) -> None:
    proc = spawn("true")
    proc.wait(timeout=10)
    terminate_group(proc.pid, timeout=0.2)  # no such process any more: returns quietly
    assert proc.returncode == 0


def _group_gone(pgid: int, timeout: float = 3.0) -> bool:
    """SIGKILL is delivered asynchronously: give the members a moment to die."""
    deadline = time.monotonic() + timeout
    while processes._group_alive(pgid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


# ---- ports ---------------------------------------------------------------------------------------
def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5 and all(1024 <= p <= 65535 for p in ports)
    socks = []
    try:
        for p in ports:
            s = socket.socket()
            s.bind(("127.0.0.1", p))
            socks.append(s)
    finally:
        for s in socks:
            s.close()
