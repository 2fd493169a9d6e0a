"""The docker-marked tests report what they measured (image builds, start-up) at the end of the run."""

from __future__ import annotations

import pytest

TIMINGS = pytest.StashKey[dict]()


@pytest.fixture(scope="session")
def timings(pytestconfig: pytest.Config) -> dict[str, str]:
    return pytestconfig.stash.setdefault(TIMINGS, {})


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    measured = config.stash.get(TIMINGS, {})
    if measured:
        terminalreporter.section("docker compose stack: measured")
        for what, value in measured.items():
            terminalreporter.write_line(f"{what}: {value}")
