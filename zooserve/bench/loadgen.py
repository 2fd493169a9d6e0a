"""Light load generators, pinned to one core, that report their own CPU time.

REST: ApacheBench (``ab -k``, C, one process, keep-alive). gRPC: the asyncio client below (one
process, ``grpc.aio``, C in-flight calls on one event loop). Both run as child processes pinned to
the last core with ``sched_setaffinity``; their CPU time comes from ``os.wait4``'s rusage, so the
report shows how much of the machine the generator itself took.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from zooserve.serving import grpc_stubs

TOKEN_ENV = "ZOOSERVE_TOKEN"  # the inference token for the gRPC load generator


def loadgen_cpu() -> int:
    return max(os.sched_getaffinity(0))


def _pin() -> None:
    os.sched_setaffinity(0, {loadgen_cpu()})


def _run_child(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> tuple[str, float]:
    """Run pinned; (stdout, CPU seconds user+sys of the child)."""
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_pin, env=env)
        deadline = time.monotonic() + timeout
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(cmd[0]).name} failed ({proc.returncode}): {text[-800:]}")
    return text, usage.ru_utime + usage.ru_stime


def run_ab(
    url: str, body: Path, token: str | None, concurrency: int, seconds: float, requests: int | None = None
) -> dict[str, Any]:
    """``ab -k`` for ``seconds`` (or exactly ``requests``); rps, latency percentiles (ms), failures,
    ab's CPU seconds."""
    if shutil.which("ab") is None:
        raise RuntimeError("ApacheBench (ab) is not installed: apt-get install apache2-utils")
    amount = ["-n", str(requests)] if requests else ["-t", f"{seconds:g}", "-n", "10000000"]
    cmd = ["ab", "-k", "-q", "-c", str(concurrency), *amount, "-s", "120",
           "-p", str(body), "-T", "application/octet-stream"]  # fmt: skip
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    text, cpu = _run_child([*cmd, url], timeout=seconds + 150)

    def num(pattern: str, default: float = 0.0) -> float:
        m = re.search(pattern, text, re.MULTILINE)
        return float(m.group(1)) if m else default

    pct = {int(p): float(v) for p, v in re.findall(r"^\s+(\d+)%\s+(\d+)", text, re.MULTILINE)}
    done = int(num(r"^Complete requests:\s+(\d+)"))
    elapsed = num(r"^Time taken for tests:\s+([\d.]+)")
    non2xx = int(num(r"^Non-2xx responses:\s+(\d+)"))
    failed = int(num(r"^Failed requests:\s+(\d+)"))
    return {
        "requests": done,
        "errors": non2xx + failed - int(num(r"\(Connect: \d+, Receive: \d+, Length: (\d+)")),
        "seconds": elapsed,
        "rps": done / elapsed if elapsed else 0.0,
        "p50": pct.get(50),
        "p95": pct.get(95),
        "p99": pct.get(99),
        "loadgen_cpu_s": cpu,
    }


def run_grpc(
    target: str, model: str, body: Path, token: str | None, concurrency: int, seconds: float
) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "zooserve.bench.loadgen", "--target", target, "--model", model,
           "--body", str(body), "--concurrency", str(concurrency), "--seconds", f"{seconds:g}"]  # fmt: skip
    # the token goes by environment: not in `ps`, and a token starting with '-' is no option
    env = os.environ | ({TOKEN_ENV: token} if token else {})
    text, cpu = _run_child(cmd, timeout=seconds + 150, env=env)
    result = json.loads(text.strip().splitlines()[-1])
    return result | {"loadgen_cpu_s": cpu}


async def _grpc_load(
    target: str, model: str, data: bytes, token: str | None, concurrency: int, seconds: float
) -> dict[str, Any]:
    pb2, pb2_grpc = grpc_stubs.load("inference_pb2"), grpc_stubs.load("inference_pb2_grpc")
    request = pb2.PredictionsRequest(model_name=model, input={"data": data})
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb2_grpc.InferenceAPIsServiceStub(channel)
        await stub.Predictions(request, metadata=metadata, timeout=120)  # connect + warm
        start = time.perf_counter()
        end = start + seconds

        async def user() -> None:
            nonlocal errors
            while time.perf_counter() < end:
                t = time.perf_counter()
                try:
                    reply = await stub.Predictions(request, metadata=metadata, timeout=120)
                    ok = b'"code"' not in reply.prediction[:64]  # per-request errors ride in an OK reply
                except grpc.aio.AioRpcError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t)
                else:
                    errors += 1

        await asyncio.gather(*(user() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e3 if latencies else None

    return {
        "requests": len(latencies),
        "errors": errors,
        "seconds": elapsed,
        "rps": len(latencies) / elapsed,
        "p50": pct(50),
        "p95": pct(95),
        "p99": pct(99),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="asyncio gRPC load generator (prints one JSON line)")
    p.add_argument("--target", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--body", type=Path, required=True)
    p.add_argument("--token", default=os.environ.get(TOKEN_ENV), help=f"default: ${TOKEN_ENV}")
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--seconds", type=float, default=10.0)
    a = p.parse_args(argv)
    result = asyncio.run(
        _grpc_load(a.target, a.model, a.body.read_bytes(), a.token, a.concurrency, a.seconds)
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
