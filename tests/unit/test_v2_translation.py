"""The v2 front-end's pieces without a server: raw codecs, the two wire forms, validation, task
outputs, the archive catalog, error mapping, and per-element forwarding against a fake TorchServe."""

from __future__ import annotations

import asyncio
import json
import struct
import zipfile
from pathlib import Path

import grpc
import pytest

from zooserve import errors
from zooserve._proto import grpc_predict_v2_pb2 as v2pb
from zooserve._proto import open_inference_grpc_pb2 as tspb
from zooserve.serving import oip
from zooserve.serving.calls import DEADLINE, REQUEST_ID
from zooserve.serving.catalog import Catalog
from zooserve.serving.dispatch import Dispatcher
from zooserve.serving.telemetry import Telemetry
from zooserve.serving.v2 import rest_api
from zooserve.serving.v2.backend import backend_error
from zooserve.serving.v2.frontend import Frontend
from zooserve.serving.v2.metrics import Metrics
from zooserve.serving.v2.pbconv import answer_from_pb, answer_to_pb, call_from_pb, call_to_pb
from zooserve.serving.v2.tasks import spec_for
from zooserve.serving.v2.tensors import (
    InferAnswer,
    InferCall,
    Tensor,
    from_raw,
    pack_bytes,
    to_raw,
    unpack_bytes,
)


# ---- raw encodings -------------------------------------------------------------------------------
def test_bytes_elements_are_length_prefixed_little_endian() -> None:
    assert pack_bytes([b"ab", b""]) == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"
    assert unpack_bytes(pack_bytes([b"x" * 300, b"yz"])) == [b"x" * 300, b"yz"]


@pytest.mark.parametrize("raw", [b"\x05\x00\x00\x00abc", b"\x01\x00", b"\x02\x00\x00\x00ab\x09"])
def test_truncated_bytes_are_the_clients_error(raw: bytes) -> None:
    with pytest.raises(errors.InvalidTensor):
        unpack_bytes(raw)


def test_numeric_raw_round_trip() -> None:
    t = Tensor("p", "FP32", [1, 2], [0.5, 0.25])
    assert to_raw(t) == struct.pack("<2f", 0.5, 0.25)
    assert from_raw("FP32", to_raw(t)) == [0.5, 0.25]
    assert from_raw("INT64", to_raw(Tensor("i", "INT64", [2], [3, -1]))) == [3, -1]
    with pytest.raises(errors.InvalidTensor):
        from_raw("FP32", b"\x00\x00\x00")


