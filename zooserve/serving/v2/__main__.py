"""``python -m zooserve.serving.v2``: the v2 front-end process (started by ``zooserve serve``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from zooserve.serving.v2 import grpc_api, rest_api
from zooserve.serving.v2.backend import Backend
from zooserve.serving.v2.catalog import Catalog
from zooserve.serving.v2.frontend import Frontend
from zooserve.serving.v2.metrics import Metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m zooserve.serving.v2", description=__doc__)
    p.add_argument("--backend", default="127.0.0.1:7070", help="TorchServe's gRPC inference address")
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--model-store", type=Path, default=Path("model_store"))
    p.add_argument("--max-message-bytes", type=int, default=16 * 1024 * 1024 + 65536)
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    metrics = Metrics()
    backend = Backend(args.backend, args.max_message_bytes)
    front = Frontend(backend, Catalog(args.model_store), metrics)
    grpc_server = grpc_api.server(front, metrics, f"{args.bind}:{args.grpc_port}", args.max_message_bytes)
    runners = [
        web.AppRunner(rest_api.app(front, metrics, args.max_message_bytes), access_log=None),
        web.AppRunner(rest_api.metrics_app(metrics), access_log=None),
    ]
    await grpc_server.start()
    for runner, port in zip(runners, (args.http_port, args.metrics_port), strict=True):
        await runner.setup()
        await web.TCPSite(runner, args.bind, port, reuse_port=False).start()
    logging.info(
        "v2 front-end: REST %s:%d  gRPC %s:%d  metrics %s:%d/metrics -> TorchServe %s",
        args.bind,
        args.http_port,
        args.bind,
        args.grpc_port,
        args.bind,
        args.metrics_port,
        args.backend,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await grpc_server.stop(grace=5)
    for runner in runners:
        await runner.cleanup()
    await backend.close()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(parse_args(argv)))
    except (OSError, RuntimeError) as e:  # a port taken, an address that does not exist
        print(f"v2 front-end: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
