"""A 10 s headless Locust run (REST + gRPC users) against the test server, so the locustfiles can't rot."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_locust_smoke(served, tmp_path: Path) -> None:
    cfg = served.cfg
    env = os.environ | {
        "ZOOSERVE_URL": cfg.url(),
        "ZOOSERVE_GRPC_TARGET": f"{cfg.host}:{cfg.ports.grpc_inference}",
        "ZOOSERVE_KEY_FILE": str(cfg.key_file),
        "ZOOSERVE_MODELS": "lenet5,tiny_resnet",
        "ZOOSERVE_MAX_RUN_TIME": "30",
    }
    locust = Path(sys.executable).with_name("locust")
    cmd = [
        str(locust),
        "-f",
        str(ROOT / "loadtests" / "locustfile.py"),
        "--headless",
        "-u",
        "4",
        "-r",
        "4",
        "--run-time",
        "10s",
        "--stop-timeout",
        "5",
        "--csv",
        str(tmp_path / "smoke"),
        "--only-summary",
    ]
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    with open(tmp_path / "smoke_stats.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["Name"] != "Aggregated"]
    by_type: dict[str, int] = {}
    for r in rows:
        assert int(r["Failure Count"]) == 0, r
        by_type[r["Type"]] = by_type.get(r["Type"], 0) + int(r["Request Count"])
    assert by_type.get("POST", 0) > 0, by_type
    assert by_type.get("grpc", 0) > 0, by_type


def test_locust_refuses_remote_target(tmp_path: Path) -> None:
    env = os.environ | {"ZOOSERVE_URL": "http://192.0.2.10:8080", "ZOOSERVE_ALLOW_REMOTE": "0"}
    locust = Path(sys.executable).with_name("locust")
    cmd = [
        str(locust),
        "-f",
        str(ROOT / "loadtests" / "locustfile.py"),
        "--headless",
        "-u",
        "1",
        "--run-time",
        "1s",
    ]
    result = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "non-loopback" in result.stdout + result.stderr
