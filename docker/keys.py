"""TorchServe's tokens in the containers (installed as /usr/local/bin/zooserve-keys).

    zooserve-keys publish KEY_FILE OUT
        Keep OUT an inference-only copy of TorchServe's key file, {"inference": {"key": ...}}:
        rewritten whenever the key file changes (the gateway renews the tokens at half their
        lifetime), removed while there is none. docker-compose.yml puts OUT on a volume of its own,
        which the Locust container mounts read-only: it never sees the management or API keys.
    zooserve-keys renew KEY_FILE MANAGEMENT_URL --every SECONDS
        New inference and management tokens every SECONDS through TorchServe's token API (the API
        key authorizes it; TorchServe rewrites KEY_FILE). For TorchServe without the gateway (the
        entrypoint's `kserve` mode); `zooserve serve`'s gateway does this itself.

Standard library only; runs until killed (the container's main process outlives it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


def read_keys(key_file: Path) -> dict[str, Any] | None:
    """TorchServe's key file as JSON; None while it is absent or half-written."""
    try:
        data = json.loads(key_file.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def inference_only(keys: dict[str, Any]) -> dict[str, Any] | None:
    entry = keys.get("inference")
    if not isinstance(entry, dict) or not entry.get("key"):
        return None
    return {"inference": dict(entry)}


def write_atomically(path: Path, payload: dict[str, Any]) -> None:
    """Readers see the old file or the new one, never a part (same directory, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp: mode 0600
            json.dump(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish_once(key_file: Path, out: Path, last: dict[str, Any] | None) -> dict[str, Any] | None:
    """One step of `publish`: returns what OUT now holds (None: no file)."""
    if not key_file.exists():
        if last is not None or out.exists():
            out.unlink(missing_ok=True)  # server stopped or restarting: its old token is void
        return None
    keys = read_keys(key_file)
    current = inference_only(keys) if keys is not None else None
    if current is None:
        return last  # being written: try again at the next poll
    if current != last or not out.exists():
        write_atomically(out, current)
    return current


def publish(key_file: Path, out: Path, interval: float = 1.0) -> None:
    last: dict[str, Any] | None = None
    out.unlink(missing_ok=True)
    while True:
        last = publish_once(key_file, out, last)
        time.sleep(interval)


def renew_once(key_file: Path, management_url: str, timeout: float = 10.0) -> list[str]:
    """Ask TorchServe for new inference and management tokens; returns what failed."""
    failed = []
    api_key = ((read_keys(key_file) or {}).get("API") or {}).get("key")
    for kind in ("inference", "management"):
        req = urllib.request.Request(
            f"{management_url.rstrip('/')}/token?type={kind}",
            headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                r.read()
        except (urllib.error.URLError, OSError) as e:
            failed.append(f"{kind}: {e}")
    return failed


def renew(key_file: Path, management_url: str, every: float) -> None:
    while True:
        time.sleep(every)
        for failure in renew_once(key_file, management_url):
            print(f"zooserve-keys: token renewal failed: {failure}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="zooserve-keys", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    pub = sub.add_parser("publish", help="keep OUT an inference-only copy of KEY_FILE")
    pub.add_argument("key_file", type=Path)
    pub.add_argument("out", type=Path)
    pub.add_argument("--interval", type=float, default=1.0)
    ren = sub.add_parser("renew", help="renew the tokens through TorchServe's token API")
    ren.add_argument("key_file", type=Path)
    ren.add_argument("management_url")
    ren.add_argument("--every", type=float, required=True, metavar="SECONDS")
    args = p.parse_args(argv)
    try:
        if args.command == "publish":
            publish(args.key_file, args.out, args.interval)
        else:
            renew(args.key_file, args.management_url, args.every)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
