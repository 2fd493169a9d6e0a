"""One inference call as the gateway sees it: its id, its deadline, and what the handler reported.

The deadline is fixed when the call arrives (the gRPC deadline, an ``X-Request-Timeout-Ms``
header, else the model's default), so time spent queued counts against it. It travels to the
handler as an absolute ``x-zooserve-deadline`` (milliseconds since the epoch; the gateway and the
workers share the machine's clock), and the id as ``x-request-id``.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from dataclasses import dataclass, field

from zooserve.errors import InvalidParameter

REQUEST_ID = "x-request-id"
TIMEOUT = "x-request-timeout-ms"
DEADLINE = "x-zooserve-deadline"
TIMING = "x-zooserve-timing"  # set by the handler: batch start and stage seconds
_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
MAX_TIMEOUT_S = 3600.0


@dataclass
class Call:
    model: str
    request_id: str
    arrived: float  # time.time()
    deadline: float  # time.time() after which the answer is useless
    timing: dict[str, float] = field(default_factory=dict)  # from the handler's timing header

    def remaining(self) -> float:
        return self.deadline - time.time()

    def forward_headers(self) -> dict[str, str]:
        return {REQUEST_ID: self.request_id, DEADLINE: str(int(self.deadline * 1e3))}

    def read_timing(self, header: str | None) -> None:
        """``start=...,batch=8,decode=0.001,...`` -> floats (anything malformed is ignored)."""
        for part in (header or "").split(","):
            key, _, value = part.partition("=")
            try:
                self.timing[key.strip()] = float(value)
            except ValueError:
                continue


def new_call(model: str, request_id: str | None, timeout_s: float | None, default_s: float) -> Call:
    """``timeout_s`` from the client (None: the model's default ``default_s``)."""
    now = time.time()
    rid = request_id if request_id and _ID.fullmatch(request_id) else uuid.uuid4().hex
    budget = default_s if timeout_s is None else timeout_s
    return Call(model, rid, now, now + budget)


def timeout_from_header(value: str | None) -> float | None:
    """Seconds from an ``X-Request-Timeout-Ms`` value; a malformed one is the client's 400."""
    if value is None:
        return None
    try:
        ms = float(value)
    except ValueError:
        raise InvalidParameter(f"X-Request-Timeout-Ms must be milliseconds, got {value[:40]!r}") from None
    if not math.isfinite(ms) or ms <= 0 or ms / 1e3 > MAX_TIMEOUT_S:
        limit = f"(0, {MAX_TIMEOUT_S * 1e3:.0f}]"
        raise InvalidParameter(f"X-Request-Timeout-Ms must be in {limit}, got {value[:40]!r}")
    return ms / 1e3
