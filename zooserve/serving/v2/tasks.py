"""What each task's model looks like over the Open Inference Protocol: inputs, outputs, and how
the JSON prediction (the same body REST returns) becomes the numeric outputs.

Every task takes one BYTES input (image file bytes, or UTF-8 text) with one element per item and
answers ``predictions`` (BYTES, the JSON body per item) plus, where it fits, numbers:
classification: ``probabilities`` FP32 [N, K] and ``indices`` INT64 [N, K] (the top-K classes,
best first; K is the ``topk`` parameter, default the model's); captioning: ``caption`` BYTES [N]
and ``score`` FP32 [N].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zooserve.serving.v2.tensors import Tensor


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1: variable (the first dimension is the batch)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class Prediction:
    """One item's answer: the JSON body REST returns, parsed, and its text as the handler wrote it."""

    body: dict[str, Any]
    text: bytes


Numeric = Callable[[list[dict[str, Any]]], list[Tensor]]


@dataclass(frozen=True)
class TaskSpec:
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    numeric: Numeric

    def output_names(self) -> list[str]:
        return [o.name for o in self.outputs]

    def answer(self, predictions: list[Prediction]) -> list[Tensor]:
        """All outputs for the N items, in metadata order."""
        text = [p.text for p in predictions]
        return [
            Tensor(PREDICTIONS.name, "BYTES", [len(text)], text),
            *self.numeric([p.body for p in predictions]),
        ]


PREDICTIONS = TensorSpec("predictions", "BYTES", (-1,))


def _topk(bodies: list[dict[str, Any]]) -> list[Tensor]:
    rows = [b.get("predictions", []) for b in bodies]
    k = min(len(r) for r in rows)  # one request has one topk: equal lengths
    probs = [float(p["probability"]) for r in rows for p in r[:k]]
    idx = [int(p["index"]) for r in rows for p in r[:k]]
    return [
        Tensor("probabilities", "FP32", [len(rows), k], probs),
        Tensor("indices", "INT64", [len(rows), k], idx),
    ]


def _caption(bodies: list[dict[str, Any]]) -> list[Tensor]:
    n = len(bodies)
    return [
        Tensor("caption", "BYTES", [n], [str(b.get("caption", "")).encode() for b in bodies]),
        Tensor("score", "FP32", [n], [float(b.get("score", 0.0)) for b in bodies]),
    ]


_CLASSES = (TensorSpec("probabilities", "FP32", (-1, -1)), TensorSpec("indices", "INT64", (-1, -1)))
TASKS: dict[str, TaskSpec] = {
    "classify": TaskSpec(TensorSpec("image", "BYTES", (-1,)), (PREDICTIONS, *_CLASSES), _topk),
    "classify-text": TaskSpec(TensorSpec("text", "BYTES", (-1,)), (PREDICTIONS, *_CLASSES), _topk),
    "caption": TaskSpec(
        TensorSpec("image", "BYTES", (-1,)),
        (PREDICTIONS, TensorSpec("caption", "BYTES", (-1,)), TensorSpec("score", "FP32", (-1,))),
        _caption,
    ),
}
# a model TorchServe serves without a zooserve archive: bytes in, the handler's JSON out
GENERIC = TaskSpec(TensorSpec("data", "BYTES", (-1,)), (PREDICTIONS,), lambda bodies: [])


def spec_for(task: str | None) -> TaskSpec:
    return TASKS.get(task or "", GENERIC)
