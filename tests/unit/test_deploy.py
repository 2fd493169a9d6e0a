"""Deployment files validate offline: compose, Dockerfiles, Prometheus, Grafana, Kubernetes/KServe.

No Docker engine, cluster or Grafana is needed: ``docker-compose config`` (Debian's docker-compose),
``promtool`` (Debian's prometheus) and the real Prometheus binary are used where installed, and the
Kubernetes manifests are checked against JSON schemas vendored in ``tests/data/schemas``.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from tools import require

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
PROM_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "zooserve.json"
K8S = ROOT / "deploy" / "kubernetes"
SCHEMAS = ROOT / "tests" / "data" / "schemas"

# Metric names the dashboard may use: zooserve's handler metrics (zooserve/runtime/metrics.py) ...
ZOOSERVE_METRICS = {
    "zooserve_stage_seconds_bucket",
    "zooserve_stage_seconds_count",
    "zooserve_stage_seconds_sum",
    "zooserve_batch_size_bucket",
    "zooserve_batch_size_count",
    "zooserve_batch_size_sum",
    "zooserve_requests_total",
}
# ... TorchServe 0.12's default metrics (ts/configs/metrics.yaml; read from the package when installed)
TORCHSERVE_METRICS = {
    "Requests2XX",
    "Requests4XX",
    "Requests5XX",
    "ts_inference_requests_total",
    "ts_inference_latency_microseconds",
    "ts_queue_latency_microseconds",
    "QueueTime",
    "WorkerThreadTime",
    "WorkerLoadTime",
    "CPUUtilization",
    "MemoryUsed",
    "MemoryAvailable",
    "MemoryUtilization",
    "DiskUsage",
    "DiskUtilization",
    "DiskAvailable",
    "GPUMemoryUtilization",
    "GPUMemoryUsed",
    "GPUUtilization",
    "HandlerTime",
    "PredictionTime",
}
PROMETHEUS_BUILTIN = {"up"}

PROMQL_WORDS = {
    # aggregations, functions and keywords that can appear as bare identifiers
    "sum",
    "min",
    "max",
    "avg",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "group",
    "count_values",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}


def _load_yaml_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# ---- docker-compose -----------------------------------------------------------------------------
def _compose(*files: Path) -> subprocess.CompletedProcess:
    args = ["docker-compose"]
    for f in files:
        args += ["-f", str(f)]
    return subprocess.run(
        [*args, "--profile", "load", "config", "-q"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def compose_tool() -> str:
    return require("docker-compose", "docker-compose")


@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, COMPOSE_GPU)], ids=["cpu", "gpu-override"])
def test_compose_config_is_valid(files, compose_tool):
    r = _compose(*files)
    assert r.returncode == 0, r.stderr


def _compose_services(files=(COMPOSE,)) -> dict:
    merged: dict = {}
    for f in files:
        for name, svc in yaml.safe_load(f.read_text())["services"].items():
            merged.setdefault(name, {}).update(svc)
    return merged


def test_compose_services_and_loopback_ports():
    services = _compose_services()
    assert {"torchserve", "prometheus", "grafana", "locust"} <= set(services)
    assert services["locust"].get("profiles") == ["load"]
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"
    published = {int(str(p).split(":")[2]) for p in services["torchserve"]["ports"]}
    # the gateway's REST/management/gRPC/v2/metrics ports, TorchServe's metrics, handler metrics
    assert published == {8080, 8081, 7070, 7071, 8000, 8001, 8002, 8082, 8083}
    assert services["locust"]["depends_on"]["torchserve"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert "healthcheck" in services["torchserve"] and "healthcheck" in services["prometheus"]


def _mounts(svc: dict) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) of a service's short-syntax volumes."""
    out = {}
    for vol in svc.get("volumes", []):
        source, target, *mode = str(vol).split(":")
        out[target] = (source, mode[0] if mode else "rw")
    return out


