"""AOTInductor: ``torch.export`` with dynamic dimensions, then ``aoti_compile_and_package``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from zooserve.models.specs import ExportTarget


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


def compile_aoti(
    target: ExportTarget, path: Path, options: dict[str, Any] | None = None, grad_off: bool = False
) -> Path:
    """Compile to a ``.pt2`` package with Inductor freezing.

    Freezing only folds weights and picks fused oneDNN kernels when autograd is off (``grad_off``).
    fp32 builds use that. Reduced-precision builds do not yet: with it, LeNet-5's bf16/int8
    artifacts miscompiled (8 % digits accuracy; the accuracy gate refused them), see docs/precision.md.
    """
    import contextlib

    import torch._inductor.config as inductor_config

    program = export_program(target)
    grad = torch.no_grad() if grad_off else contextlib.nullcontext()
    with grad, inductor_config.patch({"freezing": True, **(options or {})}):
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    return path
