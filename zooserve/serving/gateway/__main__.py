"""``python -m zooserve.serving.gateway``: the gateway process (started by ``zooserve serve``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

import aiohttp
import grpc
from aiohttp import web

from zooserve.serving import grpc_front, rest_front
from zooserve.serving.catalog import Catalog
from zooserve.serving.dispatch import DEFAULT_GRACE_S, Dispatcher
from zooserve.serving.telemetry import Telemetry
from zooserve.serving.upstream import Addresses, Backend, Keys
from zooserve.serving.v2 import grpc_api, rest_api
from zooserve.serving.v2.backend import Backend as OipBackend
from zooserve.serving.v2.frontend import Frontend
from zooserve.serving.v2.metrics import Metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m zooserve.serving.gateway", description=__doc__)
    p.add_argument("--config", type=Path, required=True, help="gateway.json written by zooserve serve")
    return p.parse_args(argv)


async def serve(config: dict) -> None:
    bind, ports, up = config["bind"], config["ports"], config["upstream"]
    max_request = int(config["max_request_size"])  # TorchServe's: one body
    max_body = max_request + 65536  # a gRPC message carries a little more than the body
    keys = Keys(Path(config["key_file"]) if config.get("key_file") else None)
    backend = Backend(Addresses(**up), keys, max_body)
    telemetry = Telemetry(config.get("otlp_endpoint"))
    store = Path(config["model_store"])
    dispatcher = Dispatcher(Catalog(store), telemetry, float(config.get("grace_s", DEFAULT_GRACE_S)))
    v2_metrics = Metrics(telemetry.registry)
    front = Frontend(OipBackend(backend.addresses.target("grpc_inference"), max_body), dispatcher, v2_metrics)

    options = [
        ("grpc.max_receive_message_length", max_body),
        ("grpc.max_send_message_length", max_body),
        ("grpc.so_reuseport", 0),  # a second server on the same port must fail, not share it
    ]
    inference_grpc = grpc.aio.server(options=options)
    inference_grpc.add_generic_rpc_handlers(
        (grpc_front.inference_handler(backend, dispatcher), grpc_api.handler(front, v2_metrics))
    )
    inference_grpc.add_insecure_port(f"{bind}:{ports['grpc_inference']}")
    inference_grpc.add_insecure_port(f"{bind}:{ports['v2_grpc']}")
    management_grpc = grpc.aio.server(options=options)
    management_grpc.add_generic_rpc_handlers((grpc_front.management_handler(backend, dispatcher, store),))
    management_grpc.add_insecure_port(f"{bind}:{ports['grpc_management']}")

    sites = {
        "inference": rest_front.inference_app(backend, dispatcher, max_request),
        "management": rest_front.management_app(backend, dispatcher, store),
        "v2_http": rest_api.app(front, v2_metrics, max_body),
        "gateway_metrics": rest_front.metrics_app(dispatcher),
    }
    runners = []
    for name, app in sites.items():
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, bind, int(ports[name]), reuse_port=False).start()
        runners.append(runner)
    await inference_grpc.start()
    await management_grpc.start()
    logging.info("gateway: %s on %s -> TorchServe %s", json.dumps(ports), bind, json.dumps(up))
    renewing = None
    if config.get("token_expiry_min"):
        renewing = asyncio.create_task(renew_tokens(backend, 60.0 * float(config["token_expiry_min"]) / 2))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if renewing is not None:
        renewing.cancel()
    await asyncio.gather(inference_grpc.stop(grace=5), management_grpc.stop(grace=5))
    for runner in runners:
        await runner.cleanup()
    await front.backend.close()
    await backend.close()


async def renew_tokens(backend: Backend, every_s: float) -> None:
    """New inference and management tokens at half their lifetime, through TorchServe's token
    API (it rewrites key_file.json; clients and this gateway re-read it)."""
    url = f"{backend.addresses.url('management')}/token"
    while True:
        await asyncio.sleep(every_s)
        for kind in ("inference", "management"):
            try:
                async with backend.http.get(
                    url, params={"type": kind}, headers=backend.keys.header("API")
                ) as r:
                    if r.status != 200:
                        logging.warning("token renewal (%s) refused: HTTP %d", kind, r.status)
            except aiohttp.ClientError as e:
                logging.warning("token renewal (%s) failed: %s", kind, e)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        asyncio.run(serve(json.loads(args.config.read_text("utf-8"))))
    except (OSError, RuntimeError, KeyError, ValueError) as e:  # a port taken, a bad config
        print(f"gateway: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
