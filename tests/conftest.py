"""Shared fixtures: one build cache for the session (an AOTInductor compile costs ~10-30 s here, so
each artifact is compiled once and reused by every test that needs it)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
import torch

from zooserve.bench.samples import photo_jpegs
from zooserve.export.build import BuildOptions, BuildResult, build
from zooserve.models.lenet import digits_split

# two cores: keep test processes from oversubscribing them
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; none is visible")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def build_cache(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., BuildResult]:
    """``build_cache(name, format="aoti", dense=False, **opts)`` -> BuildResult (archive included)."""
    root = tmp_path_factory.mktemp("builds")
    cache: dict[tuple, BuildResult] = {}

    def get(
        name: str,
        format: str = "aoti",
        dense: bool = False,
        archive_name: str | None = None,
        **serving: object,
    ):
        key = (name, format, dense, archive_name, tuple(sorted(serving.items())))
        if key not in cache:
            tag = "-".join(str(k) for k in key[:4] if k)
            opts = BuildOptions(format=format, dense=dense, archive_name=archive_name, serving=dict(serving))
            cache[key] = build(name, opts, out=root / "store" / tag, work=root / "work" / tag)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    _, _, x, y = digits_split()
    return x, y


@pytest.fixture(scope="session")
def sample_jpegs() -> dict[str, bytes]:
    return photo_jpegs()
