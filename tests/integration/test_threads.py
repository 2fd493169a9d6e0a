"""The `zooserve.threads` value of model-config.yaml is what the worker actually runs with.

Observation: the worker's own threads in /proc/<pid>/task, and which of them burn CPU while it
serves a burst of requests. torch's intra-op pool (OpenMP) splits each convolution over
``threads`` threads, so with threads=1 only the worker's main thread does the work and with
threads=2 a second (pool) thread does about as much. Counting threads that did a real share of
the work is a direct read of intra-op parallelism; it does not depend on the machine's load or on
helper threads that exist anyway (they stay near zero CPU). The worker pid comes from
TorchServe's management API (describe model -> workers[].pid).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from servers import own_server

from zooserve.client import Client
from zooserve.serving import server

pytestmark = pytest.mark.integration

VARIANTS = {"tr_threads1": 1, "tr_threads2": 2}


def _cpu_ticks(pid: int) -> dict[int, int]:
    """utime + stime (clock ticks) per thread of ``pid``."""
    out = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(stat.parent.name)] = int(fields[11]) + int(fields[12])
    return out


def _worker_pid(cfg: server.ServerConfig, model: str) -> int:
    return server.management(cfg).worker_pids(model)[0]


@pytest.fixture(scope="module")
def threads_server(build_cache, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    # small batches: the burst is many conv parallel regions; decode on the handler's own thread
    # (decode_workers 1), so the threads that work are torch's alone
    archives = {
        name: build_cache(
            "tiny_resnet", format="torchscript", archive_name=name, threads=n, decode_workers=1
        ).archive
        for name, n in VARIANTS.items()
    }
    with own_server(tmp_path_factory.mktemp("threads"), archives, timeout=240) as cfg:
        yield cfg, Client(port=cfg.ports.inference, grpc_port=cfg.ports.grpc_inference, key_file=cfg.key_file)


def _busy_threads(cfg: server.ServerConfig, client: Client, model: str, image: bytes) -> tuple[int, int]:
    """(threads that did >= 25 % of the busiest thread's CPU during a burst, all threads)."""
    pid = _worker_pid(cfg, model)
    client.predict(model, image)  # the pool exists after the first parallel region
    before = _cpu_ticks(pid)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda _: client.predict(model, image), range(40)))
    after = _cpu_ticks(pid)
    used = {t: after[t] - before.get(t, 0) for t in after}
    top = max(used.values())
    assert top >= 20, f"worker {pid} barely ran ({used}); the burst did not reach it"
    return sum(1 for v in used.values() if v >= 0.25 * top), len(after)


def test_worker_runs_with_configured_torch_threads(threads_server, sample_jpegs) -> None:
    cfg, client = threads_server
    image = sample_jpegs["generated_1280x720.jpg"]
    busy1, total1 = _busy_threads(cfg, client, "tr_threads1", image)
    busy2, total2 = _busy_threads(cfg, client, "tr_threads2", image)
    assert busy1 == 1, f"threads=1 worker: {busy1} busy threads"
    assert busy2 == 2, f"threads=2 worker: {busy2} busy threads"
    assert total2 > total1  # the second intra-op thread exists only in the threads=2 worker
