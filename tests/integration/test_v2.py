"""The standard v2 protocol front-end against a real TorchServe (the session's ``served`` server,
which ``server.start`` gives a v2 front-end): zooserve's own client and raw standard messages."""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import requests
from v2_helpers import BAD, V2_MODELS, good_input, same_answer

from zooserve import errors
from zooserve._proto import grpc_predict_v2_pb2 as v2pb
from zooserve.client import Client
from zooserve.serving import processes, server
from zooserve.serving.gateway import process as gateway
from zooserve.serving.v2.pbconv import answer_from_pb, call_to_pb
from zooserve.serving.v2.tensors import InferCall, Tensor

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def v2(served) -> Client:
    p = served.cfg.ports
    client = Client(key_file=served.cfg.key_file, protocol="v2", v2_port=p.v2_http, v2_grpc_port=p.v2_grpc)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stub(served):
    channel = grpc.insecure_channel(f"127.0.0.1:{served.cfg.ports.v2_grpc}")
    yield lambda method, resp: channel.unary_unary(
        f"/inference.GRPCInferenceService/{method}",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=getattr(v2pb, resp).FromString,
    )
    channel.close()


def _auth(served) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {served.token()}")]


def test_front_end_runs_next_to_torchserve(served) -> None:
    assert server.running_pid(served.cfg, "gateway") is not None


def test_health_and_server_metadata(served, stub) -> None:
    url, h = served.cfg.url("v2_http"), {"Authorization": f"Bearer {served.token()}"}
    assert requests.get(f"{url}/v2/health/live", headers=h, timeout=10).json() == {"live": True}
    assert requests.get(f"{url}/v2/health/ready", headers=h, timeout=10).status_code == 200
    assert requests.get(f"{url}/ping", headers=h, timeout=10).json() == {"status": "Healthy"}
    meta = requests.get(f"{url}/v2", headers=h, timeout=10).json()
    assert meta["name"] == "zooserve" and "binary_tensor_data" in meta["extensions"]
    assert stub("ServerLive", "ServerLiveResponse")(v2pb.ServerLiveRequest(), metadata=_auth(served)).live
    assert stub("ServerReady", "ServerReadyResponse")(v2pb.ServerReadyRequest(), metadata=_auth(served)).ready
    got = stub("ServerMetadata", "ServerMetadataResponse")(
        v2pb.ServerMetadataRequest(), metadata=_auth(served)
    )
    assert got.name == "zooserve"


def test_the_same_token_guards_every_endpoint(served, stub) -> None:
    url = served.cfg.url("v2_http")
    for path in ("/v2/health/live", "/v2", "/v2/models/lenet5"):
        r = requests.get(f"{url}{path}", headers={"Authorization": "Bearer wrong"}, timeout=10)
        assert r.status_code == 401 and r.json()["type"] == "Unauthorized", path
    with pytest.raises(grpc.RpcError) as e:
        stub("ServerLive", "ServerLiveResponse")(
            v2pb.ServerLiveRequest(), metadata=[("authorization", "Bearer x")]
        )
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "Unauthorized" in e.value.details()


@pytest.mark.parametrize("model", list(V2_MODELS))
def test_metadata_describes_each_task(v2, model: str) -> None:
    rest, over_grpc = v2.v2.metadata(model), v2.v2.metadata(model, grpc=True)
    name, task = V2_MODELS[model]
    assert rest["inputs"] == [{"name": name, "datatype": "BYTES", "shape": [-1]}]
    assert [o["name"] for o in rest["outputs"]] == (
        ["predictions", "caption", "score"]
        if task == "caption"
        else ["predictions", "probabilities", "indices"]
    )
    assert over_grpc["name"] == model and over_grpc["inputs"][0]["name"] == name
    assert rest["versions"] == ["1.0"] and rest["platform"].startswith("pytorch_")


@pytest.mark.parametrize("use_grpc", [False, True], ids=["rest", "grpc"])
@pytest.mark.parametrize("model", list(V2_MODELS))
def test_v2_answers_equal_rest(served, v2, sample_jpegs, model: str, use_grpc: bool) -> None:
    data = good_input(model, sample_jpegs)
    want = served.client.predict(
        model, data, headers={"X-TopK": "3"} if model != "tiny_show_attend_tell" else None
    )
    got = v2.predict(
        model, data, headers={"X-TopK": "3"} if model != "tiny_show_attend_tell" else None, grpc=use_grpc
    )
    assert same_answer(got, want), (got, want)


def test_batched_raw_call_is_answered_per_element(served, stub, sample_jpegs) -> None:
    images = [sample_jpegs["china.jpg"], sample_jpegs["flower.jpg"], sample_jpegs["china.jpg"]]
    call = InferCall("tiny_resnet", inputs=[Tensor("image", "BYTES", [3], images)], parameters={"topk": 4})
    infer = stub("ModelInfer", "ModelInferResponse")
    raw = answer_from_pb(infer(call_to_pb(call, raw=True), metadata=_auth(served)))
    typed = answer_from_pb(infer(call_to_pb(call, raw=False), metadata=_auth(served)))
    out = {t.name: t for t in raw.outputs}
    assert (
        out["predictions"].shape == [3]
        and out["probabilities"].shape == [3, 4]
        and out["indices"].shape == [3, 4]
    )
    bodies = [json.loads(b) for b in out["predictions"].data]
    assert same_answer(bodies, [json.loads(b) for b in typed.outputs[0].data])
    assert same_answer(bodies[0], served.client.predict("tiny_resnet", images[0], headers={"X-TopK": "4"}))
    assert out["indices"].data[:4] == [p["index"] for p in bodies[0]["predictions"]]
    assert same_answer(
        out["probabilities"].data[4:8], [p["probability"] for p in bodies[1]["predictions"]], 1e-5
    )


