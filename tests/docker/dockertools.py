"""Helpers of the docker-marked tests (tests/docker): running tools, skip-or-fail, the stack's
loopback ports."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BUILD_TIMEOUT = float(os.environ.get("ZOOSERVE_DOCKER_BUILD_TIMEOUT", "2400"))


def missing(reason: str) -> None:
    """A missing prerequisite: skip on a developer's machine, fail under CI (.ci/run installs it)."""
    if CI:
        pytest.fail(f"{reason} (CI=true: .ci/run installs it, so this is a failure, not a skip)")
    pytest.skip(reason)


def run(
    args: list[str], timeout: float = 120, check: bool = True, env: dict | None = None, **kw
) -> subprocess.CompletedProcess:
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env, **kw)
    if check and r.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        )
    return r