# ---- gRPC form -----------------------------------------------------------------------------------
def _call(*elements: bytes, name: str = "image", **kw: object) -> InferCall:
    return InferCall("m", inputs=[Tensor(name, "BYTES", [len(elements)], list(elements))], **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", [True, False])
def test_grpc_call_round_trip_raw_and_typed(raw: bool) -> None:
    call = _call(
        b"\x89PNG", b"two", parameters={"topk": 3, "attention": True, "note": "x"}, outputs=["predictions"]
    )
    back = call_from_pb(v2pb.ModelInferRequest.FromString(call_to_pb(call, raw=raw).SerializeToString()))
    assert back == call


def test_raw_and_typed_contents_together_are_rejected() -> None:
    req = call_to_pb(_call(b"a"), raw=True)
    req.inputs[0].contents.bytes_contents.append(b"a")
    with pytest.raises(errors.InvalidTensor, match="raw_input_contents"):
        call_from_pb(req)


def test_answer_goes_out_as_raw_output_contents() -> None:
    answer = InferAnswer(
        "m",
        "1",
        "id",
        [Tensor("predictions", "BYTES", [1], [b"{}"]), Tensor("p", "FP32", [1, 2], [0.5, 0.5])],
    )
    pb = answer_to_pb(answer)
    assert len(pb.raw_output_contents) == 2 and not pb.outputs[0].HasField("contents")
    assert answer_from_pb(pb) == answer


# ---- REST form -----------------------------------------------------------------------------------
def test_rest_json_and_binary_inputs_decode_alike() -> None:
    doc = {"id": "7", "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["hi", "yo"]}]}
    call, _ = rest_api.parse_infer(json.dumps(doc).encode(), None, "m", "")
    raw = pack_bytes([b"hi", b"yo"])
    doc["inputs"][0] = {
        "name": "text",
        "shape": [2],
        "datatype": "BYTES",
        "parameters": {"binary_data_size": len(raw)},
    }
    head = json.dumps(doc).encode()
    call2, _ = rest_api.parse_infer(head + raw, str(len(head)), "m", "")
    assert call.inputs[0].data == call2.inputs[0].data == [b"hi", b"yo"] and call.id == "7"


@pytest.mark.parametrize(
    ("body", "header", "error"),
    [
        (b"{not json", None, errors.InvalidJSON),
        (b'{"inputs": 3}', None, errors.InvalidJSON),
        (b'{"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "data": [5]}]}', None, errors.InvalidTensor),  # noqa: E501
        (b'{"inputs": [{"name": "t", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": 9}}]}', None, errors.InvalidTensor),  # noqa: E501
        (b'{"inputs": []}extra', "14", errors.InvalidTensor),
        (b'{"inputs": []}', "99", errors.InvalidJSON),
    ],
)  # fmt: skip
def test_rest_mistakes_are_typed(body: bytes, header: str | None, error: type[errors.ZooError]) -> None:
    with pytest.raises(error):
        rest_api.parse_infer(body, header, "m", "")


def test_rest_outputs_binary_when_asked_per_output_or_for_all() -> None:
    answer = InferAnswer(
        "m", "", "", [Tensor("predictions", "BYTES", [1], [b'{"a":1}']), Tensor("p", "FP32", [1], [0.5])]
    )
    body, headers = rest_api.render_answer(answer, {"inputs": []})
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body)["outputs"][0]["data"] == ['{"a":1}']
    body, headers = rest_api.render_answer(
        answer, {"outputs": [{"name": "p", "parameters": {"binary_data": True}}]}
    )
    n = int(headers[rest_api.HEADER_LENGTH])
    assert json.loads(body[:n])["outputs"][1]["parameters"] == {"binary_data_size": 4}
    assert body[n:] == struct.pack("<f", 0.5)
    body, headers = rest_api.render_answer(answer, {"parameters": {"binary_data_output": True}})
    n = int(headers[rest_api.HEADER_LENGTH])
    assert body[n:] == pack_bytes([b'{"a":1}']) + struct.pack("<f", 0.5)


# ---- catalog, validation and task outputs ------------------------------------------------------------
def _store(tmp_path: Path, name: str, task: str) -> Catalog:
    with zipfile.ZipFile(tmp_path / f"{name}.mar", "w") as mar:
        mar.writestr("zooserve.json", json.dumps({"name": name, "task": task, "format": "aoti"}))
    return Catalog(tmp_path)


def test_catalog_reads_the_task_from_the_archive(tmp_path: Path) -> None:
    cat = _store(tmp_path, "net", "caption")
    info = cat.get("net")
    spec = spec_for(info.task)
    assert (info.task, info.platform, spec.input.name) == ("caption", "pytorch_aoti", "image")
    assert spec.output_names() == ["predictions", "caption", "score"]
    assert cat.get("elsewhere").task is None  # no archive: generic description
    with pytest.raises(errors.ModelNotFound):
        cat.get("../net")


BODY = {
    "predictions": [
        {"index": 4, "label": "4", "probability": 0.75},
        {"index": 1, "label": "1", "probability": 0.25},
    ]
}


class FakeTorchServe:
    """Answers ModelInfer with the handler's JSON for each element; elements b"bad" fail."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []

    async def call(
        self, method: str, request: bytes, metadata: object, timeout: float | None = None
    ) -> bytes:
        self.requests.append(request)
        if method == "ModelMetadata":
            return v2pb.ModelMetadataResponse(name="net", versions=["1.0"]).SerializeToString()
        data = tspb.ModelInferRequest.FromString(request).inputs[0].contents.bytes_contents[0]
        body = errors.InvalidImage("no image").to_json() if data == b"bad" else BODY
        resp = tspb.ModelInferResponse(model_name="net")
        resp.outputs.add(name="predictions", datatype="BYTES", shape=[1]).contents.bytes_contents.append(
            json.dumps(body).encode()
        )
        return resp.SerializeToString()


@pytest.fixture
def front(tmp_path: Path) -> Frontend:
    dispatcher = Dispatcher(_store(tmp_path, "net", "classify"), Telemetry())
    return Frontend(FakeTorchServe(), dispatcher, Metrics())  # type: ignore[arg-type]


def _infer(front: Frontend, call: InferCall, raw: bytes | None = None) -> InferAnswer:
    return asyncio.run(front.infer(call, (), raw=raw))


def test_batch_is_forwarded_per_element_with_numeric_outputs(front: Frontend) -> None:
    call = _call(b"a", b"b", b"c")
    call.model = "net"
    answer = _infer(front, call)
    assert len(front.backend.requests) == 3  # type: ignore[attr-defined]
    out = {t.name: t for t in answer.outputs}
    assert out["predictions"].shape == [3] and json.loads(out["predictions"].data[2]) == BODY
    assert out["probabilities"].shape == [3, 2] and out["probabilities"].data[:2] == [0.75, 0.25]
    assert out["indices"].data[:2] == [4, 1]


def test_one_bad_element_fails_the_call_with_its_type(front: Frontend) -> None:
    call = _call(b"a", b"bad")
    call.model = "net"
    with pytest.raises(errors.InvalidImage, match="element 1: no image"):
        _infer(front, call)


def test_unchanged_bytes_fast_path_and_parameters_as_options(front: Frontend) -> None:
    call = _call(b"a")
    call.model = "net"
    raw = call_to_pb(call, raw=False).SerializeToString()
    _infer(front, call, raw=raw)
    forwarded = front.backend.requests[-1]  # type: ignore[attr-defined]
    assert forwarded.startswith(raw)  # unchanged, with the gateway's id and deadline appended
    extra = tspb.ModelInferRequest.FromString(forwarded[len(raw) :])
    assert sorted(t.name for t in extra.inputs) == sorted([DEADLINE, REQUEST_ID])
    call.parameters = {"topk": 2, "binary_data_output": True}
    call.outputs = ["indices"]
    answer = _infer(front, call)
    sent = tspb.ModelInferRequest.FromString(front.backend.requests[-1])  # type: ignore[attr-defined]
    options = [(t.name, t.contents.bytes_contents[0]) for t in sent.inputs[1:]]
    assert [o for o in options if o[0] not in (DEADLINE, REQUEST_ID)] == [("x-topk", b"2")]
    assert [t.name for t in answer.outputs] == ["indices"]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"name": "data"}, "unexpected inference input 'data'"),
        ({"datatype": "FP32"}, "data-type is 'FP32'"),
        ({"shape": [1, 2]}, "expected \\[N\\] or \\[N, 1\\]"),
        ({"shape": [2]}, "has 1 elements but shape \\[2\\]"),
        ({"shape": [65], "data": [b"x"] * 65}, "over the limit"),
    ],
)
def test_calls_that_do_not_fit_the_metadata(front: Frontend, change: dict, match: str) -> None:
    call = _call(b"a")
    call.model = "net"
    for k, v in change.items():
        setattr(call.inputs[0], k, v)
    with pytest.raises(errors.InvalidTensor, match=match):
        _infer(front, call)
    call = _call(b"a", outputs=["nope"])
    call.model = "net"
    with pytest.raises(errors.InvalidTensor, match="unexpected inference output 'nope'"):
        _infer(front, call)


def test_metadata_describes_the_task(front: Frontend) -> None:
    meta = asyncio.run(front.model_metadata("net", "", ()))
    assert meta.platform == "pytorch_aoti" and list(meta.versions) == ["1.0"]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("predictions", "BYTES", [-1]), ("probabilities", "FP32", [-1, -1]), ("indices", "INT64", [-1, -1])
    ]  # fmt: skip


# ---- error mapping ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("code", "details", "error", "grpc_code", "status"),
    [
        (grpc.StatusCode.PERMISSION_DENIED, "Token Authorization failed", errors.Unauthorized, "UNAUTHENTICATED", 401),  # noqa: E501
        (grpc.StatusCode.INTERNAL, "Model not found: x\norg...ModelNotFoundException", errors.ModelNotFound, "NOT_FOUND", 404),  # noqa: E501
        (grpc.StatusCode.NOT_FOUND, "Model not found", errors.ModelNotFound, "NOT_FOUND", 404),
        (grpc.StatusCode.UNAVAILABLE, "connect failed", errors.Overloaded, "UNAVAILABLE", 503),
        (grpc.StatusCode.INTERNAL, "boom", errors.InferenceFailed, "INTERNAL", 500),
    ],
)  # fmt: skip
def test_torchserve_failures_map_through_the_error_table(code, details, error, grpc_code, status) -> None:  # noqa: ANN001
    err = backend_error(code, details)
    assert type(err) is error and err.grpc_code == grpc_code and err.status == status


def test_error_table_has_the_v2_rows() -> None:
    rows = {r.type: r for r in errors.error_table()}
    assert (rows["InvalidTensor"].status, rows["InvalidTensor"].grpc_code) == (400, "INVALID_ARGUMENT")
    assert (rows["Unauthorized"].status, rows["Unauthorized"].grpc_code) == (401, "UNAUTHENTICATED")


# ---- handler side: options arrive as x- inputs ---------------------------------------------------------
def test_oip_extra_x_inputs_become_options() -> None:
    body = {
        "id": "",
        "model_name": "m",
        "inputs": [
            {"name": "image", "datatype": "BYTES", "data": ["aGk="]},
            {"name": "x-topk", "datatype": "BYTES", "data": ["Mw=="]},
            {"name": "other", "datatype": "BYTES", "data": ["Mw=="]},
        ],
    }
    req = oip.to_request(body, {"x-attention": "1"})
    assert req.body == b"hi" and req.headers == {"x-topk": "3", "x-attention": "1"}
