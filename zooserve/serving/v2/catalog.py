"""Which task a served model has: read from its archive's ``zooserve.json`` in the model store.

``zooserve serve`` registers ``NAME=NAME.mar``, so the archive is found by name. The manifest is
read once per archive version (size and mtime, looked at no more than once a second) and kept; a
model without a zooserve archive gets the generic description (bytes in, JSON out).
"""

from __future__ import annotations

import json
import re
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

from zooserve.errors import ModelNotFound
from zooserve.serving.v2.tasks import TaskSpec, spec_for

MANIFEST = "zooserve.json"
RECHECK_S = 1.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    task: str | None  # None: no zooserve archive by that name
    platform: str
    spec: TaskSpec


class Catalog:
    def __init__(self, model_store: Path) -> None:
        self.model_store = model_store
        self._cache: dict[str, tuple[float, tuple[int, int], ModelInfo]] = {}

    def get(self, name: str) -> ModelInfo:
        now = time.monotonic()
        hit = self._cache.get(name)
        if hit is not None and now - hit[0] < RECHECK_S:
            return hit[2]
        if not _NAME.match(name):
            raise ModelNotFound(f"model {name!r} is not served")
        path = self.model_store / f"{name}.mar"
        try:
            st = path.stat()
        except OSError:
            return ModelInfo(name, None, "torchserve", spec_for(None))
        stamp = (st.st_size, st.st_mtime_ns)
        info = hit[2] if hit is not None and hit[1] == stamp else _read(name, path)
        self._cache[name] = (now, stamp, info)
        return info


def _read(name: str, path: Path) -> ModelInfo:
    try:
        with zipfile.ZipFile(path) as mar:
            meta = json.loads(mar.read(MANIFEST))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return ModelInfo(name, None, "torchserve", spec_for(None))
    task = str(meta.get("task", "")) or None
    return ModelInfo(name, task, f"pytorch_{meta.get('format', 'torchserve')}", spec_for(task))
