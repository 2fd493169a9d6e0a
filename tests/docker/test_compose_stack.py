"""`docker compose up` for real: build the images, run the stack, predict, scrape, load, tear down.

The engine and the images come from tests/docker/conftest.py (skip without the tools, fail under
CI; the engine started there is stopped at the end of the session). Every container, network and
volume of the test's compose project is removed even when a test fails.

The stack uses free loopback ports and a project name of its own, so it can run beside a
developer's `docker compose up` or another TorchServe on the default ports.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests

from tests.docker.dockertools import BUILD_TIMEOUT, ROOT, run
from zooserve.serving.processes import free_ports

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "zooserve.json"
HEALTHY_TIMEOUT = 300.0
KEYS = "/home/model-server/keys/inference_key.json"

pytestmark = [pytest.mark.docker, pytest.mark.timeout(BUILD_TIMEOUT + 1200)]


# ---- the stack ----------------------------------------------------------------------------------
PORTS = (
    "HTTP",
    "MANAGEMENT",
    "METRICS",
    "EXPORTER",
    "GRPC",
    "GRPC_MANAGEMENT",
    "V2_HTTP",
    "V2_GRPC",
    "GATEWAY_METRICS",
    "PROMETHEUS",
    "GRAFANA",
)


@dataclass
class Stack:
    project: str
    env: dict[str, str]
    ports: dict[str, int]

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        return run(["docker-compose", "-p", self.project, *args], timeout=timeout, check=check, env=self.env)

    def container(self, service: str) -> str:
        return self.compose("ps", "-q", service).stdout.strip()

    def health(self, service: str) -> str:
        cid = self.container(service)
        if not cid:
            return "absent"
        return run(["docker", "inspect", "-f", "{{.State.Health.Status}}", cid], check=False).stdout.strip()

    def token(self) -> str:
        """The inference token, as the serving container publishes it for Locust."""
        return json.loads(self.compose("exec", "-T", "torchserve", "cat", KEYS).stdout)["inference"]["key"]

    def prom(self, query: str) -> list[dict]:
        r = requests.get(
            f"http://127.0.0.1:{self.ports['PROMETHEUS']}/api/v1/query", params={"query": query}, timeout=10
        )
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (query, body)
        return body["data"]["result"]


def _leftovers(project: str) -> list[str]:
    label = f"label=com.docker.compose.project={project}"
    found = []
    for kind in ("container", "network", "volume"):
        args = ["docker", kind, "ls", "-q", "--filter", label] + (["-a"] if kind == "container" else [])
        found += [f"{kind} {x}" for x in run(args, check=False).stdout.split()]
    return found


@pytest.fixture(scope="module")
def stack(images, timings) -> Iterator[Stack]:
    project = f"zooserve-test-{os.getpid()}"
    ports = dict(zip(PORTS, free_ports(len(PORTS)), strict=True))
    env = {**os.environ, **{f"ZOOSERVE_{k}_PORT": str(v) for k, v in ports.items()}}
    env.update(
        LOCUST_USERS="4", LOCUST_SPAWN_RATE="4", LOCUST_RUN_TIME="20s", ZOOSERVE_MODELS="lenet5 resnet18"
    )
    s = Stack(project, env, ports)
    try:
        t0 = time.monotonic()
        # Grafana is pulled from a registry; tests/docker/test_grafana_provisioning.py checks its files
        s.compose("up", "-d", "--no-build", "torchserve", "prometheus", timeout=300)
        deadline = time.monotonic() + HEALTHY_TIMEOUT
        while (state := (s.health("torchserve"), s.health("prometheus"))) != ("healthy", "healthy"):
            assert "unhealthy" not in state, (
                f"unhealthy: {state}\n{s.compose('logs', '--tail=80', check=False).stdout}"
            )
            if time.monotonic() > deadline:
                logs = s.compose("logs", "--tail=80", check=False).stdout
                pytest.fail(f"not healthy after {HEALTHY_TIMEOUT:.0f} s: {state}\n{logs}")
            time.sleep(1)
        timings["compose up -> torchserve + prometheus healthy"] = f"{time.monotonic() - t0:.0f} s"
        yield s
    finally:
        t0 = time.monotonic()
        down = s.compose(
            "--profile", "load", "down", "-v", "--remove-orphans", "--timeout", "20", timeout=300, check=False
        )
        timings["compose down"] = f"{time.monotonic() - t0:.0f} s"
        left = _leftovers(project)
        assert down.returncode == 0 and not left, f"compose down: {down.stderr[-2000:]}; left behind: {left}"


# ---- the tests ----------------------------------------------------------------------------------
def _digit_png() -> bytes:
    """A held-out-looking digit from scikit-learn's set, white on black 32x32 (as LeNet-5 was trained)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    buf = io.BytesIO()
    Image.fromarray((digits.images[-1] * 255 / 16).astype("uint8")).resize((32, 32)).save(buf, "PNG")
    return buf.getvalue()


def _photo_jpeg() -> bytes:
    from PIL import Image
    from sklearn.datasets import load_sample_image

    buf = io.BytesIO()
    Image.fromarray(load_sample_image("china.jpg")).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def test_rest_and_grpc_predictions_through_published_ports(stack: Stack):
    from zooserve.client import Client

    client = Client(port=stack.ports["HTTP"], grpc_port=stack.ports["GRPC"], token=stack.token())
    try:
        rest = client.predict("lenet5", _digit_png())
        assert rest["model"] == "lenet5" and rest["weights"] == "trained-demo"
        assert len(rest["predictions"]) == 5 and rest["predictions"][0]["probability"] > 0.5
        grpc = client.predict("resnet18", _photo_jpeg(), grpc=True)
        assert grpc["model"] == "resnet18" and len(grpc["predictions"]) == 5
        assert grpc["predictions"] == sorted(grpc["predictions"], key=lambda p: -p["probability"])
        # no token, no answer: token authorization is on in the container too (TorchServe 0.12
        # answers a missing token with 400, InvalidKeyException; tests/integration/test_security.py)
        anonymous = requests.post(
            f"http://127.0.0.1:{stack.ports['HTTP']}/predictions/lenet5", data=_digit_png(), timeout=30
        )
        assert anonymous.status_code in (400, 401, 403) and "predictions" not in anonymous.text
    finally:
        client.close()


