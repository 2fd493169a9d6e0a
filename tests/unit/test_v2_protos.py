"""proto/ keeps its word: the files are what proto/README.md says they are, and TorchServe's OIP
service is wire-compatible with the standard one (what the v2 front-end's byte forwarding needs)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from zooserve.serving import grpc_stubs

ROOT = Path(__file__).resolve().parents[2]
PROTO = ROOT / "proto"


def test_every_proto_is_listed_with_its_sha256() -> None:
    readme = (PROTO / "README.md").read_text("utf-8")
    listed = dict(re.findall(r"\| `([\w.]+\.proto)` \|.*\| ([0-9a-f]{64}) \|", readme))
    files = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in PROTO.glob("*.proto")}
    assert files == listed


def _shape(message) -> dict:  # noqa: ANN001 - a protobuf Descriptor
    return {
        f.number: (
            f.name,
            f.type,
            f.label if hasattr(f, "label") else f.is_repeated,
            _shape(f.message_type) if f.message_type and not f.message_type.GetOptions().map_entry else None,
        )
        for f in message.fields
    }


@pytest.mark.parametrize(
    "rpc", ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata", "ModelMetadata", "ModelInfer"]
)
def test_torchserve_oip_and_standard_v2_are_wire_compatible(rpc: str) -> None:
    ts = grpc_stubs.load("open_inference_grpc_pb2").DESCRIPTOR.services_by_name["GRPCInferenceService"]
    std = grpc_stubs.load("grpc_predict_v2_pb2").DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert std.full_name == "inference.GRPCInferenceService"
    a, b = ts.methods_by_name[rpc], std.methods_by_name[rpc]
    assert _shape(a.input_type) == _shape(b.input_type)
    assert _shape(a.output_type) == _shape(b.output_type)


def test_stubs_are_generated_from_proto_dir() -> None:
    pb = grpc_stubs.load("inference_pb2")
    assert pb.DESCRIPTOR.name.endswith("inference.proto")
    assert pb.DESCRIPTOR.package == "org.pytorch.serve.grpc.inference"
