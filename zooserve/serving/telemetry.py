"""The gateway's own metrics and traces: one place that sees every call whole.

Metrics (its metrics port, Prometheus text or OpenMetrics by the scraper's Accept header): calls
by protocol, model and status; call latency and, from the handler's timing header, the time each
call spent queued and in each handler stage, with the request id attached as an exemplar;
requests in flight, the admission limit, and refusals by reason.

Traces (OpenTelemetry, off unless an OTLP endpoint is configured): one span per call with a child
span per stage (queue, decode, preprocess, inference, postprocess), exported over OTLP/gRPC.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

from zooserve.serving.calls import Call

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STAGES = ("decode", "preprocess", "inference", "postprocess")
log = logging.getLogger(__name__)


class Telemetry:
    def __init__(self, otlp_endpoint: str | None = None) -> None:
        self.registry = CollectorRegistry()  # never the handler's multiprocess directory
        r = self.registry
        self.calls = Counter(
            "zooserve_gateway_calls",
            "Calls answered, by protocol, model and status",
            ["protocol", "model", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "zooserve_gateway_call_seconds",
            "Call time in the gateway, TorchServe included",
            ["protocol", "model"],
            buckets=BUCKETS,
            registry=r,
        )
        self.stages = Histogram(
            "zooserve_gateway_stage_seconds",
            "Per call: time queued before its batch, and its batch's handler stages",
            ["model", "stage"],
            buckets=BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("zooserve_gateway_in_flight", "Calls in flight", ["model"], registry=r)
        self.limit = Gauge(
            "zooserve_gateway_admission_limit", "Calls a model may hold in flight", ["model"], registry=r
        )
        self.refused = Counter(
            "zooserve_gateway_refused",
            "Calls refused before TorchServe: overloaded, unloading, late",
            ["model", "reason"],
            registry=r,
        )
        self.tracer = _tracer(otlp_endpoint)
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def finished(self, protocol: str, call: Call, code: str, seconds: float) -> None:
        exemplar = {"request_id": call.request_id}
        self._child(self.calls, protocol, call.model, code).inc()
        self._child(self.latency, protocol, call.model).observe(seconds, exemplar)
        start = call.timing.get("start")
        if start is not None:
            self._child(self.stages, call.model, "queue").observe(max(0.0, start - call.arrived), exemplar)
            for stage in STAGES:
                if stage in call.timing:
                    self._child(self.stages, call.model, stage).observe(call.timing[stage], exemplar)
        if self.tracer is not None:
            _span(self.tracer, protocol, call, code, seconds)

    def gauges(self, model: str, in_flight: int, limit: int) -> None:
        self._child(self.in_flight, model).set(in_flight)
        self._child(self.limit, model).set(limit)

    def refusal(self, model: str, reason: str) -> None:
        self._child(self.refused, model, reason).inc()

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def _tracer(endpoint: str | None) -> Any:
    if not endpoint:
        return None
    # optional: OpenTelemetry is imported only when traces are exported
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as e:
        raise RuntimeError(f"--otlp-endpoint needs OpenTelemetry: pip install 'zooserve[otel]' ({e})") from e

    provider = TracerProvider(resource=Resource.create({"service.name": "zooserve"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    log.info("exporting traces over OTLP to %s", endpoint)
    return provider.get_tracer("zooserve.gateway")


def _span(tracer: Any, protocol: str, call: Call, code: str, seconds: float) -> None:
    """The call's span, and one child per stage placed by the handler's batch start time."""
    ns = 1_000_000_000
    start = int(call.arrived * ns)
    attrs = {
        "zooserve.request_id": call.request_id,
        "zooserve.model": call.model,
        "rpc.system": protocol,
        "zooserve.status": code,
    }
    root = tracer.start_span(f"predict {call.model}", start_time=start, attributes=attrs)
    try:
        ctx = _context_with(root)
        batch_start = call.timing.get("start")
        if batch_start is not None:
            at = int(batch_start * ns)
            tracer.start_span("queue", context=ctx, start_time=start).end(end_time=max(start, at))
            for stage in STAGES:
                if stage in call.timing:
                    end = at + int(call.timing[stage] * ns)
                    tracer.start_span(stage, context=ctx, start_time=at).end(end_time=end)
                    at = end
    finally:
        root.end(end_time=start + int(seconds * ns))


def _context_with(span: Any) -> Any:
    from opentelemetry import trace  # optional, as in _tracer

    return trace.set_span_in_context(span)
