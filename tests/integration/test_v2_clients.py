"""The ecosystem's clients, unmodified, against zooserve's v2 front-end: ``tritonclient`` (gRPC
and HTTP) and ``kserve``'s InferenceGRPCClient/InferenceRESTClient, for an image classifier,
BERT and captioning. They need protobuf 6 (zooserve has 7), so they run in a venv of their own
(requirements-v2clients.txt, ``.venv-v2clients``, built here when missing or stale, or named by
ZOOSERVE_V2CLIENTS_PYTHON) as ``tests/integration/v2clients/check_clients.py``, which reports
what each client saw as JSON."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from v2_helpers import BAD, BAD_TYPE, V2_MODELS, good_input, same_answer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements-v2clients.txt"
SCRIPT = Path(__file__).parent / "v2clients" / "check_clients.py"
MODELS = ["tiny_resnet", "tiny_bert", "tiny_show_attend_tell"]


def clients_venv(venv: Path = ROOT / ".venv-v2clients") -> Path:
    """The venv's python, (re)built when requirements-v2clients.txt changed (``make v2clients``)."""
    python, stamp = venv / "bin" / "python", venv / ".requirements-sha256"
    want = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return python
    base = getattr(sys, "_base_executable", sys.executable)
    for cmd in (
        [base, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(REQUIREMENTS)],
    ):
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            pytest.fail(f"could not build the v2-clients venv ({' '.join(cmd[:3])}): {done.stderr[-2000:]}")
    stamp.write_text(want)
    return python


@pytest.fixture(scope="module")
def seen(served, sample_jpegs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    python = os.environ.get("ZOOSERVE_V2CLIENTS_PYTHON") or str(clients_venv())
    files = tmp_path_factory.mktemp("v2clients")
    models = {}
    for name in MODELS:
        kind = V2_MODELS[name][0]
        (files / f"{name}.good").write_bytes(good_input(name, sample_jpegs))
        (files / f"{name}.bad").write_bytes(BAD[kind])
        models[name] = {"input": kind, "good": str(files / f"{name}.good"), "bad": str(files / f"{name}.bad")}
    p = served.cfg.ports
    job = json.dumps(
        {
            "http": f"127.0.0.1:{p.v2_http}",
            "grpc": f"127.0.0.1:{p.v2_grpc}",
            "token": served.token(),
            "models": models,
        }
    )
    out: dict[str, Any] = {}
    for family in ("triton", "kserve"):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # their protobuf, not ours
        done = subprocess.run(
            [python, str(SCRIPT), family], input=job, capture_output=True, text=True, timeout=600, env=env
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        out |= json.loads(done.stdout)
    return out


def _ok(result: dict[str, Any]) -> Any:
    assert result["ok"], result
    return result["value"]


def _prediction(outputs: dict[str, Any], i: int = 0) -> dict[str, Any]:
    return json.loads(outputs["predictions"][i])


@pytest.mark.parametrize("client", ["triton_grpc", "triton_http"])
def test_tritonclient_health_and_metadata(seen, client: str) -> None:
    s = seen[client]
    assert _ok(s["live"]) is True and _ok(s["ready"]) is True
    assert _ok(s["server_metadata"])["name"] == "zooserve"
    if client == "triton_grpc":
        assert "UNAUTHENTICATED" in s["live_bad_token"]["status"]
    else:  # tritonclient.http answers False for any non-200
        assert _ok(s["live_bad_token"]) is False
    assert not s["unknown_model"]["ok"] and "ModelNotFound" in s["unknown_model"]["message"]
    assert s["unknown_model"]["status"] in ("StatusCode.NOT_FOUND", "404")
    for name in MODELS:
        m = s["models"][name]
        assert _ok(m["ready"]) is True
        meta = _ok(m["metadata"])
        assert meta["name"] == name and meta["inputs"][0]["name"] == V2_MODELS[name][0]
        assert [int(d) for d in meta["inputs"][0]["shape"]] == [-1]


@pytest.mark.parametrize("client", ["triton_grpc", "triton_http"])
@pytest.mark.parametrize("model", MODELS)
def test_tritonclient_infer_equals_rest(served, seen, sample_jpegs, client: str, model: str) -> None:
    m = seen[client]["models"][model]
    rest = served.client.predict(model, good_input(model, sample_jpegs))
    one, batch = _ok(m["one"]), _ok(m["batch"])
    assert same_answer(_prediction(one), rest)
    assert len(batch["predictions"]) == 2 and same_answer(_prediction(batch, 1), rest)
    if V2_MODELS[model][1] == "caption":
        assert one["caption"] == [rest["caption"]] and abs(one["score"][0] - rest["score"]) < 2e-3
    else:
        assert one["indices"][0] == [p["index"] for p in rest["predictions"]]
        assert same_answer(one["probabilities"][0], [p["probability"] for p in rest["predictions"]])
        topk2 = _ok(m["topk2"])
        assert len(topk2["indices"][0]) == 2 and len(_prediction(topk2)["predictions"]) == 2


@pytest.mark.parametrize("client", ["triton_grpc", "triton_http"])
@pytest.mark.parametrize("model", MODELS)
def test_tritonclient_bad_input_fails_that_call_alone(seen, client: str, model: str) -> None:
    m = seen[client]["models"][model]
    assert not m["bad"]["ok"]
    assert m["bad"]["status"] in ("StatusCode.INVALID_ARGUMENT", "400"), m["bad"]
    assert BAD_TYPE[V2_MODELS[model][0]] in m["bad"]["message"]
    assert _ok(m["after_bad"])["predictions"]


@pytest.mark.parametrize("kind", ["grpc", "rest"])
@pytest.mark.parametrize("model", MODELS)
def test_kserve_client(served, seen, sample_jpegs, kind: str, model: str) -> None:
    s = seen["kserve"][kind]
    assert _ok(s["live"]) is True and _ok(s["ready"]) is True
    m = s["models"][model]
    assert _ok(m["ready"]) is True
    rest = served.client.predict(model, good_input(model, sample_jpegs))
    assert same_answer(_prediction(_ok(m["one"])), rest)
    bad = m["bad"]
    assert not bad["ok"] and (bad["code"] == "StatusCode.INVALID_ARGUMENT" or bad["http"] == 400), bad
    assert BAD_TYPE[V2_MODELS[model][0]] in bad["message"]
    assert _ok(m["after_bad"])["predictions"]
