"""The gateway's dispatcher: a call is answered at its deadline, while its admission slot stays
held until TorchServe lets go of it; only calls the model worked on count as throughput."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from zooserve.errors import DeadlineExceeded
from zooserve.serving.catalog import Catalog
from zooserve.serving.dispatch import Dispatcher, handler_worked
from zooserve.serving.telemetry import Telemetry


def _dispatcher(tmp_path: Path, grace_s: float = 5.0) -> Dispatcher:
    return Dispatcher(Catalog(tmp_path), Telemetry(), grace_s=grace_s)


async def _answer_after(seconds: float, body: bytes) -> bytes:
    await asyncio.sleep(seconds)
    return body


def test_a_timely_answer_is_returned_and_counted(tmp_path: Path) -> None:
    d = _dispatcher(tmp_path)

    async def scenario() -> bytes:
        async with d.call("rest", "m", None, 2.0) as outcome:
            assert d.admission.in_flight("m") == 1
            return await outcome.forward(_answer_after(0.01, b'{"predictions":[]}'), handler_worked)

    assert asyncio.run(scenario()) == b'{"predictions":[]}'
    assert d.admission.in_flight("m") == 0 and d.admission.rate("m") > 0


def test_a_late_call_is_answered_at_its_deadline_and_keeps_its_slot_until_torchserve_answers(
    tmp_path: Path,
) -> None:
    d = _dispatcher(tmp_path)
    seen: dict[str, float] = {}

    async def scenario() -> None:
        t0 = time.perf_counter()
        with pytest.raises(DeadlineExceeded):
            async with d.call("rest", "m", None, 0.2) as outcome:
                await outcome.forward(
                    _answer_after(3.0, b'{"code":504,"type":"DeadlineExceeded"}'), handler_worked
                )
        seen["answered_after"] = time.perf_counter() - t0
        seen["held_after_504"] = d.admission.in_flight("m")
        await asyncio.sleep(3.2)  # TorchServe answers at 3 s: far enough that a busy machine keeps the order
        seen["held_later"] = d.admission.in_flight("m")

    asyncio.run(scenario())
    assert seen["answered_after"] < 2.5, seen  # at the deadline (0.2 s), not when TorchServe answers
    assert seen["held_after_504"] == 1 and seen["held_later"] == 0
    assert d.admission.rate("m") == 0  # the handler dropped it: no work, no throughput


def test_the_slot_is_freed_after_the_grace_even_if_torchserve_never_answers(tmp_path: Path) -> None:
    d = _dispatcher(tmp_path, grace_s=0.2)

    async def scenario() -> int:
        with pytest.raises(DeadlineExceeded):
            async with d.call("grpc", "m", None, 0.1) as outcome:
                await outcome.forward(_answer_after(60, b"never"), handler_worked)
        await asyncio.sleep(0.5)
        return d.admission.in_flight("m")

    assert asyncio.run(scenario()) == 0


def test_torchserves_own_failure_is_raised_as_is(tmp_path: Path) -> None:
    d = _dispatcher(tmp_path)

    async def fails() -> bytes:
        raise ConnectionResetError("gone")

    async def scenario() -> None:
        async with d.call("rest", "m", None, 1.0) as outcome:
            await outcome.forward(fails(), handler_worked)

    with pytest.raises(ConnectionResetError):
        asyncio.run(scenario())
    assert d.admission.in_flight("m") == 0


@pytest.mark.parametrize(
    ("body", "worked"),
    [
        (b'{"predictions":[1]}', True),
        (b'{"code":400,"type":"InvalidImage"}', True),  # read and judged: the decode was work
        (b'{"code":504,"type":"DeadlineExceeded"}', False),
        (b'{"code":500,"type":"InferenceFailed"}', False),
    ],
)
def test_what_counts_as_model_work(body: bytes, worked: bool) -> None:
    assert handler_worked(body) is worked
