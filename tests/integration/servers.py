"""Servers the integration tests start for themselves (beside the session's ``served``)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from zooserve.serving import server


@contextmanager
def own_server(root: Path, archives: dict[str, Path], timeout: float) -> Iterator[server.ServerConfig]:
    """A fresh server of its own (free ports, run dir under ``root``) serving each archive under
    its name."""
    store = root / "model_store"
    store.mkdir()
    for name, archive in archives.items():
        shutil.copy(archive, store / f"{name}.mar")
    cfg = server.on_free_ports(server.ServerConfig(model_store=store, run_dir=root / "run"))
    try:
        server.start(cfg, list(archives), timeout=timeout)
        yield cfg
    finally:
        server.stop(cfg)
