"""AOTInductor: ``torch.export`` with dynamic dimensions, then ``aoti_compile_and_package``."""

from __future__ import annotations

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
    """Compile to a ``.pt2`` package with Inductor freezing, autograd off, for every precision.

    Freezing only folds weights and picks fused oneDNN kernels (conv/linear + pointwise, int8
    qconv/qlinear) when autograd is off. torch 2.14 miscompiles one pattern on this path, a conv
    with ONE input channel under a dynamic batch; the precision builders avoid it
    (``precision.single_channel_convs``, docs/precision.md). ``precision`` is part of the formats'
    compile signature; AOTInductor compiles every precision the same way.
    """
    del precision
    program = export_program(target)
    with torch.no_grad(), inductor_config.patch({"freezing": True}):
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
