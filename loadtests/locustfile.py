"""Locust load test for a zooserve TorchServe: REST and gRPC users, weighted model mix.

Environment: ZOOSERVE_URL (http://127.0.0.1:8080), ZOOSERVE_GRPC_TARGET (127.0.0.1:7070),
ZOOSERVE_KEY_FILE (.zooserve/key_file.json), ZOOSERVE_MODELS (comma/space list, default lenet5),
ZOOSERVE_ALLOW_REMOTE=1 to target a non-loopback host (containers), ZOOSERVE_MAX_RUN_TIME (s, 600):
a hard stop even without --run-time. See loadtests/README.md.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import gevent
from locust import FastHttpUser, events, task

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # locust imports this file by path: its sibling grpc_user.py
from grpc_user import GrpcUser  # noqa: E402

from zooserve.bench.samples import TEXTS, digit_pngs, photo_jpegs  # noqa: E402

URL = os.environ.get("ZOOSERVE_URL", "http://127.0.0.1:8080").rstrip("/")
GRPC_TARGET = os.environ.get("ZOOSERVE_GRPC_TARGET", "127.0.0.1:7070")
KEY_FILE = Path(os.environ.get("ZOOSERVE_KEY_FILE", ".zooserve/key_file.json"))
MODELS = os.environ.get("ZOOSERVE_MODELS", "lenet5").replace(",", " ").split()
MAX_RUN_TIME = float(os.environ.get("ZOOSERVE_MAX_RUN_TIME", "600"))
# relative weight of each task kind in the mix (heavier models get fewer requests)
WEIGHTS = {"image": 3, "digits": 3, "text": 2, "caption": 1}


def _loopback(host: str) -> bool:
    try:
        return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
    except (OSError, ValueError):
        return False


def check_targets(*hosts: str) -> None:
    """Refuse to load anything but this machine unless explicitly allowed."""
    if os.environ.get("ZOOSERVE_ALLOW_REMOTE") == "1":
        return
    for host in (*hosts, urlparse(URL).hostname or "", GRPC_TARGET.rsplit(":", 1)[0].strip("[]")):
        if not _loopback(host):
            raise SystemExit(f"refusing non-loopback target {host!r}; set ZOOSERVE_ALLOW_REMOTE=1 to load it")


check_targets()


def token() -> str | None:
    """The inference key of ZOOSERVE_KEY_FILE: TorchServe's key_file.json, or the inference-only
    copy a container publishes (docker/keys.py); both hold {"inference": {"key": ...}}."""
    try:
        return json.loads(KEY_FILE.read_text("utf-8"))["inference"]["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return None  # token auth off, or no key file: requests will say 401


class Token:
    """token(), re-read when the key file changes (the server renews its tokens), checked at most
    once a second."""

    def __init__(self) -> None:
        self.value = token()
        self._stamp = self._mtime()
        self._checked = time.monotonic()

    @staticmethod
    def _mtime() -> int | None:
        try:
            return KEY_FILE.stat().st_mtime_ns
        except OSError:
            return None

    def get(self) -> str | None:
        now = time.monotonic()
        if now - self._checked >= 1.0:
            self._checked = now
            stamp = self._mtime()
            if stamp != self._stamp:
                self._stamp, self.value = stamp, token()
        return self.value


TOKEN = Token()


def kind(model: str) -> str:
    """Payload kind from the served name (served variants keep their family's name)."""
    if "bert" in model:
        return "text"
    if "show_attend_tell" in model:
        return "caption"
    return "digits" if "lenet" in model else "image"


def payloads() -> dict[str, list[bytes]]:
    kinds = {kind(m) for m in MODELS}
    out: dict[str, list[bytes]] = {}
    if kinds & {"image", "caption"}:
        out["image"] = out["caption"] = list(photo_jpegs().values())
    if "digits" in kinds:
        out["digits"] = [png for png, _ in digit_pngs()]
    if "text" in kinds:
        out["text"] = [t.encode() for t in TEXTS]
    return out


PAYLOADS = payloads()
MIX = [(m, kind(m)) for m in MODELS]
MIX_WEIGHTS = [WEIGHTS[k] for _, k in MIX]


def pick() -> tuple[str, str, bytes]:
    model, k = random.choices(MIX, MIX_WEIGHTS)[0]
    return model, k, random.choice(PAYLOADS[k])


def valid(k: str, body: Any) -> bool:
    return isinstance(body, dict) and ("caption" in body if k == "caption" else "predictions" in body)


class RestUser(FastHttpUser):
    """POST /predictions/{model} with raw bytes; the answer must be a 200 with a prediction."""

    host = URL
    weight = 3

    @task
    def predict(self) -> None:
        model, k, data = pick()
        ctype = "text/plain; charset=utf-8" if k == "text" else "application/octet-stream"
        tok = TOKEN.get()
        auth = {"Authorization": f"Bearer {tok}"} if tok else {}
        with self.client.post(
            f"/predictions/{model}",
            data=data,
            headers={**auth, "Content-Type": ctype},
            name=f"/predictions/{model}",
            catch_response=True,
        ) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {r.text[:200]}")
            elif not valid(k, r.json()):
                r.failure(f"unexpected body: {r.text[:200]}")


class GrpcPredictUser(GrpcUser):
    """TorchServe's gRPC Predictions with the same payloads."""

    grpc_target = GRPC_TARGET
    weight = 1

    def __init__(self, environment: Any) -> None:
        self.token = TOKEN.get()
        super().__init__(environment)

    @task
    def predict(self) -> None:
        model, k, data = pick()
        self.client.set_token(TOKEN.get())
        self.client.predict(model, data, name=f"grpc {model}")


@events.init.add_listener
def _bounded(environment: Any, **_: Any) -> None:
    """Always stop by itself: quit after ZOOSERVE_MAX_RUN_TIME even when no --run-time is given."""
    if environment.host:  # --host on the command line overrides ZOOSERVE_URL: check it too
        check_targets(urlparse(environment.host).hostname or "")
    if environment.runner is not None:
        gevent.spawn_later(MAX_RUN_TIME, environment.runner.quit)
