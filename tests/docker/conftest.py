"""The docker-marked tests' engine and images (shared by the modules of tests/docker), and the
report of what they measured (image builds, start-up) at the end of the run.

Needs root, Docker's engine (`dockerd`, Debian's docker.io), `docker-compose` (v1) and, where no
container registry answers, `debootstrap` (docker/make-base.sh makes the base image from Debian's
packages). Without those tools the tests skip with the reason; under CI (CI=true) they fail
instead, since .ci/run installs them. Where the tools are there but no engine can start (not
root, no cgroups, ...) they skip, under CI too. The engine is started here when none runs
(docker/dockerd.sh) and stopped again at the end of the session. Images stay (they are the build
cache for the next run; docker/images.sh tags the dependency stage so pruning keeps it).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.dockertools import BUILD_TIMEOUT, ROOT, missing, run

TIMINGS = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def timings(pytestconfig: pytest.Config) -> dict[str, str]:
    return pytestconfig.stash.setdefault(TIMINGS, {})


@pytest.fixture(scope="session")
def engine() -> Iterator[None]:
    for tool, package in (
        ("docker", "docker.io"),
        ("dockerd", "docker.io"),
        ("docker-compose", "docker-compose"),
    ):
        if shutil.which(tool) is None:
            missing(f"{tool} not installed (Debian package {package})")
    # the tools are there but this machine cannot run an engine: a skip, under CI too
    if os.geteuid() != 0 and run(["docker", "info"], check=False).returncode != 0:
        pytest.skip("no Docker engine answers and starting dockerd needs root")
    r = run([str(ROOT / "docker" / "dockerd.sh"), "start"], timeout=120, check=False)
    if r.returncode != 0:
        pytest.skip(f"dockerd cannot start here: {(r.stderr or r.stdout).strip()[-500:]}")
    started = r.stdout.strip() == "started"
    try:
        yield
    finally:
        if started:
            pid_file = Path(os.environ.get("ZOOSERVE_DOCKERD_PID", "/run/zooserve-dockerd.pid"))
            pid = pid_file.read_text().strip() if pid_file.exists() else ""
            run([str(ROOT / "docker" / "dockerd.sh"), "stop"], timeout=120)
            if pid:
                assert not Path(f"/proc/{pid}").exists(), f"dockerd {pid} still runs"
            assert run(
                ["pgrep", "-f", "containerd --config /var/run/docker/containerd"], check=False
            ).returncode, "dockerd's containerd still runs"


@pytest.fixture(scope="session")
def images(engine, timings) -> None:
    if (
        run(["docker", "image", "inspect", "python:3.11-slim-bookworm"], check=False).returncode != 0
        and shutil.which("debootstrap") is None
    ):
        # without a registry the base image is made from Debian's packages
        base = run(["docker", "pull", "-q", "python:3.11-slim-bookworm"], timeout=300, check=False)
        if base.returncode != 0:
            missing(
                "no container registry answers and debootstrap is not installed (Debian package debootstrap)"
            )
    t0 = time.monotonic()
    r = run(
        [str(ROOT / "docker" / "images.sh"), "cpu", "prometheus", "locust"],
        timeout=BUILD_TIMEOUT,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    timings["images (make images)"] = f"{time.monotonic() - t0:.0f} s"
    for line in r.stdout.splitlines():
        if " built in " in line:
            tag, rest = line.removeprefix("images: ").split(" built in ")
            timings[f"  {tag}"] = rest


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    measured = config.stash.get(TIMINGS, {})
    if measured:
        terminalreporter.section("docker compose stack: measured")
        for what, value in measured.items():
            terminalreporter.write_line(f"{what}: {value}")
