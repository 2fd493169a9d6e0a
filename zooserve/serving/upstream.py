"""TorchServe behind the gateway: its private loopback addresses, one HTTP connection pool and
one gRPC channel per API, and its tokens (re-read when TorchServe rewrites its key file)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc


@dataclass(frozen=True)
class Addresses:
    """Where TorchServe listens (127.0.0.1 only: the gateway is its one client)."""

    inference: int
    management: int
    grpc_inference: int
    grpc_management: int
    host: str = "127.0.0.1"

    def url(self, api: str) -> str:
        return f"http://{self.host}:{getattr(self, api)}"

    def target(self, api: str) -> str:
        return f"{self.host}:{getattr(self, api)}"


class Keys:
    """TorchServe's tokens from its key file; empty when token authorization is off."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._keys: dict[str, str] = {}

    def get(self, which: str) -> str | None:
        if self.path is None:
            return None
        try:
            st = os.stat(self.path)
        except OSError:
            return self._keys.get(which)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                data = json.loads(self.path.read_text("utf-8"))
                self._keys = {k: v["key"] for k, v in data.items() if isinstance(v, dict) and "key" in v}
                self._stamp = stamp
            except (OSError, ValueError):
                pass  # TorchServe is rewriting it: keep the keys we had
        return self._keys.get(which)

    def allows(self, authorization: str | None, which: str) -> bool:
        """Whether ``authorization`` carries the current ``which`` token (always, with auth off)."""
        key = self.get(which)
        return self.path is None or (key is not None and authorization == f"Bearer {key}")

    def header(self, which: str) -> dict[str, str]:
        key = self.get(which)
        return {"Authorization": f"Bearer {key}"} if key else {}


class Backend:
    def __init__(self, addresses: Addresses, keys: Keys, max_message_bytes: int) -> None:
        self.addresses = addresses
        self.keys = keys
        self.max_message_bytes = max_message_bytes
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self.grpc_inference = grpc.aio.insecure_channel(addresses.target("grpc_inference"), options=options)
        self.grpc_management = grpc.aio.insecure_channel(addresses.target("grpc_management"), options=options)
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:  # created inside the running event loop
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=60)
            self._http = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
        await self.grpc_inference.close()
        await self.grpc_management.close()
