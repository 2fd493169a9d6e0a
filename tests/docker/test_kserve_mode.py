"""The KServe predictor's container as deploy/kubernetes runs it, without a cluster: the serving
image in `kserve` mode with deploy/kubernetes/storage/config/config.properties (token
authorization on), its archives as the model store. The Kubernetes readiness probe's command passes
once the models are ready, and TorchServe answers only callers with the pod's token.

Engine and images: tests/docker/conftest.py. The container is removed even when a test fails.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Iterator

import pytest
import requests
import yaml

from tests.docker.dockertools import BUILD_TIMEOUT, ROOT, run
from zooserve.serving.processes import free_ports

K8S = ROOT / "deploy" / "kubernetes"
READY_TIMEOUT = 300.0

pytestmark = [pytest.mark.docker, pytest.mark.timeout(BUILD_TIMEOUT + 900)]


def _probe_command() -> list[str]:
    runtime = yaml.safe_load((K8S / "servingruntime.yaml").read_text())
    return runtime["spec"]["containers"][0]["readinessProbe"]["exec"]["command"]


@pytest.fixture(scope="module")
def predictor(images, timings) -> Iterator[tuple[str, int]]:
    name = f"zooserve-test-{os.getpid()}-kserve"
    (port,) = free_ports(1)
    runtime = yaml.safe_load((K8S / "servingruntime.yaml").read_text())["spec"]["containers"][0]
    env = [f"{e['name']}={e['value']}" for e in runtime.get("env", [])]
    args = [
        "docker",
        "run",
        "-d",
        "--name",
        name,
        "--label",
        f"com.docker.compose.project=zooserve-test-{os.getpid()}",  # found by .ci/run's cleanup
        "-p",
        f"127.0.0.1:{port}:8080",
        "-v",
        f"{K8S / 'storage' / 'config'}:/etc/zooserve-kserve:ro",
        "-e",
        "ZOOSERVE_KSERVE_CONFIG=/etc/zooserve-kserve/config.properties",
        "-e",
        "ZOOSERVE_KSERVE_MODEL_STORE=/home/model-server/model-store",  # the image's built-in archives
        *(x for e in env for x in ("-e", e)),
        "--user",
        str(runtime["securityContext"]["runAsUser"]),
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "zooserve:cpu",
        *runtime["args"],
    ]
    t0 = time.monotonic()
    run(args, timeout=120)
    try:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            probe = run(["docker", "exec", name, *_probe_command()], timeout=60, check=False)
            if probe.returncode == 0:
                break
            state = run(["docker", "inspect", "-f", "{{.State.Status}}", name], check=False).stdout.strip()
            if state != "running" or time.monotonic() > deadline:
                logs = run(["docker", "logs", "--tail", "80", name], check=False)
                pytest.fail(
                    f"readiness probe never passed ({state}): {probe.stderr}\n{logs.stdout}{logs.stderr}"
                )
            time.sleep(2)
        timings["kserve mode: docker run -> readiness probe passes"] = f"{time.monotonic() - t0:.0f} s"
        yield name, port
    finally:
        run(["docker", "rm", "-f", "-v", name], timeout=120, check=False)
        left = run(["docker", "ps", "-aq", "--filter", f"name={name}"], check=False).stdout.split()
        assert not left, f"container {name} left behind"


def _digit_png() -> bytes:
    from PIL import Image
    from sklearn.datasets import load_digits

    buf = io.BytesIO()
    Image.fromarray((load_digits().images[-1] * 255 / 16).astype("uint8")).resize((32, 32)).save(buf, "PNG")
    return buf.getvalue()


def test_predictor_serves_only_callers_with_the_pods_token(predictor):
    name, port = predictor
    keys = json.loads(run(["docker", "exec", name, "cat", "/home/model-server/run/key_file.json"]).stdout)
    assert set(keys) == {"inference", "management", "API"}
    url = f"http://127.0.0.1:{port}/predictions/lenet5"
    anonymous = requests.post(url, data=_digit_png(), timeout=60)
    assert anonymous.status_code in (400, 401, 403) and "predictions" not in anonymous.text
    r = requests.post(
        url, data=_digit_png(), headers={"Authorization": f"Bearer {keys['inference']['key']}"}, timeout=60
    )
    assert r.status_code == 200, r.text
    assert r.json()["model"] == "lenet5" and r.json()["predictions"][0]["probability"] > 0.5
    # the tokens stay in the container's private run directory
    mode = run(["docker", "exec", name, "sh", "-c", "stat -c %a /home/model-server/run"]).stdout.strip()
    assert mode == "700"


def test_readiness_probe_fails_without_a_ready_model(predictor):
    """The probe asks for the snapshot's models: a config naming one TorchServe did not load fails it."""
    name, _ = predictor
    script = (
        'sed \'s/"lenet5":{/"nosuchmodel":{"1.0":{"marName":"x.mar"}},"lenet5":{/\' '
        "/etc/zooserve-kserve/config.properties > /tmp/other.properties"
        " && ZOOSERVE_KSERVE_CONFIG=/tmp/other.properties zooserve-entrypoint healthcheck torchserve"
    )
    r = run(["docker", "exec", name, "sh", "-c", script], timeout=60, check=False)
    assert r.returncode == 1 and "nosuchmodel" in r.stderr, r.stdout + r.stderr
