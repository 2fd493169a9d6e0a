"""TorchScript (trace + freeze). Deprecated in torch 2.14 but still what many deployments load."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from zooserve.specs import ExportTarget, Precision


def compile_torchscript(target: ExportTarget, path: Path, precision: Precision = Precision.FP32) -> Path:
    """``precision`` is applied to the module before tracing (see ``zooserve.export.precision``)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(target.module.eval(), target.example_inputs, check_trace=False)
        # freeze only: optimize_for_inference bakes in mkldnn constants that torch.jit.load rejects
        torch.jit.save(torch.jit.freeze(traced), str(path))
    return path


def load_torchscript(path: Path, device: torch.device) -> Callable[..., Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location=device).eval()
