"""Start the gateway next to TorchServe (``zooserve serve``) and wait until it says every model is
ready; ``zooserve stop`` stops it through its pid file like the other processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests

from zooserve.errors import ServerError

LOG = "gateway.log"
CONFIG = "gateway.json"


@dataclass(frozen=True)
class Upstream:
    """TorchServe's private loopback ports behind the gateway."""

    inference: int
    management: int
    grpc_inference: int
    grpc_management: int


def write_config(cfg: Any, upstream: Upstream, props: dict[str, str]) -> Path:
    """The gateway's configuration, in the run dir (0700)."""
    public = (
        "inference",
        "management",
        "grpc_inference",
        "grpc_management",
        "v2_http",
        "v2_grpc",
        "gateway_metrics",
    )
    config = {
        "bind": cfg.bind,
        "ports": {name: getattr(cfg.ports, name) for name in public},
        "upstream": asdict(upstream),
        "key_file": str(cfg.key_file.resolve()) if cfg.token_auth else None,
        "token_expiry_min": cfg.token_expiry_min if cfg.token_auth else None,
        "model_store": str(Path(cfg.model_store).resolve()),
        "max_request_size": int(props.get("max_request_size", 6553500)),
        "otlp_endpoint": cfg.otlp_endpoint,
    }
    path = cfg.run_dir / CONFIG
    path.write_text(json.dumps(config, indent=1), "utf-8")
    return path.resolve()


def command(config: Path) -> list[str]:
    return [sys.executable, "-m", "zooserve.serving.gateway", "--config", str(config)]


def wait_ready(cfg: Any, token: str | None, timeout: float, proc: subprocess.Popen) -> None:
    """Until ``/ping`` on the public port says Healthy: TorchServe up, every model warm."""
    url = f"{cfg.url('inference')}/ping"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise ServerError(f"the gateway exited with code {proc.returncode}: {_tail(cfg)}")
        try:
            if requests.get(url, headers=headers, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        if time.monotonic() > deadline:
            raise ServerError(f"the gateway was not ready after {timeout:.0f}s on {url}: {_tail(cfg)}")
        time.sleep(0.2)


def _tail(cfg: Any, lines: int = 5) -> str:
    f = cfg.log_dir / LOG
    text = f.read_text("utf-8", errors="replace").splitlines()[-lines:] if f.exists() else []
    return " | ".join(text) or str(f)
