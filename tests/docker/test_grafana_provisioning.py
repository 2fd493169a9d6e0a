"""Grafana's provisioning files, checked by schema (no Grafana: none of the registries here has it).

The compose stack runs everything else for real (tests/docker/test_compose_stack.py); Grafana's
service stays for deployments that can pull its image, so what it would load is validated here:
the datasource and dashboard-provider files against the shapes Grafana's provisioning reads
(apiVersion 1), the dashboard JSON against the parts of Grafana's dashboard model it uses, and
the references between them and docker-compose.yml.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "zooserve.yml"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
COMPOSE = ROOT / "docker-compose.yml"

# Grafana's datasource provisioning file (docs: administration/provisioning#data-sources)
DATASOURCES_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "datasources"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": 1},
        "deleteDatasources": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "orgId": {"type": "integer"}},
            },
        },
        "prune": {"type": "boolean"},
        "datasources": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "type", "access", "url"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
                    "type": {"type": "string", "minLength": 1},
                    "access": {"enum": ["proxy", "direct"]},
                    "url": {"type": "string", "pattern": "^https?://"},
                    "orgId": {"type": "integer"},
                    "user": {"type": "string"},
                    "database": {"type": "string"},
                    "basicAuth": {"type": "boolean"},
                    "basicAuthUser": {"type": "string"},
                    "withCredentials": {"type": "boolean"},
                    "isDefault": {"type": "boolean"},
                    "version": {"type": "integer"},
                    "editable": {"type": "boolean"},
                    "jsonData": {
                        "type": "object",
                        "properties": {
                            "timeInterval": {"type": "string", "pattern": r"^\d+(ms|s|m|h)$"},
                            "httpMethod": {"enum": ["GET", "POST"]},
                        },
                    },
                    "secureJsonData": {"type": "object"},
                },
            },
        },
    },
}

# Grafana's dashboard provider file (docs: administration/provisioning#dashboards)
PROVIDERS_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "providers"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": 1},
        "providers": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["name", "type", "options"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string", "minLength": 1},
                    "orgId": {"type": "integer"},
                    "folder": {"type": "string"},
                    "folderUid": {"type": "string"},
                    "type": {"const": "file"},
                    "disableDeletion": {"type": "boolean"},
                    "allowUiUpdates": {"type": "boolean"},
                    "updateIntervalSeconds": {"type": "integer", "minimum": 1},
                    "options": {
                        "type": "object",
                        "required": ["path"],
                        "additionalProperties": False,
                        "properties": {
                            "path": {"type": "string", "pattern": "^/"},
                            "foldersFromFilesStructure": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}

_DATASOURCE_REF = {
    "type": "object",
    "required": ["type", "uid"],
    "properties": {"type": {"type": "string"}, "uid": {"type": "string"}},
}
_PANEL = {
    "type": "object",
    "required": ["id", "type", "title", "gridPos"],
    "properties": {
        "id": {"type": "integer", "minimum": 1},
        "type": {
            "enum": [
                "row",
                "timeseries",
                "stat",
                "gauge",
                "bargauge",
                "heatmap",
                "table",
                "text",
                "piechart",
                "state-timeline",
                "histogram",
            ]
        },
        "title": {"type": "string"},
        "gridPos": {
            "type": "object",
            "required": ["x", "y", "w", "h"],
            "properties": {
                "x": {"type": "integer", "minimum": 0, "maximum": 23},
                "y": {"type": "integer", "minimum": 0},
                "w": {"type": "integer", "minimum": 1, "maximum": 24},
                "h": {"type": "integer", "minimum": 1},
            },
        },
        "datasource": _DATASOURCE_REF,
        "targets": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["refId", "expr"],
                "properties": {
                    "refId": {"type": "string", "pattern": "^[A-Z]+$"},
                    "expr": {"type": "string", "minLength": 1},
                    "legendFormat": {"type": "string"},
                    "datasource": _DATASOURCE_REF,
                },
            },
        },
        "fieldConfig": {
            "type": "object",
            "properties": {"defaults": {"type": "object"}, "overrides": {"type": "array"}},
        },
        "options": {"type": "object"},
        "collapsed": {"type": "boolean"},
        "panels": {"type": "array"},
    },
}
# The dashboard model's parts this dashboard uses (Grafana's dashboard JSON model, schemaVersion >= 36)
DASHBOARD_SCHEMA = {
    "type": "object",
    "required": ["uid", "title", "schemaVersion", "panels", "time"],
    "properties": {
        "id": {"type": ["integer", "null"]},
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "title": {"type": "string", "minLength": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
        "timezone": {"type": "string"},
        "editable": {"type": "boolean"},
        "graphTooltip": {"enum": [0, 1, 2]},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "version": {"type": "integer"},
        "refresh": {"type": ["string", "boolean"]},
        "time": {
            "type": "object",
            "required": ["from", "to"],
            "properties": {"from": {"type": "string"}, "to": {"type": "string"}},
        },
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "type"],
                        "properties": {
                            "name": {"type": "string", "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$"},
                            "type": {
                                "enum": ["query", "custom", "interval", "datasource", "constant", "textbox"]
                            },
                            "datasource": _DATASOURCE_REF,
                        },
                    },
                }
            },
        },
        "annotations": {"type": "object"},
        "links": {"type": "array"},
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                **_PANEL,
                "properties": {**_PANEL["properties"], "panels": {"type": "array", "items": _PANEL}},
            },
        },
    },
}


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _panels(dash: dict) -> list[dict]:
    return [p for top in dash["panels"] for p in (top, *top.get("panels", []))]


def test_datasource_file_matches_grafanas_schema():
    jsonschema.validate(_yaml(DATASOURCES), DATASOURCES_SCHEMA)


def test_dashboard_provider_file_matches_grafanas_schema():
    jsonschema.validate(_yaml(PROVIDERS), PROVIDERS_SCHEMA)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_matches_the_dashboard_model(path: Path):
    dash = json.loads(path.read_text())
    jsonschema.validate(dash, DASHBOARD_SCHEMA)
    panels = _panels(dash)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in panels:
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, f"panel {p['title']!r} is wider than the grid"
        refs = [t["refId"] for t in p.get("targets", [])]
        assert len(refs) == len(set(refs)), f"panel {p['title']!r} repeats a refId"
        if p["type"] != "row":
            assert p.get("targets"), f"panel {p['title']!r} has no query"
    variables = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    for p in panels:
        for t in p.get("targets", []):
            for var in ("$model", "$stage"):
                if var in t["expr"]:
                    assert var[1:] in variables, (
                        f"{t['expr']} uses {var}, which the dashboard does not define"
                    )


@pytest.mark.parametrize(
    "which, mutate",
    [
        ("datasources", lambda d: d.update(apiVersion=2)),
        ("datasources", lambda d: d["datasources"][0].update(access="browser")),
        ("datasources", lambda d: d["datasources"][0].pop("url")),
        ("datasources", lambda d: d["datasources"][0].update(jsonData={"timeInterval": "5 seconds"})),
        ("providers", lambda d: d["providers"][0].update(type="folder")),
        ("providers", lambda d: d["providers"][0]["options"].pop("path")),
        ("providers", lambda d: d["providers"][0].update(updateIntervalSeconds="30s")),
    ],
)
def test_schemas_reject_mistakes(which, mutate):
    doc, schema = (
        (_yaml(DATASOURCES), DATASOURCES_SCHEMA)
        if which == "datasources"
        else (_yaml(PROVIDERS), PROVIDERS_SCHEMA)
    )
    mutate(doc)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)


def test_provisioning_references_agree_with_compose():
    """Panels use the provisioned datasource; the provider reads where compose mounts the dashboards;
    the datasource URL names the compose service and port Prometheus listens on."""
    ds = _yaml(DATASOURCES)["datasources"]
    uids = {d["uid"] for d in ds if "uid" in d}
    assert sum(d.get("isDefault", False) for d in ds) == 1
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        refs = [p["datasource"] for p in _panels(dash) if "datasource" in p]
        refs += [t["datasource"] for p in _panels(dash) for t in p.get("targets", []) if "datasource" in t]
        refs += [v["datasource"] for v in dash.get("templating", {}).get("list", []) if "datasource" in v]
        assert refs and {r["uid"] for r in refs} <= uids, f"{path.name}: unknown datasource uid"

    services = _yaml(COMPOSE)["services"]
    grafana = services["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"] if v.startswith("./")}
    assert mounts.get("/etc/grafana/provisioning") == "./deploy/grafana/provisioning"
    for provider in _yaml(PROVIDERS)["providers"]:
        assert mounts.get(provider["options"]["path"]) == "./deploy/grafana/dashboards"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "deploy" / "grafana" / "dashboards" / Path(home).name).is_file()

    host, port = ds[0]["url"].removeprefix("http://").split(":")
    assert host in services, f"datasource URL names {host}, not a compose service"
    assert any(str(p).endswith(f":{port}") for p in services[host]["ports"])
