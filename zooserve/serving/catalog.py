"""What the gateway knows of each served model, read from its archive in the model store.

``zooserve serve`` registers ``NAME=NAME.mar``, so the archive is found by name. Its manifest
(``zooserve.json``) gives the task (the v2 protocol describes tensors by task); its
``model-config.yaml`` gives the admission policy: the default deadline (``zooserve.deadline_ms``),
the batch size and workers (a full batch per worker is always admitted) and TorchServe's job queue
(never exceeded, so TorchServe's bare 503 is never reached). Read once per archive version (size
and mtime, looked at no more than once a second); a model without a zooserve archive gets the
default policy (and, over v2, the generic description: bytes in, JSON out).
"""

from __future__ import annotations

import json
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from zooserve.errors import ModelNotFound
from zooserve.manifest import CONFIG_FILE, MANIFEST_FILE, ServingOptions
from zooserve.serving.admission import Policy

RECHECK_S = 1.0
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}")  # fullmatch: no trailing newline
QUEUE_SIZE = 256  # TorchServe's job_queue_size in our config.properties (per model by default)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    task: str | None  # None: no zooserve archive by that name
    platform: str
    policy: Policy


def default_policy() -> Policy:
    return policy_from({})


def policy_from(config: dict[str, Any]) -> Policy:
    """Admission policy from a model-config.yaml mapping (TorchServe's keys and ours); a value
    that is missing, not a number or out of range takes its default."""
    section = config.get("zooserve")
    section = section if isinstance(section, dict) else {}
    deadline_ms = _number(section.get("deadline_ms"), ServingOptions.deadline_ms, 1, 3_600_000)
    workers = config.get("maxWorkers", config.get("minWorkers"))
    batch = _number(config.get("batchSize"), 1, 1, 4096) * _number(workers, 1, 1, 256)
    cap = int(_number(config.get("jobQueueSize"), QUEUE_SIZE, 1, 1_000_000))
    # a full batch for every worker is always admitted (an idle model takes a burst); beyond it,
    # what the measured rate answers within the deadline: a second queued batch would not be
    return Policy(deadline_s=deadline_ms / 1e3, floor=min(cap, max(4, int(batch))), cap=cap)


def _number(value: Any, default: float, lo: float, hi: float) -> float:
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value)  # TorchServe reads quoted numbers too
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        return default  # also NaN and infinities: both fail the range check
    return value


class Catalog:
    def __init__(self, model_store: Path) -> None:
        self.model_store = model_store
        self._cache: dict[str, tuple[float, tuple[int, int], ModelInfo]] = {}

    def get(self, name: str) -> ModelInfo:
        now = time.monotonic()
        hit = self._cache.get(name)
        if hit is not None and now - hit[0] < RECHECK_S:
            return hit[2]
        if not _NAME.fullmatch(name):
            raise ModelNotFound(f"model {name!r} is not served")
        path = self.model_store / f"{name}.mar"
        try:
            st = path.stat()
        except OSError:
            return ModelInfo(name, None, "torchserve", default_policy())
        stamp = (st.st_size, st.st_mtime_ns)
        info = hit[2] if hit is not None and hit[1] == stamp else _read(name, path)
        self._cache[name] = (now, stamp, info)
        return info


def _read(name: str, path: Path) -> ModelInfo:
    try:
        with zipfile.ZipFile(path) as mar:
            meta = json.loads(mar.read(MANIFEST_FILE))
            config = yaml.safe_load(mar.read(CONFIG_FILE)) if CONFIG_FILE in mar.namelist() else {}
    except (OSError, KeyError, ValueError, yaml.YAMLError, zipfile.BadZipFile):
        return ModelInfo(name, None, "torchserve", default_policy())
    if not isinstance(meta, dict):
        return ModelInfo(name, None, "torchserve", default_policy())
    task = str(meta.get("task", "")) or None
    policy = policy_from(config if isinstance(config, dict) else {})
    return ModelInfo(name, task, f"pytorch_{meta.get('format', 'torchserve')}", policy)
