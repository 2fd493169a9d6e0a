"""TensorRT engines through Torch-TensorRT's dynamo path (GPU only).

The dynamic dimensions of the ExportTarget become TensorRT optimisation profiles (min/opt/max);
the engine is saved as an ExportedProgram (``torch_tensorrt.save``) that ``load_tensorrt`` reads
back with ``torch.export.load``. ``torch_tensorrt`` is imported only here, when needed: it is an
optional GPU-only dependency.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from zooserve.errors import UnsupportedFormat
from zooserve.export.aoti import export_program
from zooserve.specs import ExportTarget, Precision

PRECISIONS = {Precision.FP32: torch.float32, Precision.FP16: torch.float16, Precision.BF16: torch.bfloat16}


def profile_shapes(example: torch.Tensor, dynamic: dict[int, tuple[str, int, int]]) -> dict[str, list[int]]:
    """min/opt/max shapes for one input: opt is the example's size clamped into [min, max], except
    batch, whose opt is a mid-size batch the server actually forms."""
    lo, opt, hi = list(example.shape), list(example.shape), list(example.shape)
    for axis, (name, mn, mx) in dynamic.items():
        lo[axis], hi[axis] = mn, mx
        opt[axis] = min(max(32 if name == "batch" else example.shape[axis], mn), mx)
    return {"min_shape": lo, "opt_shape": opt, "max_shape": hi}


def _torch_tensorrt() -> ModuleType:
    try:
        import torch_tensorrt  # optional GPU dependency (requirements-gpu.txt)
    except ImportError:
        raise UnsupportedFormat(
            "torch-tensorrt is not installed: pip install -r requirements-gpu.txt"
        ) from None
    return torch_tensorrt


def compile_tensorrt(target: ExportTarget, path: Path, precision: Precision = Precision.FP16) -> Path:
    if not torch.cuda.is_available():
        raise UnsupportedFormat("TensorRT needs a CUDA GPU and none is visible on this machine")
    if precision not in PRECISIONS:
        raise UnsupportedFormat(f"TensorRT precision {precision!r} is not supported; use fp16 or fp32")
    torch_tensorrt = _torch_tensorrt()
    module = target.module.cuda().eval()
    cuda_inputs = tuple(x.cuda() for x in target.example_inputs)
    gpu_target = ExportTarget(module, cuda_inputs, target.dynamic)
    inputs: list[Any] = [
        torch_tensorrt.Input(**profile_shapes(x, dyn), dtype=x.dtype)
        for x, dyn in zip(cuda_inputs, target.dynamic, strict=True)
    ]
    with torch.no_grad():
        trt_module = torch_tensorrt.dynamo.compile(
            export_program(gpu_target),
            inputs=inputs,
            enabled_precisions={PRECISIONS[precision]},
            truncate_double=True,
        )
        torch_tensorrt.save(trt_module, str(path), output_format="exported_program", inputs=list(cuda_inputs))
    return path


def load_tensorrt(path: Path, device: torch.device) -> Callable[..., Any]:
    _torch_tensorrt()  # registers the TensorRT runtime ops the saved program calls
    return torch.export.load(str(path)).module()
