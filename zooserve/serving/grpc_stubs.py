"""gRPC stubs generated from the .proto files shipped inside the installed TorchServe.

TorchServe packs ``inference.proto``, ``management.proto`` and ``open_inference_grpc.proto`` in
its frontend jar; we extract them and run grpcio-tools at install time (``make install``) or on
first use, into ``zooserve/_proto`` (git-ignored, never edited by hand).
"""

from __future__ import annotations

import importlib
import sys
import zipfile
from pathlib import Path
from types import ModuleType

import google.rpc  # googleapis-common-protos: provides google/rpc/status.proto
import grpc_tools
import ts
from grpc_tools import protoc

from zooserve.errors import ConfigError

PROTOS = ("inference.proto", "management.proto", "open_inference_grpc.proto")
OUT = Path(__file__).resolve().parents[1] / "_proto"


def _torchserve_jar() -> Path:
    return Path(ts.__file__).parent / "frontend" / "model-server.jar"


def generate(out: Path = OUT) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(_torchserve_jar()) as jar:
        for name in PROTOS:
            (out / name).write_bytes(jar.read(f"proto/{name}"))
    includes = [
        str(out),
        str(Path(grpc_tools.__file__).parent / "_proto"),
        str(Path(next(iter(google.rpc.__path__))).parents[1]),
    ]
    for name in PROTOS:
        args = [
            "protoc",
            *(f"-I{i}" for i in includes),
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            str(out / name),
        ]
        if protoc.main(args) != 0:
            raise ConfigError(f"protoc failed on {name}")
    (out / "__init__.py").write_text(
        '"""Generated from TorchServe\'s protos by zooserve.serving.grpc_stubs; do not edit."""\n'
    )
    return out


def load(name: str) -> ModuleType:
    """``load("inference_pb2_grpc")``: the generated module, generating the stubs if needed."""
    if not (OUT / f"{name}.py").exists():
        generate()
    # generated code imports its siblings as top-level modules (inference_pb2)
    if str(OUT) not in sys.path:
        sys.path.insert(0, str(OUT))
    return importlib.import_module(name)


if __name__ == "__main__":
    print(f"generated gRPC stubs in {generate()}")
