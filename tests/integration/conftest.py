"""A real TorchServe for the integration tests: free loopback ports, tiny models, token auth on,
stopped afterwards even when tests fail."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from zooserve.client import Client
from zooserve.serving import server

# name -> how to build it (build_cache arguments). lenet5 is the AOTInductor representative
# (the default format); the tiny ones use TorchScript to keep compile time out of the suite.
SERVED = {
    "lenet5": {"format": "aoti"},
    "tiny_resnet": {"format": "torchscript"},
    "tiny_vgg_dense": {"name": "tiny_vgg", "format": "aoti", "dense": True},
    "tiny_resnet_tencrop": {"name": "tiny_resnet", "format": "torchscript", "evaluation": "tencrop"},
    "tiny_bert": {"format": "torchscript"},
    "tiny_show_attend_tell": {"format": "torchscript"},
}


@dataclass
class Served:
    cfg: server.ServerConfig
    client: Client
    bundles: dict[str, Path]  # served name -> build dir (for in-process comparisons)

    def token(self, which: str = "inference") -> str:
        return server.read_keys(self.cfg)[which]


def build_store(build_cache, store: Path, models: dict[str, dict]) -> dict[str, Path]:
    store.mkdir(parents=True, exist_ok=True)
    bundles = {}
    for served, how in models.items():
        how = dict(how)
        name = how.pop("name", served)
        res = build_cache(name, archive_name=None if served == name else served, **how)
        shutil.copy(res.archive, store / f"{served}.mar")
        bundles[served] = res.bundle_dir
    return bundles


@pytest.fixture(scope="session")
def served(build_cache, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("torchserve")
    bundles = build_store(build_cache, root / "model_store", SERVED)
    cfg = server.on_free_ports(server.ServerConfig(model_store=root / "model_store", run_dir=root / "run"))
    ports = cfg.ports
    try:
        server.start(cfg, list(SERVED), timeout=240)
        yield Served(
            cfg, Client(port=ports.inference, grpc_port=ports.grpc_inference, key_file=cfg.key_file), bundles
        )
    finally:
        server.stop(cfg)
