"""The gateway in front of a real TorchServe: request ids, deadlines, honest readiness, errors as
gRPC statuses, store-only registration, metrics with exemplars, one JSON log line per request."""

from __future__ import annotations

import json
import time

import grpc
import pytest
import requests
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from zooserve import errors
from zooserve.serving import grpc_stubs

pytestmark = pytest.mark.integration
OCTET = {"Content-Type": "application/octet-stream"}


def _post(served, model: str, data: bytes, **headers: str) -> requests.Response:
    auth = {"Authorization": f"Bearer {served.token()}"}
    return requests.post(
        f"{served.cfg.url()}/predictions/{model}", data=data, headers=auth | OCTET | headers, timeout=60
    )


def test_request_id_is_echoed_or_made_and_logged(served, sample_jpegs) -> None:
    photo = sample_jpegs["china.jpg"]
    mine = _post(served, "tiny_resnet", photo, **{"X-Request-Id": "test-id-42"})
    made = _post(served, "tiny_resnet", photo)
    assert mine.status_code == made.status_code == 200
    assert mine.headers["X-Request-Id"] == "test-id-42"
    assert len(made.headers["X-Request-Id"]) >= 16 and made.headers["X-Request-Id"] != "test-id-42"
    log = served.cfg.log_dir / "requests.jsonl"
    for _ in range(50):  # the worker's log handler may flush a moment after the answer
        lines = [json.loads(x) for x in log.read_text().splitlines() if "test-id-42" in x]
        if lines:
            break
        time.sleep(0.1)
    (line,) = lines
    assert line["model"] == "tiny_resnet" and line["status"] == 200 and line["batch_size"] >= 1
    assert {"decode", "preprocess", "inference", "postprocess"} <= set(line["stages_ms"])


def test_request_id_over_grpc_metadata(served, sample_jpegs) -> None:
    pb2, pb2_grpc = grpc_stubs.load("inference_pb2"), grpc_stubs.load("inference_pb2_grpc")
    request = pb2.PredictionsRequest(model_name="tiny_resnet", input={"data": sample_jpegs["china.jpg"]})
    metadata = (("authorization", f"Bearer {served.token()}"), ("x-request-id", "grpc-id-7"))
    with grpc.insecure_channel(f"127.0.0.1:{served.cfg.ports.grpc_inference}") as channel:
        stub = pb2_grpc.InferenceAPIsServiceStub(channel)
        reply, call = stub.Predictions.with_call(request, metadata=metadata, timeout=60)
    assert dict(call.initial_metadata())["x-request-id"] == "grpc-id-7"
    assert json.loads(reply.prediction)["model"] == "tiny_resnet"


def test_a_late_request_is_504_and_a_bad_timeout_400(served, sample_jpegs) -> None:
    photo = sample_jpegs["china.jpg"]
    late = _post(served, "tiny_resnet", photo, **{"X-Request-Timeout-Ms": "0.001"})
    assert late.status_code == 504 and late.json()["type"] == "DeadlineExceeded"
    bad = _post(served, "tiny_resnet", photo, **{"X-Request-Timeout-Ms": "soon"})
    assert bad.status_code == 400 and bad.json()["type"] == "InvalidParameter"
    ok = _post(served, "tiny_resnet", photo, **{"X-Request-Timeout-Ms": "30000"})
    assert ok.status_code == 200


def test_grpc_deadline_is_the_request_deadline(served, sample_jpegs) -> None:
    with pytest.raises(errors.ZooError) as e:
        served.client.predict_grpc("tiny_resnet", sample_jpegs["china.jpg"], timeout=0.0005)
    assert "DEADLINE_EXCEEDED" in str(e.value) or isinstance(e.value, errors.DeadlineExceeded)


