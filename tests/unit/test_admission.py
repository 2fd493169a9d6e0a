"""Per-model admission (``zooserve.serving.admission``): the limit is rate x deadline (with its
headroom) clamped to [floor, cap]; beyond it ``Overloaded`` with a Retry-After; ``drain`` closes the
model and waits until idle (``ModelUnloading`` meanwhile) until ``reopen``. asyncio.run per test
(no pytest-asyncio)."""

from __future__ import annotations

import asyncio
import math
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zooserve.errors import ModelLoading, ModelUnloading, Overloaded
from zooserve.serving import admission as adm
from zooserve.serving.admission import Admission, Policy

POLICY = Policy(deadline_s=10.0, floor=2, cap=50)


def completions(a: Admission, model: str, n: int) -> None:
    """n requests admitted and answered, one after the other (rate: n per window)."""
    for _ in range(n):
        a.admit(model)
        a.release(model)


def expected_limit(n_done: int, p: Policy) -> int:
    rate = n_done / adm.RATE_WINDOW_S
    return max(p.floor, min(p.cap, math.ceil(rate * p.deadline_s * adm.HEADROOM - p.floor)))


def test_an_idle_model_admits_its_floor_then_refuses() -> None:
    a = Admission(POLICY)
    assert a.rate("m") == 0 and a.limit("m") == POLICY.floor
    for _ in range(POLICY.floor):
        a.admit("m")
    assert a.in_flight("m") == POLICY.floor
    with pytest.raises(Overloaded) as exc:
        a.admit("m")
    assert exc.value.status == 503 and exc.value.grpc_code == "UNAVAILABLE"
    assert exc.value.retry_after_s == 1  # no measured rate yet: retry in a second
    assert a.in_flight("m") == POLICY.floor  # a refusal takes no slot


def test_a_release_frees_a_slot() -> None:
    a = Admission(POLICY)
    a.admit("m")
    a.admit("m")
    a.release("m", completed=False)
    a.admit("m")
    assert a.in_flight("m") == 2 and a.rate("m") == 0  # an unanswered call is no throughput


@pytest.mark.parametrize("n_done", [0, 1, 5, 20, 40, 200])
def test_the_limit_is_rate_times_deadline_clamped(n_done: int) -> None:
    a = Admission(POLICY)
    completions(a, "m", n_done)
    assert a.rate("m") == pytest.approx(n_done / adm.RATE_WINDOW_S)
    assert a.limit("m") == expected_limit(n_done, POLICY)
    assert POLICY.floor <= a.limit("m") <= POLICY.cap


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    n_done=st.integers(0, 120),
    deadline_s=st.floats(0.001, 120),
    floor=st.integers(0, 40),
    cap=st.integers(0, 300),
)
def test_the_limit_is_always_within_floor_and_cap(
    n_done: int, deadline_s: float, floor: int, cap: int
) -> None:
    p = Policy(deadline_s=deadline_s, floor=floor, cap=cap)
    a = Admission(Policy(deadline_s=1.0, floor=10**6, cap=10**6))  # record completions freely
    completions(a, "m", n_done)
    a.configure("m", p)
    assert a.policy("m") == p
    limit = a.limit("m")
    assert limit == expected_limit(n_done, p)
    assert limit >= floor and (limit <= cap or limit == floor)


def test_the_rate_forgets_completions_older_than_the_window() -> None:
    a = Admission(POLICY)
    completions(a, "m", 30)
    now = time.monotonic()
    assert a.rate("m", now) == pytest.approx(30 / adm.RATE_WINDOW_S)
    assert a.rate("m", now + adm.RATE_WINDOW_S + 1) == 0
    assert a.limit("m") == POLICY.floor  # the window was pruned for good


def test_retry_after_is_the_backlog_over_the_rate() -> None:
    a = Admission(Policy(deadline_s=10.0, floor=1, cap=1000))
    completions(a, "m", 10)  # 2 per second
    limit = a.limit("m")  # ceil(2 * 10 * 0.8 - 1) = 15
    for _ in range(limit):
        a.admit("m")
    with pytest.raises(Overloaded) as exc:
        a.admit("m")
    assert limit == expected_limit(10, a.policy("m")) and limit > 2
    assert exc.value.retry_after_s == math.ceil(limit / (10 / adm.RATE_WINDOW_S)) > 1
    assert a.retry_after("m") == exc.value.retry_after_s


def test_a_call_that_would_be_reached_after_its_deadline_is_refused_now() -> None:
    a = Admission(Policy(deadline_s=100.0, floor=2, cap=1000))
    completions(a, "m", 10)  # 2 per second, limit ceil(2 * 100 * 0.8 - 2) = 158
    for _ in range(4):
        a.admit("m", time_left_s=60)
    with pytest.raises(Overloaded, match="after its deadline"):
        a.admit("m", time_left_s=2.5)  # 4 ahead and its batch of 2 at 2/s: 3 s > 2.5 s
    a.admit("m", time_left_s=3.0)  # 3 s <= 3 s
    assert a.in_flight("m") == 5


def test_below_the_floor_a_short_deadline_is_still_admitted() -> None:
    a = Admission(Policy(deadline_s=100.0, floor=3, cap=1000))
    completions(a, "m", 5)  # 1 per second
    a.admit("m", time_left_s=0.001)
    a.admit("m", time_left_s=0.001)  # one ahead at 1/s would take 1 s: still admitted below the floor
    assert a.in_flight("m") == 2


