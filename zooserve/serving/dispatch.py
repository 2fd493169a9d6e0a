"""Every inference call through the gateway, whatever its protocol: admitted or refused at once,
given its deadline and id, timed, and accounted for when it ends."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from zooserve.errors import DeadlineExceeded, ModelUnloading, ServiceError
from zooserve.serving.admission import Admission
from zooserve.serving.calls import Call, new_call
from zooserve.serving.catalog import Catalog, default_policy
from zooserve.serving.telemetry import Telemetry

# time past a call's deadline the gateway still waits for TorchServe: the handler drops expired
# requests before their forward, so an answer that is late at all is late by at most one batch
DEFAULT_GRACE_S = 5.0


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
            reason = (
                "late"
                if isinstance(e, DeadlineExceeded)
                else "unloading"
                if isinstance(e, ModelUnloading)
                else "full"
            )
            self.telemetry.refusal(model, reason)
            self.telemetry.finished(protocol, call, e.grpc_code if protocol == "grpc" else str(e.status), 0.0)
            raise
        try:
            self._gauges(model)
            yield outcome
        finally:
            self.admission.release(model, completed=outcome.answered)
            self._gauges(model)
            self.telemetry.finished(protocol, call, outcome.code, time.perf_counter() - t0)

    def _gauges(self, model: str) -> None:
        self.telemetry.gauges(model, self.admission.in_flight(model), self.admission.limit(model))


class Outcome:
    """What the caller reports back: the status it answered with, and whether TorchServe answered
    (what the admission's throughput counts)."""

    def __init__(self, call: Call, grace_s: float) -> None:
        self.call = call
        self.code = "500"
        self.answered = False
        self._grace_s = grace_s

    def budget(self) -> float:
        """Seconds to wait for TorchServe: the time left, plus the grace of one late batch."""
        return max(0.0, self.call.remaining()) + self._grace_s
