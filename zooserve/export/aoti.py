"""AOTInductor: ``torch.export`` with dynamic dimensions, then ``aoti_compile_and_package``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch._inductor.config as inductor_config

from zooserve.specs import ExportTarget, Precision


def dynamic_shapes(target: ExportTarget) -> tuple[dict[int, Any], ...]:
    """Our (name, min, max) per dimension -> torch.export Dims; same name = same Dim."""
    dims: dict[str, Any] = {}
    out = []
    for spec in target.dynamic:
        entry = {}
        for axis, (name, lo, hi) in spec.items():
            if name not in dims:
                dims[name] = torch.export.Dim(name, min=lo, max=hi)
            entry[axis] = dims[name]
        out.append(entry)
    return tuple(out)


def export_program(target: ExportTarget) -> torch.export.ExportedProgram:
    with torch.no_grad():
        return torch.export.export(
            target.module.eval(), target.example_inputs, dynamic_shapes=dynamic_shapes(target), strict=False
        )


def compile_aoti(target: ExportTarget, path: Path, precision: Precision = Precision.FP32) -> Path:
    """Compile to a ``.pt2`` package with Inductor freezing.

    Freezing only folds weights and picks fused oneDNN kernels when autograd is off. fp32 builds
    compile that way. Reduced-precision builds do not yet: with it, LeNet-5's bf16/int8 artifacts
    miscompiled (8 % digits accuracy; the accuracy gate refused them), see docs/precision.md.
    """
    program = export_program(target)
    grad = torch.no_grad() if precision == Precision.FP32 else contextlib.nullcontext()
    with grad, inductor_config.patch({"freezing": True}):
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    return path


def load_aoti(path: Path, device: torch.device) -> Callable[..., Any]:
    """The compiled package as a callable. AOTInductor kernels assume the strides they were
    compiled with: a non-contiguous view gives silently wrong numbers (seen with centre-crop
    views), so inputs are made contiguous (a no-op for the batches the pipelines build)."""
    compiled = torch._inductor.aoti_load_package(str(path))

    def call(*inputs: torch.Tensor) -> Any:
        return compiled(*(x.contiguous() for x in inputs))

    return call
