"""Soak: constant mixed good/bad load on the session ``served`` TorchServe.

ZOOSERVE_SOAK_SECONDS (default 60; e.g. 600 on demand) of load from a few threads over every task
(tiny_resnet, lenet5, tiny_show_attend_tell, tiny_bert) with the small bad inputs of the corpus.
Asserts: no unexpected outcome, no worker restart, worker RSS growth < 10 % after warm-up and no
file-descriptor growth (workers and the frontend, small slack).
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import requests

from zooserve.models.digits import render_sent
from zooserve.serving import server

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from make_bad_inputs import OCTET, TEXT, _photo, all_cases, encode, expected  # noqa: E402

pytestmark = pytest.mark.integration

SECONDS = float(os.environ.get("ZOOSERVE_SOAK_SECONDS", "60"))
WARMUP = max(5.0, SECONDS * 0.2)
THREADS = 4
TASKS = {
    "tiny_resnet": "classify",
    "lenet5": "classify",
    "tiny_show_attend_tell": "caption",
    "tiny_bert": "classify-text",
}
RSS_GROWTH = 0.10
FD_SLACK = 4  # a worker's descriptors may differ by a log rotation or a lazily opened library
FRONTEND_FD_SLACK = 64  # the Java frontend's pool of connections and threads breathes


def _proc(pid: int) -> tuple[int, int]:
    """(VmRSS in kB, open descriptors) of a live process."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def _worker_pids(served, models: list[str]) -> dict[str, int]:
    mgmt = server.management(served.cfg)
    pids = {}
    for m in models:
        workers = mgmt.describe(m)["workers"]
        assert workers and all(w["status"] == "READY" for w in workers), workers
        for i, w in enumerate(workers):
            pids[f"{m}#{i}"] = int(w["pid"])
    return pids


def _jobs() -> list[tuple[str, bytes, str, tuple[int | None, str | None]]]:
    """(model, body, content type, expected) for every task: good inputs twice as often as bad."""
    small = [c for c in all_cases() if len(c.data) < 200_000]
    jobs = []
    for model, task in TASKS.items():
        # a digits model answers a valid image without a digit with NoDigitFound: its good inputs are digits
        cases = [c for c in small if model != "lenet5" or expected(c, task)[0] is not None]
        jobs += [(model, c.data, c.content_type, expected(c, task)) for c in cases]
        good = [(encode(_photo(64 + 16 * i, 48 + 8 * i), "JPEG"), OCTET) for i in range(4)]
        if task == "classify-text":
            good = [(f"sentence {i} about markets and the weather".encode(), TEXT) for i in range(4)]
        if model == "lenet5":
            good = [
                (render_sent(i, "DejaVuSans", (64 + 16 * i, 64), 0.6, fmt="JPEG"), OCTET) for i in range(4)
            ]
        jobs += [(model, body, ctype, (None, None)) for body, ctype in good] * (len(small) // 2)
    return jobs


@pytest.mark.skipif(SECONDS <= 0, reason="ZOOSERVE_SOAK_SECONDS=0")
def test_soak_mixed_load(served) -> None:
    jobs = _jobs()
    token = served.token()
    url = served.cfg.url()
    outcomes: Counter = Counter()
    unexpected: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def run(seed: int) -> None:
        rng = random.Random(seed)
        with requests.Session() as s:
            while not stop.is_set():
                model, body, ctype, (status, kind) = rng.choice(jobs)
                try:
                    r = s.post(
                        f"{url}/predictions/{model}",
                        data=body,
                        timeout=60,
                        headers={"Authorization": f"Bearer {token}", "Content-Type": ctype},
                    )
                    got = (r.status_code, r.json().get("type") if r.status_code != 200 else None)
                except (requests.RequestException, ValueError) as e:
                    got = (-1, type(e).__name__)
                with lock:
                    outcomes[got[0]] += 1
                    if got != (status or 200, kind):
                        unexpected.append(f"{model} {ctype}: got {got}, want {(status, kind)}")

    threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(THREADS)]
    for t in threads:
        t.start()
    try:
        time.sleep(WARMUP)
        pids = _worker_pids(served, list(TASKS))
        frontend = server.running_pid(served.cfg)
        assert frontend is not None
        start = {name: _proc(pid) for name, pid in pids.items()} | {"frontend": _proc(frontend)}
        n0 = sum(outcomes.values())
        time.sleep(max(0.0, SECONDS - WARMUP))
        end = {name: _proc(pid) for name, pid in pids.items()} | {"frontend": _proc(frontend)}
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=90)
    assert not any(t.is_alive() for t in threads), "a load thread hung"
    total = sum(outcomes.values())
    print(f"\nsoak {SECONDS:.0f}s: {total} requests ({total - n0} after warm-up), statuses {dict(outcomes)}")
    for name in start:
        (rss0, fd0), (rss1, fd1) = start[name], end[name]
        print(f"  {name}: RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB, fds {fd0} -> {fd1}")
    assert not unexpected, f"{len(unexpected)} unexpected outcomes, e.g. {unexpected[:5]}"
    assert _worker_pids(served, list(TASKS)) == pids, "a worker was restarted during the soak"
    for name in pids:
        (rss0, fd0), (rss1, fd1) = start[name], end[name]
        assert rss1 <= rss0 * (1 + RSS_GROWTH), f"{name}: RSS grew {rss0} -> {rss1} kB"
        assert fd1 <= fd0 + FD_SLACK, f"{name}: descriptors grew {fd0} -> {fd1}"
    assert end["frontend"][1] <= start["frontend"][1] + FRONTEND_FD_SLACK, (
        start["frontend"],
        end["frontend"],
    )
