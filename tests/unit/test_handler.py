"""The TorchServe handler (``zooserve.serving.handler``) with a fake context and a fake pipeline in
the module global ``_pipeline``: ``handle`` never raises after init, answers every request with its
own status and strict JSON body, echoes request ids, reports stage timings, honours deadlines."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zooserve.runtime.bundle import load_bundle
from zooserve.runtime.pipeline import Pipeline, Request
from zooserve.runtime.tasks import make_pipeline
from zooserve.serving import handler
from zooserve.serving.calls import Call


class FakeContext:
    """What ``handle`` calls on TorchServe's Context, recording what it is told."""

    def __init__(
        self, headers: list[dict[str, Any] | None], part_headers: dict[int, Any] | None = None
    ) -> None:
        self.headers = headers
        self.part_headers = part_headers or {}
        self.status: dict[int, tuple[int, str]] = {}
        self.content_type: dict[int, str] = {}
        self.response_headers: dict[int, dict[str, str]] = {}

    def get_all_request_header(self, idx: int) -> dict[str, Any] | None:
        h = self.headers[idx]
        return None if h is None else dict(h)

    def get_request_header(self, idx: int, key: str) -> Any:
        return self.part_headers.get(idx)

    def get_request_id(self, idx: int) -> str:
        return f"ts-{idx}"

    def set_response_content_type(self, idx: int, value: str) -> None:
        self.content_type[idx] = value

    def set_response_status(self, code: int, phrase: str, idx: int) -> None:
        self.status[idx] = (code, phrase)

    def set_response_header(self, idx: int, key: str, value: str) -> None:
        self.response_headers.setdefault(idx, {})[key] = value


class Echo(Pipeline):
    """Answers each request with what the handler made of it; ``value`` bodies choose the output."""

    model_name = "echo"

    def __init__(self) -> None:
        self.seen: list[Request] = []

    def decode(self, request: Request) -> Any:
        self.seen.append(request)
        body = request.body
        if isinstance(body, (bytes, bytearray)) and body.startswith(b"bad"):
            raise ValueError("unreadable")
        return body

    def preprocess(self, items: list[Any]) -> list[Any]:
        return items

    def forward(self, inputs: list[Any]) -> list[Any]:
        return inputs

    def postprocess(self, outputs: list[Any], items: list[Any]) -> list[dict[str, Any]]:
        out = []
        for body in outputs:
            if body == b"nan":
                out.append({"predictions": [{"probability": float("nan")}]})
            elif body == b"inf":
                out.append({"predictions": [{"probability": float("inf")}]})
            elif body == b"object":
                out.append({"predictions": [{"probability": object()}]})
            else:
                out.append({"body": body if isinstance(body, (str, dict, list)) else repr(body)})
        return out

    def example_item(self) -> Any:
        return b""


@pytest.fixture
def echo(monkeypatch: pytest.MonkeyPatch) -> Echo:
    pipe = Echo()
    monkeypatch.setattr(handler, "_pipeline", pipe)
    return pipe


def _handle(data: list[dict[str, Any]], headers: list[dict[str, Any] | None] | None = None, **kw: Any):
    ctx = FakeContext(headers if headers is not None else [{} for _ in data], **kw)
    out = handler.handle(data, ctx)
    assert isinstance(out, list) and len(out) == len(data)
    return [json.loads(b) for b in out], ctx


# ---- pure helpers --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "batch, sizes",
    [(1, [1]), (2, [1, 2]), (3, [1, 2, 3]), (4, [1, 2, 4]), (6, [1, 2, 4, 6]), (8, [1, 2, 4, 8])],
)
def test_warmup_sizes(batch: int, sizes: list[int]) -> None:
    assert handler.warmup_sizes(batch) == sizes


@settings(max_examples=100, deadline=None, derandomize=True)
@given(batch=st.integers(1, 4096))
def test_warmup_sizes_are_doublings_up_to_the_batch(batch: int) -> None:
    sizes = handler.warmup_sizes(batch)
    assert sizes[0] == 1 and sizes[-1] == batch and sizes == sorted(set(sizes))
    assert all(s & (s - 1) == 0 for s in sizes[:-1])  # powers of two, then the batch size itself
    assert len(sizes) <= math.ceil(math.log2(batch)) + 1


def test_deadline_from_the_gateway_is_absolute_ms() -> None:
    assert handler.deadline({"x-zooserve-deadline": "1700000000123"}) == pytest.approx(1700000000.123)
    # the gateway's absolute deadline wins over a client's relative timeout
    both = {"x-zooserve-deadline": "1700000000000", "x-request-timeout-ms": "5000"}
    assert handler.deadline(both) == pytest.approx(1700000000.0)


def test_deadline_from_a_relative_timeout_counts_from_now() -> None:
    before = time.time()
    got = handler.deadline({"x-request-timeout-ms": "2500"})
    assert got is not None and before + 2.5 <= got <= time.time() + 2.5


