"""Every inference call through the gateway, whatever its protocol: admitted or refused at once,
given its deadline and id, timed, and accounted for when it ends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from zooserve.errors import DeadlineExceeded, ModelLoading, ModelUnloading, ServiceError
from zooserve.serving.admission import Admission
from zooserve.serving.calls import Call, new_call
from zooserve.serving.catalog import Catalog, default_policy
from zooserve.serving.telemetry import Telemetry

# time past a call's deadline its admission slot may stay held, waiting for TorchServe's answer:
# the handler drops expired requests before their forward, so that answer is late by one batch
DEFAULT_GRACE_S = 5.0
T = TypeVar("T")


class Dispatcher:
    def __init__(self, catalog: Catalog, telemetry: Telemetry, grace_s: float = DEFAULT_GRACE_S) -> None:
        self.catalog = catalog
        self.telemetry = telemetry
        self.admission = Admission(default_policy())
        self.grace_s = grace_s

    @asynccontextmanager
    async def call(
        self, protocol: str, model: str, request_id: str | None, timeout_s: float | None
    ) -> AsyncIterator[Outcome]:
        """Admit one call (raises Overloaded, ModelUnloading, DeadlineExceeded, ModelNotFound);
        the caller forwards it within ``outcome.budget()`` and sets ``outcome.code``."""
        policy = self.catalog.get(model).policy
        self.admission.configure(model, policy)
        call = new_call(model, request_id, timeout_s, policy.deadline_s)
        outcome = Outcome(call, self.grace_s)
        t0 = time.perf_counter()
        try:
            if call.remaining() <= 0:
                raise DeadlineExceeded("the request's timeout had passed when it arrived")
            self.admission.admit(model, call.remaining())
        except ServiceError as e:
            reason = {DeadlineExceeded: "late", ModelUnloading: "unloading", ModelLoading: "loading"}.get(
                type(e), "full"
            )
            self.telemetry.refusal(model, reason)
            self.telemetry.finished(protocol, call, e.grpc_code if protocol == "grpc" else str(e.status), 0.0)
            raise
        try:
            self._gauges(model)
            yield outcome
        finally:
            self.telemetry.finished(protocol, call, outcome.code, time.perf_counter() - t0)
            if outcome.pending is None:
                self._release(model, outcome)
            else:  # answered 504 already; TorchServe still holds the call
                outcome.pending.add_done_callback(lambda _: self._release(model, outcome))

    def _release(self, model: str, outcome: Outcome) -> None:
        timing = outcome.call.timing
        if outcome.worked:
            self.admission.record_batch(model, timing.get("batch", 0.0), timing.get("handler", 0.0))
        self.admission.release(model, completed=outcome.worked)
        self._gauges(model)

    def _gauges(self, model: str) -> None:
        self.telemetry.gauges(model, self.admission.in_flight(model), self.admission.limit(model))


class Outcome:
    """One admitted call: ``forward`` sends it to TorchServe; the caller sets ``code`` (the status
    it answered with, for the metrics)."""

    def __init__(self, call: Call, grace_s: float) -> None:
        self.call = call
        self.code = "500"
        self.worked = False  # the model did this call's work: what the admission's throughput counts
        self.pending: asyncio.Future[Any] | None = None  # still with TorchServe after a 504
        self._grace_s = grace_s

    def budget(self) -> float:
        """Seconds TorchServe may take: the time left, plus the grace of one late batch."""
        return max(0.0, self.call.remaining()) + self._grace_s

    async def forward(self, send: Awaitable[T], worked: Callable[[T], bool]) -> T:
        """TorchServe's answer to ``send``, or DeadlineExceeded as soon as the deadline passes.

        A call answered 504 stays with TorchServe, and keeps its admission slot until TorchServe
        answers (within the grace): the admission never counts as gone a call that still holds a
        place in TorchServe's queue. ``worked(answer)``: whether the model did the work (a
        request the handler dropped as expired did not), which is what the throughput counts."""
        task = asyncio.ensure_future(asyncio.wait_for(send, self.budget()))

        def done(t: asyncio.Future[T]) -> None:
            self.worked = not t.cancelled() and t.exception() is None and worked(t.result())

        task.add_done_callback(done)
        try:
            return await asyncio.wait_for(asyncio.shield(task), max(0.0, self.call.remaining()))
        except TimeoutError:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise task.exception() from None  # TorchServe's own failure, at the deadline
            self.pending = task
            raise DeadlineExceeded("no answer before the request's deadline") from None
        except asyncio.CancelledError:  # the client went away: TorchServe still has the call
            self.pending = task
            raise


def handler_worked(body: bytes) -> bool:
    """Whether the handler's answer took model work: anything but its own 5xx JSON error (a
    request dropped past its deadline, a failure). Its errors are written compact: ``{"code":5..``."""
    return not body.startswith(b'{"code":5')
