"""A model as the runtime sees it: a build directory (or unpacked archive) loaded once per worker."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from zooserve.export.formats import load_artifact
from zooserve.manifest import Manifest, ServingOptions


@dataclass
class Bundle:
    root: Path
    manifest: Manifest
    options: ServingOptions  # the manifest's, with model-config.yaml's `zooserve:` section applied
    modules: dict[str, Callable[..., Any]] = field(default_factory=dict)  # role -> loaded artifact
    device: torch.device = torch.device("cpu")

    @property
    def name(self) -> str:
        return self.manifest.name


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_bundle(
    root: Path, overrides: Mapping[str, Any] | None = None, device: str | torch.device | None = None
) -> Bundle:
    manifest = Manifest.read(root)
    dev = torch.device(device) if device is not None else default_device()
    modules = {role: load_artifact(root / f, manifest.format, dev) for role, f in manifest.artifacts.items()}
    options = manifest.serving.merged(overrides or {})
    return Bundle(root=root, manifest=manifest, options=options, modules=modules, device=dev)
