"""A model as the handler sees it: an unpacked archive (or build directory) loaded once per worker."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

META_FILE = "zooserve.json"
ARTIFACT_SUFFIX = {"aoti": ".pt2", "torchscript": ".pt", "tensorrt": ".ep"}


@dataclass
class Bundle:
    root: Path
    meta: dict[str, Any]  # zooserve.json written by the build
    config: dict[str, Any] = field(default_factory=dict)  # the `zooserve:` section of model-config.yaml
    modules: dict[str, Callable[..., Any]] = field(default_factory=dict)
    device: torch.device = torch.device("cpu")

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    def option(self, key: str, default: Any = None) -> Any:
        """Serving option: model-config.yaml wins over what the build recorded."""
        return self.config.get(key, self.meta.get("serving", {}).get(key, default))


def load_artifact(path: Path, fmt: str, device: torch.device) -> Callable[..., Any]:
    if fmt == "aoti":
        return _contiguous_inputs(torch._inductor.aoti_load_package(str(path)))
    if fmt == "torchscript":
        return torch.jit.load(str(path), map_location=device).eval()
    if fmt == "tensorrt":
        import torch_tensorrt  # noqa: F401 - registers the TensorRT runtime ops

        return torch.export.load(str(path)).module()
    raise ValueError(f"unknown artifact format {fmt!r}")


def _contiguous_inputs(compiled: Callable[..., Any]) -> Callable[..., Any]:
    """AOTInductor kernels assume the strides they were compiled with: a non-contiguous view gives
    silently wrong numbers (seen with centre-crop views), so inputs are made contiguous (a no-op
    for the contiguous batches the pipelines build)."""

    def call(*inputs: torch.Tensor) -> Any:
        return compiled(*(x.contiguous() for x in inputs))

    return call


def load_bundle(
    root: Path, config: dict[str, Any] | None = None, device: str | torch.device | None = None
) -> Bundle:
    meta = json.loads((root / META_FILE).read_text("utf-8"))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    modules = {
        key: load_artifact(root / fname, meta["format"], dev) for key, fname in meta["artifacts"].items()
    }
    return Bundle(root=root, meta=meta, config=dict(config or {}), modules=modules, device=dev)


def make_pipeline(bundle: Bundle) -> Any:
    """The task's Pipeline for a loaded bundle (one place maps task -> pipeline class)."""
    task = bundle.meta["task"]
    if task == "classify":
        from zooserve.runtime.classify import ClassifyPipeline

        return ClassifyPipeline(bundle)
    if task == "classify-text":
        from zooserve.runtime.text import TextPipeline

        return TextPipeline(bundle)
    if task == "caption":
        from zooserve.runtime.caption import CaptionPipeline

        return CaptionPipeline(bundle)
    raise ValueError(f"unknown task {task!r}")
