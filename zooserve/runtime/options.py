"""Per-request options (``X-Topk: 3`` headers or JSON body keys), read strictly.

A client controls these values, so every conversion is checked here: booleans are not numbers,
non-finite and out-of-range values are refused, integers come only from integral values, strings
are short. Whatever the value, the outcome is the option or an ``InvalidParameter`` for that
request alone.
"""

from __future__ import annotations

import math
import re
from typing import Any

from zooserve.errors import InvalidParameter
from zooserve.runtime.pipeline import Request

_INT = re.compile(r"[+-]?\d{1,12}", re.ASCII)
_FLOAT = re.compile(r"[+-]?(\d{1,12}(\.\d{0,12})?|\.\d{1,12})([eE][+-]?\d{1,3})?", re.ASCII)
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


def raw_option(request: Request, name: str) -> Any:
    """The header ``x-NAME`` (dashes for underscores), else the JSON body's ``NAME``, else None."""
    value = request.headers.get("x-" + name.replace("_", "-"))
    if value is None and isinstance(request.body, dict):
        value = request.body.get(name)
    return value


def int_option(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = raw_option(request, name)
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise InvalidParameter(f"{name} must be an integer, got {type(raw).__name__}")
    if isinstance(raw, str):
        if not _INT.fullmatch(raw.strip()):
            raise InvalidParameter(f"{name} must be an integer, got {_short(raw)}")
        value = int(raw.strip())
    elif isinstance(raw, float):
        if not (math.isfinite(raw) and raw.is_integer()):
            raise InvalidParameter(f"{name} must be an integer, got {raw!r}")
        value = int(raw)
    else:
        value = raw
    if not lo <= value <= hi:
        raise InvalidParameter(f"{name} must be between {lo} and {hi}, got {_short(value)}")
    return value


def float_option(request: Request, name: str, default: float, lo: float, hi: float) -> float:
    raw = raw_option(request, name)
    if raw is None:
        return default
    if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
        raise InvalidParameter(f"{name} must be a number, got {type(raw).__name__}")
    if isinstance(raw, str):
        raw = raw.strip()
        if not _FLOAT.fullmatch(raw):
            raise InvalidParameter(f"{name} must be a number, got {_short(raw)}")
    value = float(raw) if not isinstance(raw, int) or abs(raw) < 2**53 else math.inf
    if not (math.isfinite(value) and lo <= value <= hi):
        raise InvalidParameter(f"{name} must be between {lo} and {hi}, got {_short(raw)}")
    return value


def flag_option(request: Request, name: str) -> bool:
    """A yes/no option: true/false, 1/0, yes/no, on/off (any case); anything else is refused."""
    raw = raw_option(request, name)
    if raw is None or isinstance(raw, bool):
        return bool(raw)
    if isinstance(raw, int) and raw in (0, 1):
        return bool(raw)
    text = raw.strip().lower() if isinstance(raw, str) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidParameter(f"{name} must be true or false, got {_short(raw)}")


def _short(value: Any) -> str:
    """A value for an error message, cut short; never raises (``repr`` of a 5000-digit int does)."""
    if isinstance(value, int) and not -(10**40) < value < 10**40:
        return f"an integer of about {int(abs(value).bit_length() * 0.30103)} digits"
    text = repr(value[:80] if isinstance(value, str) else value)
    return text if len(text) <= 40 else text[:37] + "..."
