"""What the v2 front-end costs over calling TorchServe directly (issue 17's acceptance numbers).

The same serialized ModelInferRequest goes to TorchServe's own OIP service (direct) and to the
standard ``inference.GRPCInferenceService`` of a front-end (the zooserve proxy, or a KServe
ModelServer started with ``loadtests/kserve_front.py``); the two protos are wire-compatible, so the
bytes are identical. Latency: sequential calls alternating direct/front (drift cancels), p50 of
each and the difference. Throughput: C calls in flight for T seconds, rounds alternating, ratio of
the medians. Responses are received as bytes and not decoded, so the client costs both paths alike.
On a shared machine throughput swings with the neighbours' load; ``--cpu NAME=PGID`` also reports
the CPU time each process group (TorchServe's, each front-end's) spends per request in those
rounds, which the neighbours do not change much: the cost a front-end adds, in CPU-ms/request.

    python loadtests/v2_overhead.py --direct 127.0.0.1:7070 --front zooserve=127.0.0.1:8001 \
        [--front kserve=127.0.0.1:8011] --token KEY --model lenet5 --image digit.png [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import struct
import sys
import time
from pathlib import Path

import grpc

DIRECT = "/org.pytorch.serve.grpc.openinference.GRPCInferenceService/ModelInfer"
STANDARD = "/inference.GRPCInferenceService/ModelInfer"


def infer_request(model: str, input_name: str, data: bytes) -> bytes:
    """A ModelInferRequest with one BYTES element, hand-encoded (no stubs needed here)."""

    def field(num: int, payload: bytes) -> bytes:
        return _varint(num << 3 | 2) + _varint(len(payload)) + payload

    contents = field(8, data)  # InferTensorContents.bytes_contents
    tensor = field(1, input_name.encode()) + field(2, b"BYTES") + field(3, _varint(1)) + field(5, contents)
    return field(1, model.encode()) + field(5, tensor)


def _varint(n: int) -> bytes:
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        out += struct.pack("B", b | (0x80 if n else 0))
        if not n:
            return out


def _order(names: list[str], i: int) -> list[str]:
    """Round i's order: rotated, so no path always follows the same one."""
    k = i % len(names)
    return names[k:] + names[:k]


async def latency(calls: dict[str, grpc.aio.UnaryUnaryMultiCallable], req: bytes, md: list, n: int) -> dict:
    times: dict[str, list[float]] = {k: [] for k in calls}
    for i in range(n):
        for name in _order(list(calls), i):
            t0 = time.perf_counter()
            await calls[name](req, metadata=md)
            times[name].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) of the live processes in a process group."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


async def throughput(
    call: grpc.aio.UnaryUnaryMultiCallable,
    req: bytes,
    md: list,
    conc: int,
    secs: float,
    groups: dict[str, int],
) -> tuple[float, dict[str, float]]:
    """(requests/s, CPU-ms per request of each process group)."""
    before = {k: group_cpu(g) for k, g in groups.items()}
    done = 0
    stop = time.perf_counter() + secs

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await call(req, metadata=md)
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    rate = done / (time.perf_counter() - t0)
    return rate, {k: (group_cpu(g) - before[k]) * 1e3 / max(done, 1) for k, g in groups.items()}


async def main(args: argparse.Namespace) -> dict:
    md = [("authorization", f"Bearer {args.token}")] if args.token else []
    req = infer_request(args.model, args.input_name, Path(args.image).read_bytes())
    fronts = dict(f.split("=", 1) for f in args.front)
    channels = {"direct": grpc.aio.insecure_channel(args.direct)}
    channels |= {name: grpc.aio.insecure_channel(addr) for name, addr in fronts.items()}
    calls = {name: ch.unary_unary(DIRECT if name == "direct" else STANDARD) for name, ch in channels.items()}
    for c in calls.values():  # warm up: connections, workers, caches
        for _ in range(20):
            await c(req, metadata=md)
    lat = await latency(calls, req, md, args.requests)
    groups = {k: int(v) for k, v in (c.split("=", 1) for c in args.cpu)}
    rounds: dict[str, list[float]] = {k: [] for k in calls}
    cpu: dict[str, dict[str, list[float]]] = {k: {g: [] for g in groups} for k in calls}
    for r in range(args.rounds):
        for name in _order(list(calls), r):
            rate, used = await throughput(calls[name], req, md, args.concurrency, args.seconds, groups)
            rounds[name].append(rate)
            for g, ms in used.items():
                cpu[name][g].append(ms)
    for ch in channels.values():
        await ch.close()
    tput = {k: statistics.median(v) for k, v in rounds.items()}
    return {
        "model": args.model,
        "p50_ms": lat,
        "p50_added_ms": {k: lat[k] - lat["direct"] for k in fronts},
        "throughput_rps": tput,
        "throughput_rounds": rounds,
        "concurrency": args.concurrency,
        "throughput_ratio": {k: tput[k] / tput["direct"] for k in fronts},
        "cpu_ms_per_request": {k: {g: statistics.median(v) for g, v in gs.items()} for k, gs in cpu.items()},
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--direct", required=True, help="TorchServe gRPC inference address")
    p.add_argument("--front", action="append", required=True, help="NAME=ADDR of a standard v2 gRPC server")
    p.add_argument("--token", default="")
    p.add_argument("--model", default="lenet5")
    p.add_argument("--input-name", default="image")
    p.add_argument("--image", required=True)
    p.add_argument("--requests", type=int, default=300, help="sequential calls per path")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=4, help="throughput rounds (alternating)")
    p.add_argument("--cpu", action="append", default=[], help="NAME=PGID: report this process group's CPU")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    text = json.dumps(asyncio.run(main(args)), indent=1)
    print(text)
    if args.json is not None:
        args.json.write_text(text)
    sys.exit(0)
