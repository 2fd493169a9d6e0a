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


def compile_aoti(target: ExportTarget, path: Path, options: dict[str, Any] | None = None) -> Path:
    """Compile to a ``.pt2`` package. Freezing folds weights into the graph (measured ~1.7x on CPU)."""
    import torch._inductor.config as inductor_config

    program = export_program(target)
    with inductor_config.patch({"freezing": True, **(options or {})}):
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    return path
