"""Loading user weights safely: tensors only (``weights_only=True``), strict keys, clear errors."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from zooserve.errors import WeightsError


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a .pth/.pt file (or a checkpoint dict holding one under 'state_dict')."""
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load raises anything from IndexError to BadZipFile on junk
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(
            f"{path} is not a readable tensor file (truncated, or not saved by torch.save): {first}"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state_dict (a mapping of parameter names to tensors)")
    return obj


def load_state_dict_strict(model: nn.Module, path: Path, ignore: tuple[str, ...] = ()) -> None:
    """Strict load; ``ignore`` prefixes name training-only parts (GoogLeNet's aux heads)."""
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(ignore)}
    expected, given = set(model.state_dict()), set(state)
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        raise WeightsError(
            f"{path} does not match this architecture: {len(missing)} missing keys {_few(missing)}, "
            f"{len(unexpected)} unexpected keys {_few(unexpected)}"
        )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # same names, different shapes
        lines = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
        raise WeightsError(f"{path}: {lines[0] if lines else e}") from None


def _few(keys: list[str], n: int = 3) -> str:
    return "[" + ", ".join(keys[:n]) + (", ..." if len(keys) > n else "") + "]"
