"""Per-request isolation in ``run_batch``/``run_batch_timed`` with a scripted in-process pipeline:
late requests are answered 504 before decode, pre-failed requests keep their own error, decode
failures stay with their request, and a failing batch stage is bisected until the culprit is alone
(a 500 for it, its own answer for every batch-mate). A last test does the same over a real model.
"""

from __future__ import annotations

import math
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zooserve.errors import (
    DeadlineExceeded,
    ImageTooLarge,
    InvalidImage,
    InvalidParameter,
    ModelUnloading,
    Overloaded,
    ServiceError,
)
from zooserve.runtime.bundle import load_bundle
from zooserve.runtime.pipeline import Pipeline, Request, run_batch, run_batch_timed
from zooserve.runtime.tasks import make_pipeline

EXAMPLES = int(os.environ.get("ZOOSERVE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="ZOOSERVE_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass
class Item:
    tag: str
    poison: str = ""  # the stage that fails whenever this item is in its batch


class Scripted(Pipeline):
    """Bodies are dicts ``{"tag", "decode": "ok"|"typed"|"crash", "poison": stage}``; every stage
    counts its calls and the batch sizes it saw."""

    model_name = "scripted"

    def __init__(self, max_batch: int | None = None, stage_error: type[Exception] = RuntimeError) -> None:
        self.calls: dict[str, list[int]] = {"decode": [], "preprocess": [], "forward": [], "postprocess": []}
        self.max_batch = max_batch  # a batch-wide limit: bigger batches fail in preprocess
        self.stage_error = stage_error

    def decode(self, request: Request) -> Item:
        self.calls["decode"].append(1)
        body = request.body
        if body["decode"] == "typed":
            raise InvalidImage(f"bad image {body['tag']}")
        if body["decode"] == "crash":
            raise KeyError(body["tag"])
        return Item(body["tag"], body.get("poison", ""))

    def _stage(self, name: str, items: list[Item]) -> None:
        self.calls[name].append(len(items))
        if any(it.poison == name for it in items):
            raise self.stage_error(f"{name} fails on this batch")

    def preprocess(self, items: list[Item]) -> list[Item]:
        self._stage("preprocess", items)
        if self.max_batch is not None and len(items) > self.max_batch:
            raise ImageTooLarge(f"{len(items)} items over the batch budget")
        return list(items)

    def forward(self, inputs: list[Item]) -> list[Item]:
        self._stage("forward", inputs)
        return inputs

    def postprocess(self, outputs: list[Item], items: list[Item]) -> list[dict[str, Any]]:
        self._stage("postprocess", items)
        return [{"tag": o.tag} for o in outputs]

    def example_item(self) -> Item:
        return Item("example")


def ok(tag: str, **kw: Any) -> Request:
    return Request(body={"tag": tag, "decode": "ok", **kw})


# ---- before decode: deadlines and pre-failed requests --------------------------------------------
def test_a_late_request_is_answered_504_without_being_decoded() -> None:
    pipe = Scripted()
    now = time.time()
    late = ok("late")
    late.deadline = now - 2.0
    soon = ok("soon")
    soon.deadline = now + 60
    out = run_batch(pipe, [ok("a"), late, soon])
    assert [r.status for r in out] == [200, 504, 200]
    assert (
        out[1].body["type"] == "DeadlineExceeded"
        and "ms before the model reached it" in out[1].body["message"]
    )
    assert out[0].body == {"tag": "a"} and out[2].body == {"tag": "soon"}
    assert len(pipe.calls["decode"]) == 2 and pipe.calls["preprocess"] == [2]


def test_only_late_requests_means_no_batch_stage_runs() -> None:
    pipe = Scripted()
    reqs = [ok(str(i)) for i in range(3)]
    for r in reqs:
        r.deadline = time.time() - 0.001
    out = run_batch(pipe, reqs)
    assert [r.status for r in out] == [504] * 3
    assert DeadlineExceeded.status == 504 and DeadlineExceeded.grpc_code == "DEADLINE_EXCEEDED"
    assert all(not calls for calls in pipe.calls.values())


@pytest.mark.parametrize(
    "error", [Overloaded("busy", retry_after_s=3), ModelUnloading("going"), InvalidParameter("x-topk: no")]
)
def test_a_pre_failed_request_passes_through_as_its_own_error(error: ServiceError) -> None:
    pipe = Scripted()
    out = run_batch(pipe, [ok("a"), error, ok("b")])
    assert [r.status for r in out] == [200, error.status, 200]
    assert out[1].body == {"code": error.status, "type": type(error).__name__, "message": str(error)}
    assert pipe.calls["preprocess"] == [2]


def test_decode_failures_are_client_errors_of_that_request_alone() -> None:
    pipe = Scripted()
    out = run_batch(
        pipe, [Request({"tag": "t", "decode": "typed"}), ok("a"), Request({"tag": "c", "decode": "crash"})]
    )
    assert [(r.status, r.body.get("type")) for r in out] == [
        (400, "InvalidImage"),
        (200, None),
        (400, "MalformedRequest"),
    ]
    assert "KeyError" in out[2].body["message"] and out[1].body == {"tag": "a"}
    assert pipe.calls["preprocess"] == [1]  # only the request that decoded reached the batch stages


def test_a_body_of_the_wrong_shape_is_a_400_not_a_crash() -> None:
    out = run_batch(Scripted(), [Request(None), Request(b"bytes"), Request([1, 2]), ok("a")])
    assert [r.status for r in out] == [400, 400, 400, 200]
    assert {r.body["type"] for r in out[:3]} == {"MalformedRequest"}


# ---- batch stages: bisect to the culprit ---------------------------------------------------------
@pytest.mark.parametrize("stage", ["preprocess", "forward", "postprocess"])
def test_a_batch_stage_failure_is_the_culprits_500_alone(stage: str) -> None:
    pipe = Scripted()
    reqs = [ok(str(i), poison=stage if i == 5 else "") for i in range(8)]
    out = run_batch(pipe, reqs)
    assert [r.status for r in out] == [200] * 5 + [500] + [200] * 2
    assert out[5].body["type"] == "InferenceFailed" and "fails on this batch" in out[5].body["message"]
    assert [r.body["tag"] for i, r in enumerate(out) if i != 5] == ["0", "1", "2", "3", "4", "6", "7"]
    # 8 -> 4+4 -> 2+2 -> 1+1: the culprit's path only, not 2n-1 calls
    assert len(pipe.calls[stage]) <= 1 + 2 * math.ceil(math.log2(8))


def test_a_typed_error_in_a_batch_stage_keeps_its_status() -> None:
    pipe = Scripted(stage_error=lambda msg: InvalidParameter(msg))  # type: ignore[arg-type]
    out = run_batch(pipe, [ok("a"), ok("b", poison="forward")])
    assert [(r.status, r.body.get("type")) for r in out] == [(200, None), (400, "InvalidParameter")]


def test_a_batch_wide_limit_splits_until_every_request_is_answered() -> None:
    pipe = Scripted(max_batch=2)
    out = run_batch(pipe, [ok(str(i)) for i in range(7)])
    assert [r.status for r in out] == [200] * 7 and [r.body["tag"] for r in out] == list("0123456")
    assert max(pipe.calls["forward"]) <= 2


def test_a_single_request_over_a_batch_wide_limit_gets_the_typed_error() -> None:
    pipe = Scripted(max_batch=0)
    out = run_batch(pipe, [ok("a"), ok("b")])
    assert [(r.status, r.body["type"]) for r in out] == [(413, "ImageTooLarge")] * 2


def test_stage_times_accumulate_over_a_split_batch() -> None:
    pipe = Scripted()
    before = time.time()
    out, times = run_batch_timed(pipe, [ok("a"), ok("b", poison="forward"), ok("c")])
    assert [r.status for r in out] == [200, 500, 200]
    assert before - 1 <= times.started <= time.time()
    assert {"decode", "preprocess", "inference", "postprocess", "handler"} <= set(times.stages)
    assert all(v >= 0 for v in times.stages.values())
    assert times.stages["handler"] >= times.stages["decode"]


def test_a_postprocess_with_too_few_bodies_is_a_500_per_request_not_a_crash() -> None:
    class Short(Scripted):
        def postprocess(self, outputs: list[Item], items: list[Item]) -> list[dict[str, Any]]:
            return [{"tag": o.tag} for o in outputs if o.tag != "lost"]

    out = run_batch(Short(), [ok("a"), ok("lost"), ok("c")])
    assert [r.status for r in out] == [200, 500, 200]


def test_a_batch_decodes_on_decode_workers_threads_at_once() -> None:
    """Two requests meet at a barrier inside decode: only possible if they decode concurrently
    (one at a time, the first would wait out the barrier's timeout and fail its request)."""
    meet = threading.Barrier(2, timeout=10)

    class Meeting(Scripted):
        def decode(self, request: Request) -> Item:
            meet.wait()
            return super().decode(request)

    pipe = Meeting()
    pipe.decode_workers = 2
    out = run_batch(pipe, [ok("a"), ok("b")])
    assert [(r.status, r.body) for r in out] == [(200, {"tag": "a"}), (200, {"tag": "b"})]
    assert pipe.calls["preprocess"] == [2]


# ---- structure fuzzing: any mix of request kinds -------------------------------------------------
KINDS = ["ok", "typed", "crash", "late", "prefailed", "preprocess", "forward", "postprocess"]


def _make(kind: str, i: int) -> Request | ServiceError:
    if kind == "prefailed":
        return Overloaded(f"refused {i}", retry_after_s=2)
    if kind in ("typed", "crash"):
        return Request({"tag": str(i), "decode": kind})
    req = ok(str(i), poison=kind if kind in ("preprocess", "forward", "postprocess") else "")
    if kind == "late":
        req.deadline = time.time() - 1
    return req


EXPECTED = {
    "ok": (200, None),
    "typed": (400, "InvalidImage"),
    "crash": (400, "MalformedRequest"),
    "late": (504, "DeadlineExceeded"),
    "prefailed": (503, "Overloaded"),
    "preprocess": (500, "InferenceFailed"),
    "forward": (500, "InferenceFailed"),
    "postprocess": (500, "InferenceFailed"),
}


@FUZZ
@given(
    kinds=st.lists(st.sampled_from(KINDS), max_size=16),
    max_batch=st.none() | st.integers(1, 8),
    workers=st.sampled_from([1, 3]),
)
def test_every_request_gets_its_own_answer(kinds: list[str], max_batch: int | None, workers: int) -> None:
    pipe = Scripted(max_batch=max_batch)
    pipe.decode_workers = workers  # answers in request order whether decoded one by one or at once
    out = run_batch(pipe, [_make(k, i) for i, k in enumerate(kinds)])
    assert len(out) == len(kinds)
    for i, (kind, resp) in enumerate(zip(kinds, out, strict=True)):
        assert (resp.status, resp.body.get("type")) == EXPECTED[kind], (i, kind, resp)
        if kind == "ok":
            assert resp.body == {"tag": str(i)}
    reached = [k for k in kinds if k in ("ok", "preprocess", "forward", "postprocess")]
    assert len(pipe.calls["decode"]) == len([k for k in kinds if k not in ("late", "prefailed")])
    if reached and max_batch is None:
        poisons = len(reached) - reached.count("ok")
        depth = math.ceil(math.log2(len(reached))) if len(reached) > 1 else 0
        assert len(pipe.calls["preprocess"]) <= 1 + 2 * poisons * depth  # bisection, not one by one


# ---- the same over a real model ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(build_cache):
    return make_pipeline(
        load_bundle(build_cache("tiny_resnet", format="torchscript").bundle_dir, device="cpu")
    )


def _jpeg(value: int | None, seed: int = 0) -> bytes:
    from torchvision.io import encode_jpeg

    if value is None:
        img = torch.randint(
            0, 256, (3, 80, 100), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
        )
    else:
        img = torch.full((3, 80, 100), value, dtype=torch.uint8)
    return bytes(encode_jpeg(img, quality=95).numpy())


def test_a_model_that_fails_on_one_image_fails_that_request_alone(tiny) -> None:
    """The model raises on batches holding an all-black image: bisection isolates it, and every
    batch-mate's answer equals the one it gets alone."""
    original = tiny.model

    def picky(x: torch.Tensor) -> torch.Tensor:
        if (x.flatten(2).std(dim=2).amax(dim=1) < 1e-3).any():  # a flat (all-black) image
            raise RuntimeError("this model cannot take flat images")
        return original(x)

    datas = [_jpeg(None, 1), _jpeg(None, 2), _jpeg(0), _jpeg(None, 3), _jpeg(None, 4)]
    alone = [run_batch(tiny, [Request(d)])[0] for d in (datas[0], datas[1], datas[3], datas[4])]
    tiny.model = picky
    try:
        out = run_batch(tiny, [Request(d) for d in datas])
    finally:
        tiny.model = original
    assert [r.status for r in out] == [200, 200, 500, 200, 200]
    assert out[2].body["type"] == "InferenceFailed" and "flat images" in out[2].body["message"]
    for a, m in zip(alone, [out[0], out[1], out[3], out[4]], strict=True):
        assert [p["index"] for p in a.body["predictions"]] == [p["index"] for p in m.body["predictions"]]
        for pa, pm in zip(a.body["predictions"], m.body["predictions"], strict=True):
            assert abs(pa["probability"] - pm["probability"]) < 1e-4


# ---- the error table rows these answers rely on -------------------------------------------------------
@pytest.mark.parametrize(
    "name, status, grpc_code",
    [
        ("MalformedRequest", 400, "INVALID_ARGUMENT"),
        ("Overloaded", 503, "UNAVAILABLE"),
        ("ModelUnloading", 503, "UNAVAILABLE"),
        ("DeadlineExceeded", 504, "DEADLINE_EXCEEDED"),
        ("InferenceFailed", 500, "INTERNAL"),
        ("ModelNotFound", 404, "NOT_FOUND"),
    ],
)
def test_error_table_rows(name: str, status: int, grpc_code: str) -> None:
    import grpc

    from zooserve import errors

    rows = {r.type: r for r in errors.error_table()}
    assert (rows[name].status, rows[name].grpc_code) == (status, grpc_code)
    assert grpc_code in grpc.StatusCode.__members__ and rows[name].meaning
    again = errors.from_json(getattr(errors, name)("why").to_json())
    assert type(again).__name__ == name and again.status == status and str(again) == "why"


def test_decoding_a_batch_on_threads_answers_exactly_as_one_at_a_time(tiny, monkeypatch) -> None:
    """Real JPEGs (of several sizes, so some take the DCT-scaled path) and bad bytes through the
    decode threads: the same statuses and bodies, in the same order, as decoding one by one."""
    from zooserve.bench.samples import photo_jpegs

    photos = list(photo_jpegs().values())  # 640x427 photos and generated ones up to 1280x720
    reqs = [Request(b) for b in (_jpeg(None, 1), b"junk", *photos, _jpeg(None, 2), b"\xff\xd8\xff")]
    answers = {}
    for workers in (1, 3):
        monkeypatch.setattr(tiny, "decode_workers", workers)
        answers[workers] = [(r.status, r.body) for r in run_batch(tiny, reqs)]
    assert answers[1] == answers[3]
    assert [s for s, _ in answers[3]] == [200, 400, *[200] * len(photos), 200, 400]
    assert "0x" not in answers[3][-1][1]["message"]  # no memory address of the process in an answer