def test_a_request_that_fails_alone_is_its_own_grpc_status(served) -> None:
    pb2, pb2_grpc = grpc_stubs.load("inference_pb2"), grpc_stubs.load("inference_pb2_grpc")
    with grpc.insecure_channel(f"127.0.0.1:{served.cfg.ports.grpc_inference}") as channel:
        stub = pb2_grpc.InferenceAPIsServiceStub(channel)
        with pytest.raises(grpc.RpcError) as e:
            stub.Predictions(
                pb2.PredictionsRequest(model_name="tiny_resnet", input={"data": b"not an image"}),
                metadata=(("authorization", f"Bearer {served.token()}"),),
                timeout=60,
            )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert json.loads(e.value.details())["type"] == "InvalidImage"


def test_ping_is_healthy_only_with_warm_models(served) -> None:
    r = requests.get(
        f"{served.cfg.url()}/ping", headers={"Authorization": f"Bearer {served.token()}"}, timeout=30
    )
    assert r.status_code == 200 and r.json()["status"] == "Healthy"
    ready = requests.get(
        f"{served.cfg.url('v2_http')}/v2/models/tiny_resnet/ready",
        headers={"Authorization": f"Bearer {served.token()}"},
        timeout=30,
    )
    assert ready.status_code == 200


@pytest.mark.parametrize("url", ["/tmp", "/etc/../tmp/evil", "http://example.com/m.mar", "file:///tmp/x.mar"])
def test_registration_of_anything_but_a_store_archive_is_refused(served, url: str) -> None:
    auth = {"Authorization": f"Bearer {served.token('management')}"}
    r = requests.post(f"{served.cfg.url('management')}/models", params={"url": url}, headers=auth, timeout=30)
    assert r.status_code == 400 and r.json()["type"] == "RegistrationRefused"


def test_model_api_is_off_by_default(served) -> None:
    auth = {"Authorization": f"Bearer {served.token('management')}"}
    url = f"{served.cfg.url('management')}/models"
    r = requests.post(url, params={"url": "tiny_resnet.mar", "model_name": "again"}, headers=auth, timeout=30)
    assert r.status_code == 405, r.text  # a store archive, but the model API is off
    d = requests.delete(f"{url}/tiny_resnet", headers=auth, timeout=30)
    assert d.status_code == 405 and _post(served, "tiny_resnet", b"x").status_code == 400  # still served


def test_gateway_metrics_carry_request_ids_as_exemplars(served, sample_jpegs) -> None:
    assert _post(served, "tiny_resnet", sample_jpegs["china.jpg"], **{"X-Request-Id": "exemplar-1"}).ok
    text = requests.get(
        f"{served.cfg.url('gateway_metrics')}/metrics",
        headers={"Accept": "application/openmetrics-text; version=1.0.0"},
        timeout=10,
    ).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    calls = [
        s for s in families["zooserve_gateway_call_seconds"].samples if s.labels.get("model") == "tiny_resnet"
    ]
    stages = {
        s.labels["stage"] for s in families["zooserve_gateway_stage_seconds"].samples if "stage" in s.labels
    }
    assert any(s.exemplar is not None and s.exemplar.labels.get("request_id") for s in calls)
    assert {"queue", "decode", "preprocess", "inference", "postprocess"} <= stages
    inflight = [
        s for s in families["zooserve_gateway_in_flight"].samples if s.labels.get("model") == "tiny_resnet"
    ]
    assert inflight and inflight[0].value == 0


def test_a_call_is_one_trace_with_a_span_per_stage(served, otlp, sample_jpegs) -> None:
    assert _post(served, "tiny_resnet", sample_jpegs["china.jpg"], **{"X-Request-Id": "traced-1"}).ok

    def is_root(span) -> bool:
        return any(
            a.key == "zooserve.request_id" and a.value.string_value == "traced-1" for a in span.attributes
        )

    (root,) = otlp.wait_for(is_root)
    assert root.name == "predict tiny_resnet"
    children = otlp.wait_for(lambda s: s.parent_span_id == root.span_id and s.trace_id == root.trace_id)
    assert {s.name for s in children} == {"queue", "decode", "preprocess", "inference", "postprocess"}
    assert all(root.start_time_unix_nano <= s.start_time_unix_nano <= s.end_time_unix_nano for s in children)
    assert max(s.end_time_unix_nano for s in children) <= root.end_time_unix_nano
