"""Start the v2 front-end next to TorchServe and wait until it answers ``/v2/health/ready``
(``zooserve serve`` calls this once TorchServe's models are ready; ``zooserve stop`` stops it
through its pid file like the other processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

from zooserve.errors import ServerError

LOG = "v2.log"


def command(cfg: Any, max_message_bytes: int) -> list[str]:
    p = cfg.ports
    return [
        sys.executable,
        "-m",
        "zooserve.serving.v2",
        "--backend",
        f"{cfg.host}:{p.grpc_inference}",
        "--bind",
        cfg.bind,
        "--http-port",
        str(p.v2_http),
        "--grpc-port",
        str(p.v2_grpc),
        "--metrics-port",
        str(p.v2_metrics),
        "--model-store",
        str(Path(cfg.model_store).resolve()),
        "--max-message-bytes",
        str(max_message_bytes),
    ]


def spawn(cfg: Any, env: dict[str, str], max_message_bytes: int) -> subprocess.Popen:
    # the handler metrics' multiprocess directory is not this process's business
    env = {k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with open(cfg.log_dir / LOG, "ab") as log:
        return subprocess.Popen(
            command(cfg, max_message_bytes),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def wait_ready(cfg: Any, token: str | None, timeout: float, proc: subprocess.Popen) -> None:
    url = f"http://{cfg.host}:{cfg.ports.v2_http}/v2/health/ready"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServerError(f"v2 front-end exited with code {proc.returncode}: {_tail(cfg)}")
        try:
            if requests.get(url, headers=headers, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise ServerError(f"v2 front-end not ready after {timeout:.0f}s on {url}: {_tail(cfg)}")
        time.sleep(0.2)


def _tail(cfg: Any, lines: int = 5) -> str:
    f = cfg.log_dir / LOG
    text = f.read_text("utf-8", errors="replace").splitlines()[-lines:] if f.exists() else []
    return " | ".join(text) or os.fspath(f)