def test_locust_gets_the_inference_key_only():
    """key_file.json holds the inference, management and API keys: Locust mounts only the volume
    the serving entrypoint publishes the inference key to (docker/keys.py), read-only."""
    services = _compose_services()
    serving, locust = _mounts(services["torchserve"]), _mounts(services["locust"])
    run_volume = serving["/home/model-server/run"][0]
    key_volume = serving["/home/model-server/keys"][0]
    assert run_volume != key_volume
    assert all(source != run_volume for source, _ in locust.values()), "locust mounts the run volume"
    assert locust["/home/model-server/keys"] == (key_volume, "ro")
    key_file = services["locust"]["environment"]["ZOOSERVE_KEY_FILE"]
    assert key_file == "/home/model-server/keys/inference_key.json"
    for name in ("Dockerfile", "Dockerfile.gpu"):
        text = (ROOT / "docker" / name).read_text()
        assert f"ZOOSERVE_INFERENCE_KEY_FILE={key_file}" in text, name
    assert (
        "ZOOSERVE_KEY_FILE=/home/model-server/keys/inference_key.json"
        in (ROOT / "docker" / "Dockerfile.locust").read_text()
    )
    assert "keys publish" in (ROOT / "docker" / "entrypoint.sh").read_text()


def test_compose_healthcheck_is_model_readiness():
    services = _compose_services()
    assert services["torchserve"]["healthcheck"]["test"] == ["CMD", "zooserve-entrypoint", "healthcheck"]
    entrypoint = (ROOT / "docker" / "entrypoint.sh").read_text()
    assert "zooserve-ready" in entrypoint and "--models" in entrypoint
    ready = (ROOT / "docker" / "ready.py").read_text()
    assert "/v2/models/{model}/ready" in ready and "/ping" in ready