def test_open_inference_protocol_through_the_gateway(stack: Stack):
    """The v2 REST port answers model readiness with the token, and refuses it without."""
    base = f"http://127.0.0.1:{stack.ports['V2_HTTP']}/v2/models"
    auth = {"Authorization": f"Bearer {stack.token()}"}
    for model in ("lenet5", "resnet18"):
        r = requests.get(f"{base}/{model}/ready", headers=auth, timeout=10)
        assert r.status_code == 200 and r.json() == {"name": model, "ready": True}, r.text
    meta = requests.get(f"{base}/lenet5", headers=auth, timeout=10)
    assert meta.status_code == 200 and meta.json()["name"] == "lenet5", meta.text
    anonymous = requests.get(f"{base}/lenet5/ready", timeout=10)
    assert anonymous.status_code != 200 or anonymous.json().get("ready") is not True


def test_locust_sees_the_inference_key_only(stack: Stack):
    """The Locust container mounts the published inference-only key file, never the run volume
    with TorchServe's key_file.json (management and API keys)."""
    probe = (
        "import json, os; "
        f"keys = json.load(open('{KEYS}')); "
        "print(json.dumps({'keys': sorted(keys), "
        "'run': os.path.exists('/home/model-server/run/key_file.json'), "
        f"'writable': os.access('{KEYS}', os.W_OK)}}))"
    )
    r = stack.compose(
        "--profile", "load", "run", "--rm", "--no-deps", "-T", "locust", "python", "-c", probe, timeout=120
    )
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen == {"keys": ["inference"], "run": False, "writable": False}, seen


def test_prometheus_scrapes_all_three_ports_and_sees_the_requests(stack: Stack):
    deadline = time.monotonic() + 60
    while True:
        up = {r["metric"]["job"]: r["value"][1] for r in stack.prom("up")}
        served = stack.prom('sum by (model) (zooserve_requests_total{model=~"lenet5|resnet18"})')
        ts = stack.prom("sum(ts_inference_requests_total)")
        gateway = stack.prom('sum by (model) (zooserve_gateway_calls_total{model=~"lenet5|resnet18"})')
        counted = {r["metric"].get("model"): float(r["value"][1]) for r in served}
        through_gateway = {r["metric"].get("model"): float(r["value"][1]) for r in gateway}
        if (
            up == {"torchserve": "1", "zooserve-handlers": "1", "zooserve-gateway": "1"}
            and counted.get("lenet5", 0) >= 1
            and counted.get("resnet18", 0) >= 1
            and through_gateway.get("lenet5", 0) >= 1
            and through_gateway.get("resnet18", 0) >= 1
            and ts
            and float(ts[0]["value"][1]) >= 2
        ):
            break
        assert time.monotonic() < deadline, (
            f"Prometheus does not see the requests: up={up} handlers={counted} "
            f"gateway={through_gateway} ts={ts}"
        )
        time.sleep(2)


def test_locust_headless_run_has_no_failures(stack: Stack, timings):
    t0 = time.monotonic()
    r = stack.compose("--profile", "load", "run", "--rm", "-T", "locust", timeout=300, check=False)
    out = r.stdout + r.stderr
    rows = re.findall(r"^\s*Aggregated\s+(\d+)\s+(\d+)\(", out, flags=re.M)
    assert rows, f"no Locust summary (exit {r.returncode}):\n{out[-4000:]}"
    requests_, failures = map(int, rows[-1])
    timings["locust run (4 users, 20 s)"] = (
        f"{requests_} requests, {failures} failures, {time.monotonic() - t0:.0f} s"
    )
    assert r.returncode == 0 and failures == 0 and requests_ > 0, out[-4000:]


def test_dashboard_queries_run_on_the_live_prometheus(stack: Stack):
    """Every Grafana panel query evaluates on the stack's Prometheus, and the traffic panels have
    data (after the Locust run above: rates need two scrapes with traffic in their window)."""
    dash = json.loads(DASHBOARD.read_text())
    panels = [p for top in dash["panels"] for p in (top, *top.get("panels", []))]
    exprs = [t["expr"] for p in panels for t in p.get("targets", []) if t.get("expr")]
    assert exprs
    empty = []
    for expr in exprs:
        q = expr.replace("$__rate_interval", "1m").replace("$model", ".*").replace("$stage", ".*")
        if not stack.prom(q):  # prom() asserts that the query evaluates
            empty.append(expr)
    # request rates, stage latencies, batch sizes, TorchServe's counts and `up` must have data;
    # error panels (no errors here), host samples (once a minute) and GPU panels may be empty
    served = (
        "zooserve_requests_total",
        "zooserve_stage_seconds",
        "zooserve_batch_size",
        "ts_inference_requests",
        "up{",
    )
    traffic = [e for e in exprs if "outcome!=" not in e and any(m in e for m in served)]
    assert traffic and not set(traffic) & set(empty), (
        f"traffic panels without data: {set(traffic) & set(empty)}"
    )
