"""A small client for TorchServe's management REST API (describe, register, unregister, scale),
with the management token. ``server.wait_ready``, benchmarks, ``zooserve tune`` and tests use it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import requests

from zooserve.errors import ServerError

BUSY_STATUSES = (500, 503)  # TorchServe refuses an unregister that races a busy worker this way


@dataclass
class Management:
    url: str  # http://host:port of the management API
    token: str | None = None
    timeout: float = 120.0
    session: requests.Session = field(default_factory=requests.Session, repr=False)

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return self.session.request(
            method,
            f"{self.url}{path}",
            headers=headers,
            timeout=kwargs.pop("timeout", self.timeout),
            **kwargs,
        )

    def describe(self, name: str) -> dict[str, Any]:
        """The model's description (workers with status and pid, batch settings)."""
        r = self._call("GET", f"/models/{name}")
        if not r.ok:
            raise ServerError(f"describe {name}: HTTP {r.status_code} {r.text[:200]}")
        return r.json()[0]

    def models(self) -> list[str]:
        r = self._call("GET", "/models")
        r.raise_for_status()
        return [m["modelName"] for m in r.json().get("models", [])]

    def ready(self, name: str) -> bool:
        """True when the model has a READY worker; False while it loads or when unreachable."""
        try:
            workers = self.describe(name).get("workers", [])
        except (ServerError, requests.RequestException, ValueError, IndexError):
            return False
        return any(w.get("status") == "READY" for w in workers)

    def worker_pids(self, name: str) -> list[int]:
        return [int(w["pid"]) for w in self.describe(name).get("workers", []) if w.get("pid")]

    def register(self, archive: str, name: str, workers: int = 1, timeout: float = 600.0) -> None:
        """Register ``archive`` (a file name in the model store) and wait for its workers."""
        params = {"url": archive, "model_name": name, "initial_workers": workers, "synchronous": "true"}
        r = self._call("POST", "/models", params=params, timeout=timeout)
        if not r.ok:
            raise ServerError(f"register {name}: HTTP {r.status_code} {r.text[:300]}")

    def scale(self, name: str, workers: int) -> None:
        params = {"min_worker": workers, "max_worker": workers, "synchronous": "true"}
        r = self._call("PUT", f"/models/{name}", params=params)
        if not r.ok:
            raise ServerError(f"scale {name}: HTTP {r.status_code} {r.text[:200]}")

    def unregister(self, name: str, attempts: int = 10) -> None:
        """Unregister, retrying while TorchServe refuses because a worker is busy."""
        for attempt in range(attempts):
            r = self._call("DELETE", f"/models/{name}")
            if r.ok or r.status_code == 404:
                return
            if r.status_code not in BUSY_STATUSES or attempt == attempts - 1:
                raise ServerError(f"unregister {name}: HTTP {r.status_code} {r.text[:200]}")
            time.sleep(0.5)