def test_gpu_override_reserves_an_nvidia_device():
    svc = yaml.safe_load(COMPOSE_GPU.read_text())["services"]["torchserve"]
    devices = svc["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert svc["build"]["dockerfile"] == "docker/Dockerfile.gpu"


@pytest.mark.parametrize("compose_file", [COMPOSE, COMPOSE_GPU], ids=lambda p: p.name)
def test_compose_references_exist(compose_file):
    services = yaml.safe_load(compose_file.read_text())["services"]
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            ctx = ROOT / build.get("context", ".")
            assert ctx.is_dir(), f"{name}: build context {ctx} missing"
            assert (ctx / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: Dockerfile missing"
        for vol in svc.get("volumes", []):
            source = str(vol).split(":")[0]
            if source.startswith((".", "/")):
                if name == "locust" and source == "./loadtests":
                    continue  # bind-mounted for the load profile; written by the load-test work
                assert (ROOT / source).exists(), f"{name}: mounted {source} missing"


def _docker_script(name: str):
    """A standard-library script of docker/ (run in the images), imported as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"docker_{name}", ROOT / "docker" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- Dockerfiles --------------------------------------------------------------------------------
DOCKERFILES = ["docker/Dockerfile", "docker/Dockerfile.gpu", "docker/Dockerfile.locust"]


def _stages(text: str) -> dict[str, str]:
    """A Dockerfile's stages by name (the last one also as "final")."""
    parts = re.split(r"^FROM\s+", text, flags=re.M)[1:]
    stages = {}
    for part in parts:
        header, _, body = part.partition("\n")
        m = re.search(r"\bAS\s+(\S+)", header, flags=re.I)
        stages[m.group(1) if m else header.split()[0]] = body
    stages["final"] = body
    return stages


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_sources_exist_and_image_is_non_root(dockerfile):
    text = (ROOT / dockerfile).read_text()
    for line in re.findall(r"^COPY\s+(.+)$", text, flags=re.M):
        if "--from=" in line:
            continue  # from an earlier build stage, not from the context
        parts = [p for p in line.split() if not p.startswith("--")]
        for src in parts[:-1]:
            path = ROOT / src
            assert path.exists(), f"{dockerfile}: COPY source {src} missing"
            if path.is_dir():  # git keeps no empty folders: a fresh clone would lack it
                assert any(p.is_file() for p in path.rglob("*")), f"{dockerfile}: COPY source {src} is empty"
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] == "model-server"


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_build_context_holds_what_the_dockerfiles_copy(dockerfile):
    """.dockerignore lets through every context path a Dockerfile copies (a pattern list of
    `**` then `!path` exceptions)."""
    allowed = [
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for line in re.findall(r"^COPY\s+(.+)$", (ROOT / dockerfile).read_text(), flags=re.M):
        if "--from=" in line:
            continue
        for src in [p for p in line.split() if not p.startswith("--")][:-1]:
            src = src.rstrip("/")
            assert any(src == a or src.startswith(a + "/") for a in allowed), f"{src} is ignored"


@pytest.mark.parametrize("dockerfile", ["docker/Dockerfile", "docker/Dockerfile.gpu"])
def test_serving_image_runs_the_gateway_from_the_wheel(dockerfile):
    text = (ROOT / dockerfile).read_text()
    final = _stages(text)["final"]
    assert "HEALTHCHECK" in final and '"healthcheck"' in final
    assert "openjdk-17-jre-headless" in final
    assert re.search(r'ENTRYPOINT \["tini", "--", "zooserve-entrypoint"\]', final)
    exposed = {int(p) for line in re.findall(r"^EXPOSE\s+(.+)$", final, flags=re.M) for p in line.split()}
    assert exposed == {8080, 8081, 7070, 7071, 8000, 8001, 8002, 8082, 8083}
    # no toolchain in the image: the compiler and protoc stay in the build stage
    assert not re.search(r"\b(g\+\+|gcc|build-essential|grpcio-tools)\b", final)
    assert "pip install --no-deps --no-compile /tmp/dist/zooserve-*.whl" in final
    # the wheel stands alone: no stub generation, no handler/config copies beside the package
    assert "zooserve.grpc_stubs" not in text and "wheel.sh" not in text
    assert not re.search(r"COPY\s+(handlers|build)/", text)
    assert "NVIDIA_VISIBLE_DEVICES" not in text.replace("no NVIDIA_VISIBLE_DEVICES", "")


def test_wheel_is_built_with_its_hook_tools():
    for dockerfile in DOCKERFILES:
        stages = _stages((ROOT / dockerfile).read_text())
        build = stages["build"]
        assert "pip wheel --no-deps --no-build-isolation ." in build
        assert "COPY proto/ proto/" in build and "hatch_build.py" in build
        # hatchling and the hook's tools, pinned: in the build stage, or listed by `reqs` for it
        tools = build if "hatchling==" in build else stages["reqs"]
        assert "hatchling" in tools and "grpcio-tools" in tools and "googleapis-common-protos" in tools


def test_image_dependencies_are_the_wheel_dependencies():
    """docker/wheel_requirements.py installs pyproject's dependencies (grpcio-tools is not one: the
    wheel carries its stubs), each pinned by requirements.txt, so images run the tested versions."""
    mod = _docker_script("wheel_requirements")
    reqs = mod.requirements(ROOT / "pyproject.toml")
    names = {mod._name(r) for r in reqs}
    assert {"torch", "torchserve", "aiohttp", "grpcio", "matplotlib"} <= names
    assert "grpcio-tools" not in names
    pinned = {
        mod._name(line.split("==")[0])
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert names <= pinned, f"not pinned in requirements.txt: {names - pinned}"
    with pytest.raises(SystemExit):
        mod.requirements(ROOT / "pyproject.toml", {"not-a-dependency"})
    # the deps layer's constraints: the pins of exactly these, so pinning a test tool does not
    # rebuild it
    constraints = mod.pins(ROOT / "requirements.txt", names)
    assert {mod._name(c) for c in constraints} == names
    assert all("==" in c and "#" not in c for c in constraints)
    assert not any(mod._name(c) in {"locust", "captum", "grpcio-tools"} for c in constraints)


def test_requirements_pins_reach_the_images():
    req = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^torch==2\.14\.", req, flags=re.M)
    gpu = (ROOT / "docker" / "Dockerfile.gpu").read_text()
    # torch-tensorrt 2.14.0's metadata requires tensorrt-cu13 >=11.1,<11.2
    assert "TORCH_TENSORRT_VERSION=2.14.0" in gpu and "TENSORRT_VERSION=11.1." in gpu


def test_entrypoint_is_valid_sh():
    script = ROOT / "docker" / "entrypoint.sh"
    r = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    text = script.read_text()
    assert "zooserve serve $MODELS --foreground --bind 0.0.0.0" in text


# ---- the containers' token and readiness helpers (docker/keys.py, docker/ready.py) ---------------
def _key_file(path: Path, inference: str, management: str = "m-key", api: str = "a-key") -> None:
    """TorchServe 0.12's key_file.json layout."""
    path.write_text(
        json.dumps(
            {
                "management": {"key": management, "expiration time": "2026-12-01T00:00:00Z"},
                "inference": {"key": inference, "expiration time": "2026-12-01T00:00:00Z"},
                "API": {"key": api},
            }
        )
    )


def test_published_key_file_holds_the_inference_key_only(tmp_path):
    keys = _docker_script("keys")
    src, out = tmp_path / "run" / "key_file.json", tmp_path / "keys" / "inference_key.json"
    src.parent.mkdir()
    assert keys.publish_once(src, out, None) is None and not out.exists()
    _key_file(src, "i-1")
    last = keys.publish_once(src, out, None)
    published = json.loads(out.read_text())
    assert published == {"inference": {"key": "i-1", "expiration time": "2026-12-01T00:00:00Z"}}
    assert "m-key" not in out.read_text() and "a-key" not in out.read_text()
    assert out.stat().st_mode & 0o077 == 0
    _key_file(src, "i-2")  # renewed: rewritten
    last = keys.publish_once(src, out, last)
    assert json.loads(out.read_text())["inference"]["key"] == "i-2"
    src.write_text('{"inference": {"ke')  # TorchServe half-way through writing: keep the last one
    last = keys.publish_once(src, out, last)
    assert json.loads(out.read_text())["inference"]["key"] == "i-2"
    src.unlink()  # server stopped: its token is void
    assert keys.publish_once(src, out, last) is None and not out.exists()
    assert [p.name for p in out.parent.iterdir()] == []  # no temporary files left


class _FakeServer:
    """A loopback HTTP server answering GET paths from a dict: path -> (status, JSON body); records
    the Authorization header of each request."""

    def __init__(self, routes: dict[str, tuple[int, object]]) -> None:
        import http.server
        import threading

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                seen.append((self.path, self.headers.get("Authorization")))
                status, body = routes.get(self.path, (404, {"code": 404}))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_server():
    servers = []

    def start(routes):
        servers.append(_FakeServer(routes))
        return servers[-1]

    yield start
    for srv in servers:
        srv.close()


def test_readiness_through_the_gateway_sends_the_token_and_checks_each_model(tmp_path, fake_server):
    ready = _docker_script("ready")
    key_file, published = tmp_path / "key_file.json", tmp_path / "inference_key.json"
    _key_file(key_file, "i-1")
    published.write_text(json.dumps({"inference": {"key": "i-1"}}))
    routes = {
        "/ping": (200, {"status": "Healthy"}),
        "/v2/models/lenet5/ready": (200, {"name": "lenet5", "ready": True}),
        "/v2/models/resnet18/ready": (503, {"name": "resnet18", "ready": False}),
    }
    srv = fake_server(routes)
    base = ["gateway", "--key-file", str(key_file), "--url", srv.url, "--v2-url", srv.url]
    assert ready.main([*base, "--models", "lenet5", "--published", str(published)]) == 0
    assert {auth for _, auth in srv.seen} == {"Bearer i-1"}  # the inference token, on /ping too
    assert ready.main([*base, "--models", "lenet5 resnet18"]) == 1  # one model still warming up
    routes["/ping"] = (500, {"status": "Partial Healthy"})
    assert ready.main([*base, "--models", "lenet5"]) == 1
    routes["/ping"] = (200, {"status": "Healthy"})
    published.write_text(json.dumps({"inference": {"key": "i-0"}}))  # not yet republished
    assert ready.main([*base, "--models", "lenet5", "--published", str(published)]) == 1
    srv.close()
    assert ready.main([*base, "--models", "lenet5"]) == 1  # nothing listening


def test_readiness_of_torchserve_alone_checks_the_snapshot_models(tmp_path, fake_server):
    ready = _docker_script("ready")
    key_file = tmp_path / "key_file.json"
    _key_file(key_file, "i-1", management="m-1")
    config = K8S / "storage" / "config" / "config.properties"
    assert ready.snapshot_models(config) == ["lenet5", "resnet18"]
    worker = {"id": "9000", "status": "READY"}
    routes = {
        "/ping": (200, {"status": "Healthy"}),
        "/models/lenet5": (200, [{"modelName": "lenet5", "workers": [worker]}]),
        "/models/resnet18": (
            200,
            [{"modelName": "resnet18", "workers": [{**worker, "status": "UNLOADING"}]}],
        ),
    }
    srv = fake_server(routes)
    args = ["torchserve", "--key-file", str(key_file), "--url", srv.url, "--management-url", srv.url]
    assert ready.main([*args, "--ts-config", str(config)]) == 1
    routes["/models/resnet18"] = (200, [{"modelName": "resnet18", "workers": [worker]}])
    assert ready.main([*args, "--ts-config", str(config)]) == 0
    tokens = dict(srv.seen)
    assert tokens["/ping"] == "Bearer i-1" and tokens["/models/lenet5"] == "Bearer m-1"


def test_token_renewal_uses_the_api_key(tmp_path, fake_server):
    keys = _docker_script("keys")
    key_file = tmp_path / "key_file.json"
    _key_file(key_file, "i-1", api="api-1")
    srv = fake_server({"/token?type=inference": (200, {}), "/token?type=management": (200, {})})
    assert keys.renew_once(key_file, srv.url) == []
    assert srv.seen == [
        ("/token?type=inference", "Bearer api-1"),
        ("/token?type=management", "Bearer api-1"),
    ]
    srv.close()
    assert len(keys.renew_once(key_file, srv.url, timeout=2)) == 2


# ---- Prometheus ---------------------------------------------------------------------------------
def test_prometheus_scrapes_torchserve_and_exporter():
    cfg = yaml.safe_load(PROM_CONFIG.read_text())
    targets = {t for job in cfg["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    # TorchServe's metrics, the handler exporter, the gateway (with its v2 front-end)
    assert targets == {"torchserve:8082", "torchserve:8083", "torchserve:8002"}
    jobs = {job["job_name"] for job in cfg["scrape_configs"]}
    assert jobs == {"torchserve", "zooserve-handlers", "zooserve-gateway"}


def test_promtool_check_config():
    require("promtool", "prometheus")
    r = subprocess.run(
        ["promtool", "check", "config", str(PROM_CONFIG)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stdout + r.stderr


# ---- Grafana ------------------------------------------------------------------------------------
def _panels(dashboard: dict):
    for p in dashboard["panels"]:
        yield p
        yield from p.get("panels", [])


def _exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in _panels(dash) for t in p.get("targets", [])]


def _grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "1m").replace("$model", ".*").replace("$stage", ".*")


def metric_names(expr: str) -> set[str]:
    """Metric names referenced by a PromQL expression (enough PromQL for our dashboard)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', _grafana_to_promql(expr))  # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # range selectors
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)  # label lists
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        word = m.group(0)
        following = s[m.end() :].lstrip()
        if following.startswith("(") or word.lower() in PROMQL_WORDS:
            continue  # a function or keyword
        if re.fullmatch(r"\d*e\d+", word, flags=re.I):
            continue
        names.add(word)
    return names


def _allowed_metrics() -> set[str]:
    allowed = ZOOSERVE_METRICS | TORCHSERVE_METRICS | PROMETHEUS_BUILTIN
    try:
        import ts

        ts_cfg = yaml.safe_load((Path(ts.__file__).parent / "configs" / "metrics.yaml").read_text())
        for section in ("ts_metrics", "model_metrics"):
            for entries in ts_cfg.get(section, {}).values():
                allowed |= {e["name"] for e in entries}
    except (ImportError, OSError):
        pass
    return allowed


def test_metric_name_parser():
    assert metric_names('histogram_quantile(0.95, sum by (le) (rate(a_bucket{x="y"}[5m])))') == {"a_bucket"}
    assert metric_names("sum(rate(a[1m])) / sum(rate(b[1m])) / 1e6") == {"a", "b"}


def test_dashboard_uses_only_known_metrics():
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"]
    exprs = _exprs()
    assert exprs, "dashboard has no queries"
    allowed = _allowed_metrics()
    for expr in exprs:
        unknown = metric_names(expr) - allowed
        assert not unknown, f"unknown metrics {unknown} in {expr}"
    used = set().union(*(metric_names(e) for e in exprs))
    # the panels the issue asks for
    assert "zooserve_stage_seconds_bucket" in used and "zooserve_batch_size_bucket" in used
    assert "zooserve_requests_total" in used and "ts_queue_latency_microseconds" in used
    assert {"MemoryUsed", "CPUUtilization"} <= used
    assert all(f"histogram_quantile({q}" in " ".join(exprs) for q in ("0.5", "0.95", "0.99"))


def test_dashboard_panels_use_the_provisioned_datasource():
    ds = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = ds["datasources"][0]["uid"]
    assert ds["datasources"][0]["url"] == "http://prometheus:9090"
    dash = json.loads(DASHBOARD.read_text())
    for p in _panels(dash):
        if p["type"] != "row":
            assert p["datasource"]["uid"] == uid, p["title"]
            assert p["gridPos"]["w"] <= 24
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "zooserve.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    grafana = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in grafana["volumes"]


def test_dashboard_queries_parse_in_real_prometheus(tmp_path):
    require("prometheus", "prometheus")
    """Every panel query (Grafana variables substituted) is accepted by a real Prometheus."""
    import socket

    from tests import promtest

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prom = promtest.start_prometheus({}, port, tmp_path)
    try:
        import requests

        for expr in _exprs():
            r = requests.get(
                f"http://127.0.0.1:{port}/api/v1/query", params={"query": _grafana_to_promql(expr)}, timeout=5
            )
            assert r.json()["status"] == "success", (expr, r.text)
    finally:
        promtest.stop_prometheus(prom)


# ---- Kubernetes / KServe ------------------------------------------------------------------------
SCHEMA_FOR = {
    ("serving.kserve.io/v1beta1", "InferenceService"): "inferenceservice-v1beta1.json",
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "servingruntime-v1alpha1.json",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "hpa-autoscaling-v2.json",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaim-v1.json",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicy-v1.json",
}


def _validator(schema_file: str):
    jsonschema = pytest.importorskip("jsonschema")
    from referencing import Registry, Resource

    resources = []
    for f in SCHEMAS.glob("*.json"):
        doc = json.loads(f.read_text())
        resources.append((doc["$id"], Resource.from_contents(doc)))
    registry = Registry().with_resources(resources)
    schema = json.loads((SCHEMAS / schema_file).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _manifests() -> list[tuple[Path, dict]]:
    return [
        (f, d)
        for f in sorted(K8S.glob("*.yaml"))
        if f.name != "kustomization.yaml"
        for d in _load_yaml_docs(f)
    ]


def test_every_manifest_validates_against_its_schema():
    manifests = _manifests()
    assert {d["kind"] for _, d in manifests} >= {
        "InferenceService",
        "ServingRuntime",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    }
    for path, doc in manifests:
        key = (doc.get("apiVersion"), doc.get("kind"))
        assert key in SCHEMA_FOR, f"{path.name}: no vendored schema for {key}"
        errors = sorted(_validator(SCHEMA_FOR[key]).iter_errors(doc), key=lambda e: list(e.path))
        assert not errors, f"{path.name}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda s: s["predictor"].update(scaleMetric="latency"), "scaleMetric"),
        (lambda s: s["predictor"]["model"].pop("modelFormat"), "modelFormat"),
        (lambda s: s["predictor"]["model"].update(storageURI="pvc://x"), "storageURI"),
        (lambda s: s["predictor"]["model"]["resources"]["limits"].update(cpu="four"), "cpu"),
        (lambda s: s["predictor"].update(minReplicas=-1), "minReplicas"),
    ],
)
def test_inferenceservice_schema_rejects_mistakes(mutate, where):
    doc = yaml.safe_load((K8S / "inferenceservice.yaml").read_text())
    mutate(doc["spec"])
    errors = list(_validator("inferenceservice-v1beta1.json").iter_errors(doc))
    assert errors, f"schema accepted a broken {where}"


def test_kserve_semantics():
    docs = [d for _, d in _manifests()]
    runtimes = {d["metadata"]["name"]: d for d in docs if d["kind"] == "ServingRuntime"}
    isvcs = [d for d in docs if d["kind"] == "InferenceService"]
    assert len(isvcs) >= 2
    for isvc in isvcs:
        pred = isvc["spec"]["predictor"]
        model = pred["model"]
        assert model["modelFormat"]["name"] == "pytorch"
        assert pred.get("minReplicas", 1) <= pred["maxReplicas"]
        runtime = runtimes[model["runtime"]]
        assert "pytorch" in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
        assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
        limits = model["resources"]["limits"]
        for key in model["resources"]["requests"]:
            assert key in limits
        ann = isvc["metadata"].get("annotations", {})
        if ann.get("serving.kserve.io/deploymentMode") != "RawDeployment":
            assert pred["scaleMetric"] == "concurrency" and pred["scaleTarget"] > 0
    gpu = [i for i in isvcs if "nvidia.com/gpu" in i["spec"]["predictor"]["model"]["resources"]["limits"]]
    assert gpu, "no GPU variant"
    hpas = [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
    external = {
        f"{i['metadata']['name']}-predictor"
        for i in isvcs
        if i["metadata"].get("annotations", {}).get("serving.kserve.io/autoscalerClass") == "external"
    }
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} == external


def test_kustomization_resources_exist():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for res in kust["resources"]:
        assert (K8S / res).is_file(), res


def test_kserve_torchserve_config_layout():
    props = {}
    for line in (K8S / "storage" / "config" / "config.properties").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            props[key.strip()] = value.strip()
    assert props["model_store"] == "/mnt/models/model-store"
    assert props["metrics_mode"] == "prometheus"
    assert props["inference_address"].endswith(":8080")
    snapshot = json.loads(props["model_snapshot"])
    assert snapshot["modelCount"] == len(snapshot["models"])
    for name, versions in snapshot["models"].items():
        for spec in versions.values():
            assert spec["marName"] == f"{name}.mar"
            assert spec["batchSize"] >= 1 and spec["minWorkers"] <= spec["maxWorkers"]
    # TorchServe's token authorization stays on in the cluster, its management API on loopback
    assert props.get("disable_token_authorization", "false") == "false"
    assert int(props["token_expiration_min"]) >= 60
    assert props["management_address"].startswith("http://127.0.0.1:")
    assert props["grpc_management_address"] == "127.0.0.1"
    assert props["enable_model_api"] == "false"


def _kinds(kind: str) -> list[dict]:
    return [d for _, d in _manifests() if d["kind"] == kind]


def test_networkpolicy_denies_by_default_and_admits_only_the_ingress():
    policies = _kinds("NetworkPolicy")
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert "networkpolicy.yaml" in kust["resources"]
    # a policy that selects every pod and allows nothing: the namespace's default is deny
    deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and "Ingress" in p["spec"]["policyTypes"]
        and not p["spec"].get("ingress")
    ]
    assert deny, "no default-deny ingress policy"
    allow = [p for p in policies if p not in deny]
    isvcs = {i["metadata"]["name"] for i in _kinds("InferenceService")}
    selected: set[str] = set()
    for policy in allow:
        sel = policy["spec"]["podSelector"]
        for expr in sel.get("matchExpressions", []):
            if expr["key"] == "serving.kserve.io/inferenceservice" and expr["operator"] == "In":
                selected |= set(expr["values"])
        if "serving.kserve.io/inferenceservice" in sel.get("matchLabels", {}):
            selected.add(sel["matchLabels"]["serving.kserve.io/inferenceservice"])
        assert sel, f"{policy['metadata']['name']} opens every pod of the namespace"
        for rule in policy["spec"]["ingress"]:
            # every rule names its sources and its ports: no rule admits anyone, or any port
            assert rule.get("from") and rule.get("ports"), f"{policy['metadata']['name']}: open rule {rule}"
            for peer in rule["from"]:
                assert "ipBlock" not in peer and "podSelector" not in peer
                assert peer["namespaceSelector"].get("matchLabels"), "a selector matching every namespace"
            ports = {p["port"] for p in rule["ports"]}
            assert not ports & {7070, 7071, 8081}, "gRPC and management are not for the ingress"
    assert selected == isvcs, "every InferenceService's predictor is covered"
    sources = {
        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]: {
            p["port"] for p in rule["ports"]
        }
        for policy in allow
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
    }
    assert 8080 in sources["istio-system"] and 8012 in sources["knative-serving"]
    assert {8082, 8083} <= sources["monitoring"] and 8080 not in sources["monitoring"]


def test_predictors_have_model_readiness_probes():
    """The runtime's container (every InferenceService uses it) is ready only when its models are:
    an exec probe through the entrypoint's healthcheck, in the mode of the container's args."""
    runtimes = _kinds("ServingRuntime")
    assert runtimes
    entrypoint = (ROOT / "docker" / "entrypoint.sh").read_text()
    for runtime in runtimes:
        for container in runtime["spec"]["containers"]:
            probe = container["readinessProbe"]
            assert probe["exec"]["command"] == ["zooserve-entrypoint", "healthcheck", "torchserve"]
            assert container["args"] == ["kserve"]
            assert probe["timeoutSeconds"] >= 5 and probe["failureThreshold"] >= 1
    assert "torchserve)" in entrypoint and "--ts-config" in entrypoint
    for isvc in _kinds("InferenceService"):
        model = isvc["spec"]["predictor"]["model"]
        assert model["runtime"] in {r["metadata"]["name"] for r in runtimes}
        assert "readinessProbe" not in model or "exec" in model["readinessProbe"]


def test_no_pod_or_image_asks_for_every_gpu():
    """NVIDIA_VISIBLE_DEVICES=all would hand a container every GPU of the node, past the device
    plugin's allocation: GPUs come from resource limits / device reservations only."""
    files = [*K8S.rglob("*.yaml"), COMPOSE, COMPOSE_GPU, *(ROOT / "docker").glob("Dockerfile*")]
    for f in files:
        code = "\n".join(line.split("#")[0] for line in f.read_text().splitlines())  # comments may say why
        assert not re.search(r"NVIDIA_VISIBLE_DEVICES\s*[=:]", code), f"{f.name} sets NVIDIA_VISIBLE_DEVICES"
    for _, doc in _manifests():
        for container in _containers(doc):
            names = {e["name"] for e in container.get("env", [])}
            assert "NVIDIA_VISIBLE_DEVICES" not in names
    gpu = [
        i
        for i in _kinds("InferenceService")
        if "nvidia.com/gpu" in i["spec"]["predictor"]["model"]["resources"]["limits"]
    ]
    assert gpu and all(
        i["spec"]["predictor"]["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1" for i in gpu
    )


def _containers(doc: dict) -> list[dict]:
    if doc["kind"] == "ServingRuntime":
        return doc["spec"]["containers"]
    if doc["kind"] == "InferenceService":
        return [doc["spec"]["predictor"]["model"]]
    return []


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda d: d["spec"].pop("podSelector"), "podSelector"),
        (lambda d: d["spec"].update(policyTypes=["Inbound"]), "policyTypes"),
        (lambda d: d["spec"]["ingress"][0]["ports"][0].update(port=70000), "port"),
        (
            lambda d: d["spec"]["ingress"][0]["from"][0].update(ipBlock={"cidr": "0.0.0.0/0"}),
            "ipBlock+selector",
        ),
        (lambda d: d["spec"]["podSelector"]["matchExpressions"][0].update(operator="Like"), "operator"),
        (lambda d: d["spec"]["podSelector"]["matchExpressions"][0].pop("values"), "values"),
    ],
)
def test_networkpolicy_schema_rejects_mistakes(mutate, where):
    doc = [d for d in _load_yaml_docs(K8S / "networkpolicy.yaml") if d["spec"].get("ingress")][0]
    mutate(doc)
    assert list(_validator("networkpolicy-v1.json").iter_errors(doc)), f"schema accepted a broken {where}"


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda p: p.update(httpGet={"port": 8080}), "two handlers"),
        (lambda p: p.pop("exec"), "no handler"),
        (lambda p: p.update(periodSeconds=0), "periodSeconds"),
        (lambda p: p["exec"].update(command=[]), "empty command"),
    ],
)
def test_probe_schema_rejects_mistakes(mutate, where):
    doc = yaml.safe_load((K8S / "servingruntime.yaml").read_text())
    mutate(doc["spec"]["containers"][0]["readinessProbe"])
    errors = list(_validator("servingruntime-v1alpha1.json").iter_errors(doc))
    assert errors, f"schema accepted a broken {where}"
