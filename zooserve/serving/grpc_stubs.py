"""The gRPC stubs generated from ``proto/*.proto`` at build/install time (``hatch_build.py``).

``zooserve/_proto`` is git-ignored and never edited by hand: ``pip install -e .`` (or building the
wheel) generates it; in a bare checkout ``python hatch_build.py`` does. Nothing reads TorchServe's
jar at run time any more.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from zooserve.errors import ConfigError


def load(name: str) -> ModuleType:
    """``load("inference_pb2_grpc")``: the generated module ``zooserve._proto.<name>``."""
    try:
        return importlib.import_module(f"zooserve._proto.{name}")
    except ModuleNotFoundError as e:
        if e.name is not None and e.name.startswith("zooserve._proto"):
            raise ConfigError(
                "gRPC stubs are missing: reinstall zooserve (pip install -e .) or run `python hatch_build.py`"
            ) from None
        raise
