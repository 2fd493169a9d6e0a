"""A real TorchServe for the integration tests: free loopback ports, tiny models, token auth on,
stopped afterwards even when tests fail."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from zooserve.client import Client
from zooserve.export.archive import rewrite_config
from zooserve.serving import server

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from otlp_receiver import Receiver  # noqa: E402

# name -> how to build it (build_cache arguments). lenet5 is the AOTInductor representative
# (the default format); the tiny ones use TorchScript to keep compile time out of the suite.
SERVED = {
    "lenet5": {"format": "aoti"},
    "tiny_resnet": {"format": "torchscript"},
    "tiny_vgg_dense": {"name": "tiny_vgg", "format": "aoti", "dense": True},
    "tiny_resnet_tencrop": {"name": "tiny_resnet", "format": "torchscript", "evaluation": "tencrop"},
    "tiny_bert": {"format": "torchscript"},
    "tiny_show_attend_tell": {"format": "torchscript"},
    # lenet5's archive with TorchServe holding requests until a batch of 8 is full (or 3 s passed):
    # the tests that need a batch get one by design, not by luck
    "lenet5_batched": {"from": "lenet5", "config": {"batchSize": 8, "maxBatchDelay": 3000}},
}


@dataclass
class Served:
    cfg: server.ServerConfig
    client: Client
    bundles: dict[str, Path]  # served name -> build dir (for in-process comparisons)

    def token(self, which: str = "inference") -> str:
        return server.read_keys(self.cfg)[which]


def build_store(build_cache, store: Path, models: dict[str, dict]) -> dict[str, Path]:
    """The archives of ``models`` in ``store``: built (cached), or another's with its
    model-config.yaml changed (``from``/``config``); served name -> build dir."""
    store.mkdir(parents=True, exist_ok=True)
    bundles = {}
    for served, how in models.items():
        how = dict(how)
        if "from" in how:
            rewrite_config(
                store / f"{how['from']}.mar", store / f"{served}.mar", lambda c, how=how: c | how["config"]
            )
            bundles[served] = bundles[how["from"]]
            continue
        name = how.pop("name", served)
        res = build_cache(name, archive_name=None if served == name else served, **how)
        shutil.copy(res.archive, store / f"{served}.mar")
        bundles[served] = res.bundle_dir
    return bundles


@pytest.fixture(scope="session")
def otlp() -> Iterator[Receiver]:
    """A real OTLP trace receiver the session's server exports its spans to."""
    receiver = Receiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="session")
def served(build_cache, otlp: Receiver, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("torchserve")
    bundles = build_store(build_cache, root / "model_store", SERVED)
    cfg = server.ServerConfig(
        model_store=root / "model_store", run_dir=root / "run", otlp_endpoint=otlp.endpoint
    )
    cfg = server.on_free_ports(cfg)
    ports = cfg.ports
    os.environ.setdefault("OTEL_BSP_SCHEDULE_DELAY", "200")  # the gateway's exporter: batches every 0.2 s
    try:
        server.start(cfg, list(SERVED), timeout=240)
        yield Served(
            cfg,
            Client(
                port=ports.inference,
                grpc_port=ports.grpc_inference,
                key_file=cfg.key_file,
                v2_port=ports.v2_http,
                v2_grpc_port=ports.v2_grpc,
            ),
            bundles,
        )
    finally:
        server.stop(cfg)
