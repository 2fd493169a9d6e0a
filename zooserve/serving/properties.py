"""TorchServe's ``config.properties`` for one server: the packaged template plus this server's
addresses, auth, model API and token lifetime."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path


@dataclass(frozen=True)
class Listen:
    """Where TorchServe itself listens (public ports, or private ones behind the gateway)."""

    inference: str  # host:port
    management: str
    metrics: str
    grpc_host: str
    grpc_inference: int
    grpc_management: int


def template() -> dict[str, str]:
    props: dict[str, str] = {}
    text = resources.files("zooserve.serving").joinpath("config.properties").read_text("utf-8")
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


def render(
    listen: Listen,
    model_store: Path,
    sockets: Path,
    token_auth: bool,
    model_api: bool,
    token_expiry_min: int,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    props = template() | {
        "inference_address": f"http://{listen.inference}",
        "management_address": f"http://{listen.management}",
        "metrics_address": f"http://{listen.metrics}",
        "grpc_inference_address": listen.grpc_host,
        "grpc_inference_port": str(listen.grpc_inference),
        "grpc_management_address": listen.grpc_host,
        "grpc_management_port": str(listen.grpc_management),
        "model_store": str(model_store.resolve()),
        "disable_token_authorization": str(not token_auth).lower(),
        "enable_model_api": str(model_api).lower(),
        "token_expiration_min": str(token_expiry_min),
    }
    # workers talk to the frontend over unix sockets in java.io.tmpdir: a directory per server
    # keeps servers on one machine (demo, tests, benchmarks) from ever sharing one
    props["vmargs"] = f"{props.get('vmargs', '')} -Djava.io.tmpdir={sockets.resolve()}".strip()
    return props | (extra or {})