def test_models_are_independent() -> None:
    a = Admission(POLICY)
    for _ in range(POLICY.floor):
        a.admit("a")
    a.admit("b")
    assert (a.in_flight("a"), a.in_flight("b")) == (POLICY.floor, 1)
    with pytest.raises(Overloaded):
        a.admit("a")


# ---- draining ------------------------------------------------------------------------------------
def test_drain_of_an_idle_model_returns_at_once_and_closes_it() -> None:
    a = Admission(POLICY)

    async def scenario() -> bool:
        return await a.drain("m", timeout=5)

    t0 = time.perf_counter()
    assert asyncio.run(scenario()) is True
    assert time.perf_counter() - t0 < 1
    with pytest.raises(ModelUnloading) as exc:
        a.admit("m")
    assert (
        isinstance(exc.value, Overloaded) and exc.value.status == 503 and exc.value.grpc_code == "UNAVAILABLE"
    )
    a.reopen("m")
    a.admit("m")
    assert a.in_flight("m") == 1


def test_a_model_being_registered_admits_nothing_until_reopened() -> None:
    a = Admission(POLICY)
    a.hold("m")
    with pytest.raises(ModelLoading) as exc:
        a.admit("m")
    assert exc.value.status == 503 and exc.value.retry_after_s >= 1 and a.in_flight("m") == 0
    a.admit("other")  # the others are open
    a.reopen("m")
    a.admit("m")
    assert a.in_flight("m") == 1


def test_drain_waits_for_the_calls_in_flight_and_refuses_new_ones_meanwhile() -> None:
    a = Admission(POLICY)
    events: list[str] = []

    async def scenario() -> bool:
        a.admit("m")
        a.admit("m")
        drain = asyncio.create_task(a.drain("m", timeout=5))
        await asyncio.sleep(0)  # the drain is waiting now
        assert not drain.done()
        with pytest.raises(ModelUnloading):
            a.admit("m")
        events.append("refused")
        a.release("m")
        await asyncio.sleep(0.01)
        assert not drain.done()  # one call still in flight
        events.append("one left")
        a.release("m")
        idle = await asyncio.wait_for(drain, 1)
        events.append("drained")
        return idle

    assert asyncio.run(scenario()) is True
    assert events == ["refused", "one left", "drained"]
    with pytest.raises(ModelUnloading):
        a.admit("m")  # stays closed after the drain until reopen
    a.reopen("m")
    a.admit("m")


def test_drain_times_out_with_false_and_stays_closed() -> None:
    a = Admission(POLICY)
    a.admit("m")

    async def scenario() -> bool:
        return await a.drain("m", timeout=0.05)

    t0 = time.perf_counter()
    assert asyncio.run(scenario()) is False
    assert 0.04 <= time.perf_counter() - t0 < 2
    with pytest.raises(ModelUnloading):
        a.admit("m")
    a.release("m")
    assert a.in_flight("m") == 0


def test_draining_one_model_leaves_the_others_open() -> None:
    a = Admission(POLICY)

    async def scenario() -> None:
        await a.drain("going", timeout=1)

    asyncio.run(scenario())
    a.admit("staying")
    with pytest.raises(ModelUnloading):
        a.admit("going")


def test_an_unbounded_deadline_policy_still_admits() -> None:
    from zooserve.serving.catalog import policy_from

    a = Admission(policy_from({"zooserve": {"deadline_ms": float("inf")}}))
    a.admit("m")
    assert a.in_flight("m") == 1


# ---- capacity from batch times -------------------------------------------------------------------
def test_an_idle_model_keeps_the_limit_its_batch_times_allow() -> None:
    """A burst after a quiet spell is admitted up to what the model can do, not what it was asked
    to do lately: the completion rate of an idle model is its demand."""
    p = Policy(deadline_s=2.0, floor=8, cap=100)
    a = Admission(p)
    a.record_batch("m", 8, 0.4)  # 20 per second
    assert a.rate("m") == 0 and a.capacity("m") == pytest.approx(20.0)
    limit = a.limit("m")
    assert limit == math.ceil(20.0 * p.deadline_s * adm.HEADROOM - p.floor) == 24
    for _ in range(limit):
        a.admit("m", time_left_s=p.deadline_s)
    with pytest.raises(Overloaded):
        a.admit("m", time_left_s=p.deadline_s)


def test_batch_times_are_averaged_and_garbage_is_ignored() -> None:
    a = Admission(POLICY)
    for items, seconds in [(0, 1.0), (8, 0.0), (8, math.nan), (8, math.inf), (math.nan, 1.0), (-3, 1.0)]:
        a.record_batch("m", items, seconds)
    assert a.capacity("m") == 0  # nothing measured
    a.record_batch("m", 8, 0.4)  # 0.05 s per item
    a.record_batch("m", 8, 0.8)  # 0.1: the average moves a fifth of the way
    assert a.capacity("m") == pytest.approx(1 / (0.05 + adm.SERVICE_WEIGHT * 0.05))


def test_the_measured_rate_wins_when_it_is_higher() -> None:
    a = Admission(POLICY)
    a.record_batch("m", 1, 10.0)  # 0.1 per second from one slow batch
    completions(a, "m", 20)  # 4 per second answered
    assert a.capacity("m") == pytest.approx(20 / adm.RATE_WINDOW_S)
