"""Deployment files validate offline: compose, Dockerfiles, Prometheus, Grafana, Kubernetes/KServe.

No Docker engine, cluster or Grafana is needed: ``docker-compose config`` (Debian's docker-compose),
``promtool`` (Debian's prometheus) and the real Prometheus binary are used where installed, and the
Kubernetes manifests are checked against JSON schemas vendored in ``tests/data/schemas``.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

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


needs_compose = pytest.mark.skipif(
    shutil.which("docker-compose") is None,
    reason="docker-compose not installed (Debian package docker-compose)",
)


@needs_compose
@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, COMPOSE_GPU)], ids=["cpu", "gpu-override"])
def test_compose_config_is_valid(files):
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
    assert published == {8080, 8081, 8082, 8083, 7070, 7071, 8000, 8001, 8002}
    # the token key file is shared read-only with locust, from the run volume TorchServe writes
    assert "run:/home/model-server/run:ro" in services["locust"]["volumes"]
    assert services["locust"]["depends_on"]["torchserve"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert "healthcheck" in services["torchserve"] and "healthcheck" in services["prometheus"]


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


# ---- Dockerfiles --------------------------------------------------------------------------------
@pytest.mark.parametrize("dockerfile", ["docker/Dockerfile", "docker/Dockerfile.gpu"])
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
    assert "HEALTHCHECK" in text and "healthcheck" in text
    assert "openjdk-17-jre-headless" in text
    assert re.search(r'ENTRYPOINT \["tini", "--", "zooserve-entrypoint"\]', text)


def test_requirements_pins_reach_the_images():
    req = (ROOT / "requirements.txt").read_text()
    assert re.search(r"^torch==2\.14\.", req, flags=re.M)
    gpu = (ROOT / "docker" / "Dockerfile.gpu").read_text()
    # torch-tensorrt 2.14.0's metadata requires tensorrt-cu13 >=11.1,<11.2
    assert "TORCH_TENSORRT_VERSION=2.14.0" in gpu and "TENSORRT_VERSION=11.1." in gpu


def test_entrypoint_is_valid_sh():
    script = ROOT / "docker" / "entrypoint.sh"
    r = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = script.read_text()
    assert "--foreground --bind 0.0.0.0" in text
    assert '"inference"]["key"]' in text  # /ping needs TorchServe's inference token


# ---- Prometheus ---------------------------------------------------------------------------------
def test_prometheus_scrapes_torchserve_and_exporter():
    cfg = yaml.safe_load(PROM_CONFIG.read_text())
    targets = {t for job in cfg["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
    assert targets == {"torchserve:8082", "torchserve:8083", "torchserve:8002"}


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)"
)
def test_promtool_check_config():
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


@pytest.mark.skipif(
    not Path("/usr/bin/prometheus").exists() and shutil.which("prometheus") is None,
    reason="prometheus not installed (Debian package prometheus)",
)
def test_dashboard_queries_parse_in_real_prometheus(tmp_path):
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
