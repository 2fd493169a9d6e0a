"""The one table of artifact formats: how each is compiled, named and loaded back.

``zooserve build --format`` offers its keys, the build compiles with ``compile``, the runtime loads
with ``load``. Adding a format is one entry here (and a member of ``zooserve.specs.Format``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from zooserve.export import aoti, tensorrt, torchscript
from zooserve.specs import ExportTarget, Format, Precision


@dataclass(frozen=True)
class ArtifactFormat:
    suffix: str
    compile: Callable[[ExportTarget, Path, Precision], Path]
    load: Callable[[Path, torch.device], Callable[..., Any]]
    needs_cuda: bool = False


FORMATS: dict[Format, ArtifactFormat] = {
    Format.AOTI: ArtifactFormat(".pt2", aoti.compile_aoti, aoti.load_aoti),
    Format.TORCHSCRIPT: ArtifactFormat(".pt", torchscript.compile_torchscript, torchscript.load_torchscript),
    Format.TENSORRT: ArtifactFormat(
        ".ep", tensorrt.compile_tensorrt, tensorrt.load_tensorrt, needs_cuda=True
    ),
}


def artifact_name(role: str, fmt: Format) -> str:
    return f"{role}{FORMATS[fmt].suffix}"


def load_artifact(path: Path, fmt: Format, device: torch.device) -> Callable[..., Any]:
    return FORMATS[fmt].load(path, device)
