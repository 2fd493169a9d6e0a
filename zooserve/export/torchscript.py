"""TorchScript (trace + freeze). Deprecated in torch 2.14 but still what many deployments load."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from zooserve.models.specs import ExportTarget


def compile_torchscript(target: ExportTarget, path: Path) -> Path:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(target.module.eval(), target.example_inputs, check_trace=False)
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        torch.jit.save(frozen, str(path))
    return path
