"""The real tools some tests need (Prometheus, docker-compose, ApacheBench): a skip on a
developer's machine without them, a failure in CI (``CI=true``), where .ci/run installs them."""

from __future__ import annotations

import os
import shutil

import pytest


def require(binary: str, package: str) -> str:
    """The tool's path; otherwise fail under CI=true, skip elsewhere."""
    path = shutil.which(binary) or (
        f"/usr/bin/{binary}" if os.access(f"/usr/bin/{binary}", os.X_OK) else None
    )
    if path:
        return path
    message = f"{binary} is not installed (Debian package {package})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}: .ci/run installs it, so a CI run must have it")
    pytest.skip(message)
