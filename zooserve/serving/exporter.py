"""Serve the handler metrics that TorchServe workers write in prometheus-client multiprocess mode.

TorchServe runs every model worker as its own Python process, so the handlers record
``zooserve_stage_seconds``, ``zooserve_batch_size`` and ``zooserve_requests_total`` into files under
``$PROMETHEUS_MULTIPROC_DIR`` (see ``zooserve.runtime.metrics``). This process merges those files
on every scrape and serves them over HTTP, next to TorchServe's own metrics endpoint::

    python -m zooserve.serving.exporter --port 8083 --dir "$PROMETHEUS_MULTIPROC_DIR" [--bind 127.0.0.1]

It records nothing itself. ``zooserve serve`` starts it; the container entrypoint does too.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector

DEFAULT_PORT = 8083
DEFAULT_BIND = "127.0.0.1"


def make_registry(directory: str | os.PathLike[str]):
    """A fresh registry that reads the multiprocess files in ``directory`` at collect time."""
    registry = CollectorRegistry(auto_describe=False)
    MultiProcessCollector(registry, path=str(directory))
    return registry


def serve(port: int, directory: str | os.PathLike[str], bind: str = DEFAULT_BIND):
    """Start the HTTP endpoint in a daemon thread; returns ``(server, thread)``.

    ``server.shutdown()`` stops it. Every path answers with the metrics (``/metrics`` included).
    """
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.R_OK | os.X_OK):
        raise PermissionError(f"metrics directory {path} is not readable")
    return start_http_server(port, addr=bind, registry=make_registry(path))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m zooserve.serving.exporter",
        description="Serve zooserve handler metrics (prometheus-client multiprocess files) over HTTP.",
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument(
        "--dir",
        default=os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
        help="multiprocess directory the workers write to (default: $PROMETHEUS_MULTIPROC_DIR)",
    )
    p.add_argument("--bind", default=DEFAULT_BIND, help=f"address to listen on (default {DEFAULT_BIND})")
    args = p.parse_args(argv)
    if not args.dir:
        p.error("--dir is required when PROMETHEUS_MULTIPROC_DIR is not set")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    try:
        server, _thread = serve(args.port, args.dir, args.bind)
    except OSError as exc:  # port in use, bad address, unreadable directory
        print(
            f"zooserve.serving.exporter: cannot serve on {args.bind}:{args.port} from {args.dir}: {exc}",
            file=sys.stderr,
        )
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(
        f"zooserve.serving.exporter: serving {args.dir} on http://{args.bind}:{args.port}/metrics", flush=True
    )
    stop.wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
