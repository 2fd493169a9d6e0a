"""The bad-input corpus against every served task (classify, caption, classify-text), REST and gRPC.

Uses the session ``served`` TorchServe (tiny_resnet, tiny_show_attend_tell and tiny_bert among its
models). Expected outcomes come from tests/data/make_bad_inputs.py (``expected``);
``python tests/data/reliability_table.py`` writes the same results to docs/reliability.md.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from zooserve import errors
from zooserve.client import Client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from make_bad_inputs import JSON, OCTET, TEXT, Case, _photo, all_cases, encode, expected  # noqa: E402
from reliability_table import (  # noqa: E402
    TASKS,
    Outcome,
    case_mismatches,
    extra_cases,
    extra_mismatches,
    send_case,
    send_extra,
    send_grpc,
    send_rest,
)

pytestmark = pytest.mark.integration
CASES = all_cases()


@dataclass
class Zoo:
    url: str
    token: str
    channel: Any
    client: Client

    def rest(self, model: str, data: bytes, ctype: str) -> Outcome:
        return send_rest(self.url, self.token, model, data, ctype)

    def grpc(self, model: str, data: bytes, ctype: str = "") -> Outcome:
        return send_grpc(self.channel, self.token, model, data, ctype)


@pytest.fixture(scope="module")
def zoo(served) -> Iterator[Zoo]:
    with grpc.insecure_channel(f"127.0.0.1:{served.cfg.ports.grpc_inference}") as channel:
        yield Zoo(served.cfg.url(), served.token(), channel, served.client)


def _good(model: str) -> tuple[bytes, str]:
    if TASKS[model][0] == "classify-text":
        return b"a short and friendly sentence", TEXT
    return encode(_photo(), "JPEG", quality=90), OCTET


def _still_serving(zoo: Zoo) -> None:
    for model in TASKS:
        data, ctype = _good(model)
        assert zoo.rest(model, data, ctype).ok, model


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case_on_every_task_rest_and_grpc(zoo: Zoo, case: Case) -> None:
    wrong: list[str] = []
    for model, (task, _) in TASKS.items():
        wrong += case_mismatches(case, task, model, send_case(zoo.url, zoo.channel, zoo.token, model, case))
    assert not wrong, "\n".join(wrong)
    _still_serving(zoo)


def test_unknown_model_version_oversize_and_form_body(zoo: Zoo) -> None:
    wrong: list[str] = []
    for extra in extra_cases(encode(_photo(), "JPEG")):
        wrong += extra_mismatches(extra, *send_extra(zoo.url, zoo.channel, zoo.token, extra))
    assert not wrong, "\n".join(wrong)
    _still_serving(zoo)


def _same(a: dict[str, Any], b: dict[str, Any], tol: float = 1e-4) -> bool:
    """Equal answers up to float noise from batch composition."""
    if "caption" in a:
        return a["tokens"] == b["tokens"] and abs(a["score"] - b["score"]) <= 1e-3
    return [p["index"] for p in a["predictions"]] == [p["index"] for p in b["predictions"]] and all(
        abs(p["probability"] - q["probability"]) <= tol
        for p, q in zip(a["predictions"], b["predictions"], strict=True)
    )


@pytest.mark.parametrize("via", ["rest", "grpc"])
def test_good_requests_batched_with_bad_ones_get_their_solo_answers(zoo: Zoo, via: str) -> None:
    goods: list[tuple[str, bytes, str]] = []
    for i in range(4):
        img = encode(_photo(120 + 8 * i, 100), "PNG")
        goods += [("tiny_resnet", img, OCTET), ("tiny_show_attend_tell", img, OCTET)]
        goods.append(("tiny_bert", f"sentence number {i} about the weather".encode(), TEXT))

    def send(model: str, data: bytes, ctype: str) -> Outcome:
        return zoo.rest(model, data, ctype) if via == "rest" else zoo.grpc(model, data, ctype)

    solo = [send(*g) for g in goods]
    assert all(o.ok for o in solo)
    small = [c for c in CASES if len(c.data) < 1_000_000]  # the 10 MB ones are covered above
    bad = [(m, c) for c in small for m in TASKS]
    jobs: list[tuple[str, bytes, str]] = [(m, c.data, c.content_type) for m, c in bad]
    # interleave: every good request lands among bad ones in the server's batches
    step = max(1, len(jobs) // len(goods))
    for k, g in enumerate(goods):
        jobs.insert(k * (step + 1), g)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda j: send(*j), jobs))
    good_idx = [jobs.index(g) for g in goods]
    for g_i, alone in zip(good_idx, solo, strict=True):
        assert results[g_i].ok and _same(results[g_i].body, alone.body), (jobs[g_i][0], results[g_i])
    wrong = []
    for i, (model, case) in zip([i for i in range(len(jobs)) if i not in good_idx], bad, strict=True):
        status, kind = expected(case, TASKS[model][0])
        if via == "grpc" and case.name == "text_json_bad_topk":
            continue  # known gap: see test_json_options_over_grpc_are_honoured
        if (results[i].status, results[i].type) != (status or 200, kind):
            wrong.append(
                f"{case.name} -> {model}: got {results[i].status} {results[i].type}, want {status} {kind}"
            )
    assert not wrong, "\n".join(wrong)


def test_client_raises_the_typed_error_for_text_inputs(zoo: Zoo) -> None:
    c = zoo.client
    with pytest.raises(errors.InvalidJSON):
        c.predict("tiny_bert", {"sentence": "no text"})
    with pytest.raises(errors.PayloadTooLarge):
        c.predict("tiny_bert", "x" * 70_000, grpc=True)
    with pytest.raises(errors.UnsupportedMediaType):
        c.predict("tiny_show_attend_tell", "not an image")
    with pytest.raises(errors.InvalidImage):
        c.predict("tiny_show_attend_tell", b"GIF89a broken", grpc=True)
    assert c.predict("tiny_bert", {"text": "fine"})["predictions"]


# ---- once-known gaps, fixed: JSON options over gRPC, unknown model over gRPC ------------------------
def test_json_options_over_grpc_are_honoured(zoo: Zoo) -> None:
    body = {"text": "hello there", "topk": 2}
    assert len(zoo.client.predict("tiny_bert", body, grpc=True)["predictions"]) == 2


def test_grpc_unknown_model_raises_model_not_found(zoo: Zoo) -> None:
    with pytest.raises(errors.ModelNotFound):
        zoo.client.predict("no_such_model", b"\x89PNG", grpc=True)


def test_json_over_grpc_is_parsed_like_rest(zoo: Zoo) -> None:
    c = zoo.client
    assert c.predict("tiny_bert", {"text": "hello"}, grpc=True) == c.predict("tiny_bert", {"text": "hello"})
    o = zoo.rest("tiny_bert", b'{"text": "ok"}', JSON + "; charset=utf-8")
    assert o.ok, o