def test_a_bad_input_fails_its_call_alone(v2, sample_jpegs) -> None:
    good = sample_jpegs["china.jpg"]
    jobs = [(BAD["image"] if i % 4 == 0 else good, i % 2 == 0) for i in range(16)]

    def run(job: tuple[bytes, bool]) -> object:
        try:
            return v2.predict("tiny_resnet", job[0], grpc=job[1])
        except errors.ZooError as e:
            return e

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(run, jobs))
    for (data, use_grpc), result in zip(jobs, results, strict=True):
        if data is good:
            assert isinstance(result, dict) and len(result["predictions"]) == 5
        else:
            assert isinstance(result, errors.InvalidImage) and result.status == 400
            if use_grpc:
                assert result.grpc_code == "INVALID_ARGUMENT"


@pytest.mark.parametrize("use_grpc", [False, True], ids=["rest", "grpc"])
def test_unknown_model_wrong_input_and_bad_text(v2, use_grpc: bool) -> None:
    with pytest.raises(errors.ModelNotFound) as e:
        v2.predict("no_such_model", b"x", grpc=use_grpc)
    assert e.value.status == 404
    with pytest.raises(errors.InvalidText):
        v2.predict("tiny_bert", BAD["text"], grpc=use_grpc)
    v2.v2._inputs[("tiny_bert", "")] = "image"  # a client that names the input wrongly
    try:
        with pytest.raises(errors.InvalidTensor, match="unexpected inference input 'image'"):
            v2.predict("tiny_bert", "hello", grpc=use_grpc)
    finally:
        del v2.v2._inputs[("tiny_bert", "")]


def test_rest_binary_outputs(served, sample_jpegs) -> None:
    head = json.dumps(
        {
            "inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "data": ["good news"]}],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    r = requests.post(
        f"{served.cfg.url('v2_http')}/v2/models/tiny_bert/infer",
        data=head,
        headers={"Authorization": f"Bearer {served.token()}"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    n = int(r.headers["Inference-Header-Content-Length"])
    meta = json.loads(r.content[:n])["outputs"]
    assert [o["name"] for o in meta] == ["probabilities"] and meta[0]["datatype"] == "FP32"
    assert len(r.content) - n == meta[0]["parameters"]["binary_data_size"] == 4 * meta[0]["shape"][1]


def test_front_end_has_its_own_metrics(served, v2, sample_jpegs) -> None:
    v2.predict("lenet5", sample_jpegs["china.jpg"], grpc=True)
    with pytest.raises(errors.InvalidImage):
        v2.predict("lenet5", BAD["image"], grpc=True)
    text = requests.get(f"{served.cfg.url('gateway_metrics')}/metrics", timeout=10).text
    assert 'zooserve_v2_requests_total{code="OK",method="ModelInfer",protocol="grpc"}' in text
    assert 'zooserve_v2_requests_total{code="INVALID_ARGUMENT",method="ModelInfer",protocol="grpc"}' in text
    assert 'zooserve_v2_infer_elements_total{model="lenet5"}' in text
    assert "zooserve_v2_request_duration_seconds_bucket" in text


def _when_listening(url: str, proc: subprocess.Popen, timeout: float = 60) -> requests.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return requests.get(url, timeout=5)
        except requests.ConnectionError:
            assert proc.poll() is None, "the gateway exited"
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_readiness_follows_torchserve_and_stop_ends_the_gateway(tmp_path: Path) -> None:
    """Without TorchServe behind it the gateway is up but not ready (503); ``server.stop`` ends it
    through its pid file."""
    cfg = server.on_free_ports(
        server.ServerConfig(model_store=tmp_path, run_dir=tmp_path / "run", token_auth=False)
    )
    cfg.log_dir.mkdir(parents=True)
    upstream = gateway.Upstream(*processes.free_ports(4))  # nothing listens there
    config = gateway.write_config(cfg, upstream, {"max_request_size": str(1 << 20)})
    with open(cfg.log_dir / gateway.LOG, "ab") as log:
        proc = subprocess.Popen(
            gateway.command(config), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    processes.write_pid(cfg.run_dir / "gateway.pid", proc)
    try:
        with pytest.raises(errors.ServerError, match="not ready"):
            gateway.wait_ready(cfg, None, 5, proc)
        r = _when_listening(f"{cfg.url('v2_http')}/v2/health/ready", proc)  # a loaded machine: slow start
        assert r.status_code == 503 and r.json()["type"] == "Overloaded"
        assert server.stop(cfg)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert proc.poll() is not None
    finally:
        if proc.poll() is None:
            proc.kill()
