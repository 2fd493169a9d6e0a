"""The installed wheel stands alone: built from this checkout, installed into a fresh virtualenv
outside it, then `zooserve build lenet5`, `serve`, `predict` and `stop` run from an empty directory.

The fresh venv reuses the project venv's third-party packages through a .pth file (a second 5 GB
torch install would buy nothing), but imports zooserve only from the wheel: the test checks that.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from zooserve.bench.samples import digit_pngs
from zooserve.serving.server import free_ports

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def _run(cmd: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, (
        f"{cmd[:3]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(dist),
            str(ROOT),
        ],
        cwd=dist,
        timeout=300,
    )
    (wheel,) = dist.glob("zooserve-*.whl")
    env_dir = tmp_path_factory.mktemp("venv")
    venv.create(env_dir, with_pip=False)
    purelib = next(env_dir.glob("lib/python*/site-packages"))
    # third-party packages from the project venv, appended after the new venv's own site-packages
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (purelib / "project_deps.pth").write_text("\n".join(deps) + "\n")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(env_dir / "bin" / "python"),
            "install",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        cwd=dist,
        timeout=300,
    )
    return env_dir


def test_wheel_builds_serves_and_predicts_outside_the_checkout(wheel_venv: Path, tmp_path: Path) -> None:
    work = tmp_path / "empty"
    work.mkdir()
    python = str(wheel_venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = f"{wheel_venv / 'bin'}{os.pathsep}{env['PATH']}"
    where = _run([python, "-c", "import zooserve; print(zooserve.__file__)"], cwd=work, timeout=60, env=env)
    assert where.strip().startswith(str(wheel_venv)), f"zooserve imported from {where.strip()}, not the wheel"

    zooserve = [str(wheel_venv / "bin" / "zooserve")]
    _run([*zooserve, "build", "lenet5"], cwd=work, timeout=900, env=env)
    assert (work / "model_store" / "lenet5.mar").is_file()
    ports = free_ports(6)
    names = ("inference", "management", "metrics", "grpc-inference", "grpc-management", "exporter")
    port_flags = [f for name, port in zip(names, ports, strict=True) for f in (f"--{name}-port", str(port))]
    _run([*zooserve, "serve", "lenet5", *port_flags], cwd=work, timeout=600, env=env)
    try:
        png, label = digit_pngs(1)[0]
        (work / "digit.png").write_bytes(png)
        for extra in ([], ["--grpc", "--grpc-port", str(ports[3])]):
            out = _run(
                [*zooserve, "predict", "lenet5", "digit.png", "--port", str(ports[0]), *extra],
                cwd=work,
                timeout=120,
                env=env,
            )
            answer = json.loads(out.splitlines()[-1])
            assert answer["model"] == "lenet5" and answer["weights"] == "trained-demo"
            assert answer["predictions"][0]["label"] == str(label)
    finally:
        stopped = _run([*zooserve, "stop"], cwd=work, timeout=120, env=env)
    assert "stopped" in stopped
    assert "not running" in _run([*zooserve, "stop"], cwd=work, timeout=60, env=env)
