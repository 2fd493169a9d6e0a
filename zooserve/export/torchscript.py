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
        # freeze only: optimize_for_inference bakes in mkldnn constants that torch.jit.load rejects
        torch.jit.save(torch.jit.freeze(traced), str(path))
    return path