@pytest.mark.parametrize(
    "headers",
    [{}, {"x-zooserve-deadline": "soon"}, {"x-request-timeout-ms": ""}, {"x-request-timeout-ms": "1 s"}],
)
def test_missing_or_malformed_deadlines_are_ignored(headers: dict[str, str]) -> None:
    assert handler.deadline(headers) is None


def test_the_call_forward_headers_round_trip_through_the_handler_deadline() -> None:
    call = Call("m", "rid", arrived=time.time(), deadline=time.time() + 3.0)
    got = handler.deadline(call.forward_headers())
    assert got is not None and abs(got - call.deadline) <= 1e-3


# ---- handle() ------------------------------------------------------------------------------------
def test_none_data_is_none(echo: Echo) -> None:
    assert handler.handle(None, FakeContext([])) is None


def test_every_request_gets_its_status_content_type_id_and_timing(echo: Echo) -> None:
    data = [{"body": b"one"}, {"body": b"bad bytes"}, {"body": b"three"}]
    headers = [{"X-Request-Id": "client-id-1"}, {}, {"x-request-id": "lower"}]
    bodies, ctx = _handle(data, headers)
    assert bodies[0] == {"body": "b'one'"} and bodies[2] == {"body": "b'three'"}
    assert bodies[1]["code"] == 400 and bodies[1]["type"] == "MalformedRequest"
    assert ctx.status == {1: (400, "MalformedRequest")}  # 200s are left to TorchServe's default
    assert ctx.content_type == {0: "application/json", 1: "application/json", 2: "application/json"}
    assert [ctx.response_headers[i]["X-Request-Id"] for i in range(3)] == ["client-id-1", "ts-1", "lower"]
    call = Call("echo", "x", 0.0, 0.0)
    call.read_timing(ctx.response_headers[0][handler.TIMING_HEADER])
    assert call.timing["batch"] == 3 and abs(call.timing["start"] - time.time()) < 60
    assert {"decode", "preprocess", "inference", "postprocess", "handler"} <= set(call.timing)
    assert len({ctx.response_headers[i][handler.TIMING_HEADER] for i in range(3)}) == 1  # one batch


def test_a_late_request_gets_504_and_is_not_decoded(echo: Echo) -> None:
    past = str((time.time() - 5) * 1e3)
    future = str((time.time() + 60) * 1e3)
    bodies, ctx = _handle(
        [{"body": b"late"}, {"body": b"fine"}, {"body": b"neg"}],
        [{"x-zooserve-deadline": past}, {"x-zooserve-deadline": future}, {"x-request-timeout-ms": "-1"}],
    )
    assert ctx.status == {0: (504, "DeadlineExceeded"), 2: (504, "DeadlineExceeded")}
    assert bodies[1] == {"body": "b'fine'"}
    assert [r.body for r in echo.seen] == [b"fine"]


def test_a_non_finite_output_is_a_500_for_that_request_alone(echo: Echo) -> None:
    bodies, ctx = _handle([{"body": b"ok"}, {"body": b"nan"}, {"body": b"inf"}, {"body": b"ok2"}])
    assert ctx.status == {1: (500, "InferenceFailed"), 2: (500, "InferenceFailed")}
    assert bodies[1]["type"] == "InferenceFailed" and "non-finite" in bodies[1]["message"]
    assert bodies[0] == {"body": "b'ok'"} and bodies[3] == {"body": "b'ok2'"}


def test_an_unserialisable_output_is_a_500_for_that_request_alone(echo: Echo) -> None:
    bodies, ctx = _handle([{"body": b"ok"}, {"body": b"object"}, {"body": b"ok2"}])
    assert ctx.status == {1: (500, "InferenceFailed")}
    assert bodies[0] == {"body": "b'ok'"} and bodies[2] == {"body": "b'ok2'"}


def test_a_request_whose_headers_cannot_be_read_fails_alone(echo: Echo) -> None:
    bodies, ctx = _handle([{"body": b"a"}, {"body": b"b"}], [{}, None])
    assert bodies[0] == {"body": "b'a'"}
    assert ctx.status == {1: (400, "MalformedRequest")} and ctx.response_headers[1]["X-Request-Id"] == "ts-1"


def test_a_pipeline_bug_is_a_500_per_request_never_an_exception(echo: Echo, monkeypatch) -> None:
    monkeypatch.setattr(echo, "postprocess", lambda outputs, items: [])  # too few bodies: run_batch raises
    bodies, ctx = _handle([{"body": b"a"}, {"body": b"b"}])
    assert [b["type"] for b in bodies] == ["InferenceFailed"] * 2
    assert ctx.status == {0: (500, "InferenceFailed"), 1: (500, "InferenceFailed")}


