"""Standard v2 protobuf messages <-> the neutral ``InferCall`` / ``InferAnswer`` (both directions:
the server decodes calls and encodes answers, ``zooserve.client`` does the opposite)."""

from __future__ import annotations

from typing import Any

from zooserve._proto import grpc_predict_v2_pb2 as v2pb
from zooserve.errors import InvalidTensor
from zooserve.serving.v2.tensors import CONTENTS_FIELDS, InferAnswer, InferCall, Tensor, from_raw, to_raw


def parameters_from_pb(params: Any) -> dict[str, Any]:
    out = {}
    for key, p in params.items():
        which = p.WhichOneof("parameter_choice")
        out[key] = getattr(p, which) if which else None  # Triton's double/uint64 kinds: unknown fields
    return out


def parameters_to_pb(target: Any, params: dict[str, Any]) -> None:
    for key, value in params.items():
        if isinstance(value, bool):
            target[key].bool_param = value
        elif isinstance(value, int):
            target[key].int64_param = value
        else:
            target[key].string_param = str(value)


def call_from_pb(req: v2pb.ModelInferRequest) -> InferCall:
    raw = list(req.raw_input_contents)
    if raw and len(raw) != len(req.inputs):
        raise InvalidTensor(f"{len(raw)} raw_input_contents for {len(req.inputs)} inputs")
    inputs = []
    for i, t in enumerate(req.inputs):
        what = f"input {t.name!r}"
        field = CONTENTS_FIELDS.get(t.datatype)
        if field is None:
            raise InvalidTensor(f"{what}: unsupported datatype {t.datatype!r}")
        if raw:
            if t.HasField("contents"):
                raise InvalidTensor(f"{what}: contents must not be given together with raw_input_contents")
            data = from_raw(t.datatype, raw[i], what)
        else:
            data = list(getattr(t.contents, field))
        inputs.append(Tensor(t.name, t.datatype, list(t.shape), data, parameters_from_pb(t.parameters)))
    return InferCall(
        model=req.model_name,
        version=req.model_version,
        id=req.id,
        inputs=inputs,
        parameters=parameters_from_pb(req.parameters),
        outputs=[o.name for o in req.outputs],
    )


def call_to_pb(call: InferCall, raw: bool = True) -> v2pb.ModelInferRequest:
    req = v2pb.ModelInferRequest(model_name=call.model, model_version=call.version, id=call.id)
    parameters_to_pb(req.parameters, call.parameters)
    for t in call.inputs:
        tensor = req.inputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        if raw:
            req.raw_input_contents.append(to_raw(t))
        else:
            getattr(tensor.contents, CONTENTS_FIELDS[t.datatype]).extend(t.data)
    for name in call.outputs:
        req.outputs.add(name=name)
    return req


def answer_to_pb(answer: InferAnswer) -> v2pb.ModelInferResponse:
    """Outputs as ``raw_output_contents``, as Triton answers."""
    resp = v2pb.ModelInferResponse(model_name=answer.model, model_version=answer.version, id=answer.id)
    for t in answer.outputs:
        resp.outputs.add(name=t.name, datatype=t.datatype, shape=t.shape)
        resp.raw_output_contents.append(to_raw(t))
    return resp


def answer_from_pb(resp: v2pb.ModelInferResponse) -> InferAnswer:
    raw = list(resp.raw_output_contents)
    outputs = []
    for i, t in enumerate(resp.outputs):
        if raw:
            data = from_raw(t.datatype, raw[i], f"output {t.name!r}")
        else:
            data = list(getattr(t.contents, CONTENTS_FIELDS[t.datatype]))
        outputs.append(Tensor(t.name, t.datatype, list(t.shape), data))
    return InferAnswer(resp.model_name, resp.model_version, resp.id, outputs)
