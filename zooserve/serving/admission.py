"""Per-model admission: a bounded number of requests in flight, sized from measured throughput.

A model may hold ``limit`` requests in flight (queued in TorchServe or in a batch). The limit is
what the model can finish within its default deadline, ``rate x deadline`` less the newcomer's own
batch (``floor``), where ``rate`` is the model's capacity: the larger of the completions per second
over the last few seconds and what its handler's batch times say it can do (batch size / batch
seconds, averaged; an idle model keeps the limit of its capacity, not of its recent demand);
never below ``floor`` (a full batch per worker, so an idle model admits a burst) nor above ``cap``
(TorchServe's own job queue, whose bare 503 must never be reached). Beyond the limit a request is
refused at once with the time after which a retry is likely to be admitted (``Retry-After``). A
model being unloaded admits nothing and tells its drainer when its last request is done; a model
being registered admits nothing until a worker is ready (TorchServe would queue its requests behind
the worker's start).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field

from zooserve.errors import ModelLoading, ModelUnloading, Overloaded

RATE_WINDOW_S = 5.0  # completions counted over this window
HEADROOM = 0.8  # admit what finishes within 80 % of the deadline: the rest is margin for batching
SERVICE_WEIGHT = 0.2  # weight of the newest batch in the average seconds per item


@dataclass(frozen=True)
class Policy:
    deadline_s: float  # the model's default deadline
    floor: int  # in-flight requests always admitted
    cap: int  # never more than this (TorchServe's job queue)


@dataclass
class _Model:
    policy: Policy
    in_flight: int = 0
    done: deque[float] = field(default_factory=deque)  # completion times in the rate window
    closed: str = ""  # "unloading" or "loading": admits nothing
    per_item_s: float = 0.0  # average handler seconds per item of a batch (0: not measured yet)
    idle: asyncio.Event = field(default_factory=asyncio.Event)


class Admission:
    def __init__(self, default: Policy) -> None:
        self.default = default
        self._models: dict[str, _Model] = {}

    def configure(self, model: str, policy: Policy) -> None:
        self._model(model).policy = policy

    def policy(self, model: str) -> Policy:
        return self._model(model).policy

    def _model(self, model: str) -> _Model:
        m = self._models.get(model)
        if m is None:
            m = self._models[model] = _Model(self.default)
            m.idle.set()
        return m

    def rate(self, model: str, now: float | None = None) -> float:
        """Completions per second over the window (0 until the model has answered anything)."""
        m = self._model(model)
        now = time.monotonic() if now is None else now
        while m.done and m.done[0] < now - RATE_WINDOW_S:
            m.done.popleft()
        return len(m.done) / RATE_WINDOW_S

    def record_batch(self, model: str, items: float, seconds: float) -> None:
        """One answered call's batch: ``items`` requests took the handler ``seconds``."""
        if not (items >= 1 and 0 < seconds < math.inf):
            return
        m = self._model(model)
        per_item = seconds / items
        m.per_item_s = (
            per_item if m.per_item_s == 0 else m.per_item_s + SERVICE_WEIGHT * (per_item - m.per_item_s)
        )

    def capacity(self, model: str) -> float:
        """Calls per second the model can answer: its measured rate, or what its batch times say
        (one worker) when that is more; 0 while neither is known."""
        m = self._model(model)
        return max(self.rate(model), 1.0 / m.per_item_s if m.per_item_s > 0 else 0.0)

    def limit(self, model: str) -> int:
        m = self._model(model)
        p = m.policy
        # a newcomer is answered once those ahead and its own batch are done: (n + floor) / capacity
        want = self.capacity(model) * p.deadline_s * HEADROOM - p.floor
        return max(p.floor, min(p.cap, math.ceil(want) if math.isfinite(want) else p.cap))

    def in_flight(self, model: str) -> int:
        return self._model(model).in_flight

    def admit(self, model: str, time_left_s: float | None = None) -> None:
        """Take a slot or raise Overloaded/ModelUnloading; pair every success with ``release``.
        ``time_left_s``: the call's own deadline; a call that would wait longer than it has left
        for the calls ahead of it is refused now rather than answered late."""
        m = self._model(model)
        if m.closed == "unloading":
            raise ModelUnloading(f"model {model!r} is being unloaded; it takes no new requests")
        if m.closed == "loading":
            raise ModelLoading(f"model {model!r} is being registered; retry once its worker is ready", 2)
        limit = self.limit(model)
        if m.in_flight >= limit:
            raise Overloaded(
                f"model {model!r} has {m.in_flight} requests in flight, its limit "
                f"(what it finishes within {m.policy.deadline_s:g} s)",
                retry_after_s=self.retry_after(model),
            )
        rate = self.capacity(model)
        if (
            time_left_s is not None
            and rate > 0
            and m.in_flight >= m.policy.floor
            and (m.in_flight + m.policy.floor) / rate > time_left_s
        ):
            raise Overloaded(
                f"model {model!r} would answer this request after its deadline "
                f"({m.in_flight} ahead and its batch at {rate:.1f}/s, {time_left_s:.2f} s left)",
                retry_after_s=self.retry_after(model),
            )
        m.in_flight += 1
        m.idle.clear()

    def release(self, model: str, completed: bool = True) -> None:
        m = self._model(model)
        m.in_flight -= 1
        if completed:
            m.done.append(time.monotonic())
        if m.in_flight == 0:
            m.idle.set()

    def retry_after(self, model: str) -> int:
        """Whole seconds until the requests in flight are likely done (at least 1)."""
        rate = self.capacity(model)
        backlog = self._model(model).in_flight
        return max(1, math.ceil(backlog / rate)) if rate > 0 else 1

    async def drain(self, model: str, timeout: float) -> bool:
        """Admit nothing more for ``model`` and wait until its requests are answered.
        True when it went idle within ``timeout``; it stays closed until ``reopen``."""
        m = self._model(model)
        m.closed = "unloading"
        try:
            await asyncio.wait_for(m.idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def hold(self, model: str) -> None:
        """Admit nothing for ``model`` while it is being registered, until ``reopen``."""
        self._model(model).closed = "loading"

    def reopen(self, model: str) -> None:
        self._model(model).closed = ""
