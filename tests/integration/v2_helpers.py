"""Shared by the v2 integration tests: inputs per served task and a tolerant answer comparison
(the same image in a different TorchServe batch can move a probability in its 6th decimal)."""

from __future__ import annotations

from typing import Any

# served model -> (v2 input name, task)
V2_MODELS = {
    "lenet5": ("image", "classify"),
    "tiny_resnet": ("image", "classify"),
    "tiny_bert": ("text", "classify-text"),
    "tiny_show_attend_tell": ("image", "caption"),
}
TEXT = "the match went to extra time and the home side won"
BAD = {"image": b"\x89PNG\r\n\x1a\n but truncated", "text": b"\xff\xfe not utf-8"}
BAD_TYPE = {"image": "InvalidImage", "text": "InvalidText"}


def good_input(model: str, sample_jpegs: dict[str, bytes]) -> bytes:
    return TEXT.encode() if V2_MODELS[model][0] == "text" else sample_jpegs["china.jpg"]


def same_answer(a: Any, b: Any, tol: float = 2e-3) -> bool:
    """Equal JSON, numbers within ``tol``."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_answer(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_answer(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, (int, float)) and isinstance(b, (int, float)) and abs(a - b) <= tol
    return a == b