def test_json_bytes_are_parsed_and_extra_fields_become_options(echo: Echo) -> None:
    data = [
        {"data": b'{"text": "hi", "topk": 2}', "x-topk": b"3", "content-type": "application/json"},
        {"data": b"{not json", "content-type": b"application/json"},
        {"body": b"raw", "x-topk": "4"},
    ]
    headers = [{}, {}, {"X-Topk": "9", "Content-Type": "image/jpeg"}]
    _handle(data, headers)
    first, second, third = echo.seen
    assert first.body == {"text": "hi", "topk": 2} and first.headers["x-topk"] == "3"
    assert first.content_type == "application/json"
    assert second.body == b"{not json"  # malformed JSON stays bytes, for decode to refuse
    assert third.headers["x-topk"] == "9" and third.content_type == "image/jpeg"  # real headers win


def test_a_multipart_parts_own_content_type_wins(echo: Echo) -> None:
    _handle(
        [{"data": b"\xff\xd8\xff"}],
        [{"content-type": "multipart/form-data"}],
        part_headers={0: {"content-type": "Image/JPEG"}},
    )
    assert echo.seen[0].content_type == "image/jpeg"


def test_a_long_request_id_from_torchserve_headers_is_cut(echo: Echo) -> None:
    """Without a header the id is TorchServe's; _request_id keeps at most 128 characters."""
    assert handler._request_id(FakeContext([{"X-Request-Id": "a" * 500}]), 0) == "a" * 128
    assert handler._request_id(FakeContext([{}]), 0) == "ts-0"


def test_the_echoed_request_id_is_at_most_128_characters(echo: Echo) -> None:
    _, ctx = _handle(
        [{"body": b"a"}, {"body": b"b", "x-request-id": b"f" * 300}], [{"X-Request-Id": "a" * 1000}, {}]
    )
    assert all(len(ctx.response_headers[i]["X-Request-Id"]) <= 128 for i in range(2))


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    items=st.lists(
        st.fixed_dictionaries(
            {
                "body": st.one_of(
                    st.binary(max_size=20), st.text(max_size=20), st.sampled_from([b"nan", b"bad", b"ok"])
                )
            },
            optional={
                "x-topk": st.one_of(st.binary(max_size=8), st.text(max_size=8)),
                "content-type": st.sampled_from(["application/json", "text/plain", b"application/json"]),
            },
        ),
        min_size=1,
        max_size=6,
    ),
    header_values=st.lists(
        st.dictionaries(
            st.sampled_from(
                ["X-Request-Id", "x-zooserve-deadline", "x-request-timeout-ms", "Content-Type", "X-Topk"]
            ),
            st.one_of(st.text(max_size=20), st.integers(), st.none()),
            max_size=3,
        ),
        min_size=6,
        max_size=6,
    ),
)
def test_handle_never_raises_and_answers_strict_json(echo: Echo, monkeypatch, items, header_values) -> None:
    def batch_wide_failure(*args: Any) -> None:
        raise AssertionError(f"handle fell back to a batch-wide 500: {args}")

    monkeypatch.setattr(handler.logger, "exception", batch_wide_failure)
    bodies, ctx = _handle(items, header_values[: len(items)])
    for i, body in enumerate(bodies):
        if i in ctx.status:
            code, phrase = ctx.status[i]
            assert body["code"] == code and body["type"] == phrase and code != 200
        assert ctx.response_headers[i]["X-Request-Id"]


# ---- a real pipeline through handle() ------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(build_cache):
    return make_pipeline(
        load_bundle(build_cache("tiny_resnet", format="torchscript").bundle_dir, device="cpu")
    )


def test_a_model_producing_nan_for_one_image_fails_that_request_alone(tiny, monkeypatch) -> None:
    from torchvision.io import encode_jpeg

    def jpeg(value: int | None) -> bytes:
        g = torch.Generator().manual_seed(7)
        img = torch.randint(0, 256, (3, 80, 100), dtype=torch.uint8, generator=g) if value is None else None
        img = torch.full((3, 80, 100), value, dtype=torch.uint8) if img is None else img
        return bytes(encode_jpeg(img, quality=95).numpy())

    original = tiny.model

    def nan_on_flat(x: torch.Tensor) -> torch.Tensor:
        out = original(x).clone()
        flat = x.flatten(2).std(dim=2).amax(dim=1) < 1e-3
        out[flat] = float("nan")
        return out

    monkeypatch.setattr(tiny, "model", nan_on_flat)
    monkeypatch.setattr(handler, "_pipeline", tiny)
    bodies, ctx = _handle(
        [{"body": jpeg(None)}, {"body": jpeg(255)}, {"body": b"junk"}, {"body": jpeg(None)}]
    )
    assert ctx.status == {1: (500, "InferenceFailed"), 2: (400, "InvalidImage")}
    assert bodies[0] == bodies[3] and len(bodies[0]["predictions"]) == tiny.topk
    assert all(math.isfinite(p["probability"]) for p in bodies[0]["predictions"])
