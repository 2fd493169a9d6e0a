"""Model readiness, sent with the inference token (installed as /usr/local/bin/zooserve-ready; the
images' HEALTHCHECK and the Kubernetes readiness probe run it through `zooserve-entrypoint
healthcheck`). Exit 0 when ready, 1 with one line on stderr when not.

    zooserve-ready gateway --key-file RUN/key_file.json --models "lenet5 resnet18"
                           [--published KEYS/inference_key.json]
        `zooserve serve` (gateway in front of TorchServe): the gateway's /ping is Healthy (TorchServe
        up and every model has a warmed-up worker), then /v2/models/NAME/ready for each model, and
        the published inference-only key file (docker/keys.py) holds the current token.
    zooserve-ready torchserve --key-file RUN/key_file.json --ts-config CONFIG
        TorchServe alone (the `kserve` mode): its /ping is Healthy only when every registered model
        has its minimum workers up; then each model of the config's model_snapshot has a READY
        worker (management API on loopback, management token).

TorchServe 0.12 wants the token on /ping too. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any


class NotReady(Exception):
    pass


def _keys(key_file: Path) -> dict[str, str]:
    try:
        data = json.loads(key_file.read_text("utf-8"))
    except FileNotFoundError:
        return {}  # token authorization off, or TorchServe has not written it yet
    except (OSError, ValueError) as e:
        raise NotReady(f"key file {key_file}: {e}") from None
    return {k: v["key"] for k, v in data.items() if isinstance(v, dict) and v.get("key")}


def _get(url: str, token: str | None, timeout: float) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except (urllib.error.URLError, OSError) as e:
        raise NotReady(f"{url}: {getattr(e, 'reason', e)}") from None
    try:
        return status, json.loads(body or b"null")
    except ValueError:
        return status, body[:200].decode(errors="replace")


def _healthy_ping(url: str, token: str | None, timeout: float) -> None:
    status, body = _get(f"{url}/ping", token, timeout)
    if status != 200 or not isinstance(body, dict) or body.get("status") != "Healthy":
        raise NotReady(f"{url}/ping: HTTP {status} {body}")


def snapshot_models(ts_config: Path) -> list[str]:
    """Model names of a TorchServe config.properties' model_snapshot (empty when it has none)."""
    for line in ts_config.read_text("utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "model_snapshot":
            return sorted(json.loads(value.strip()).get("models", {}))
    return []


def check_gateway(args: argparse.Namespace) -> None:
    keys = _keys(args.key_file)
    token = keys.get("inference")
    _healthy_ping(args.url, token, args.timeout)
    for model in args.models.split():
        status, body = _get(f"{args.v2_url}/v2/models/{model}/ready", token, args.timeout)
        if status != 200 or not isinstance(body, dict) or body.get("ready") is not True:
            raise NotReady(f"{model}: /v2/models/{model}/ready HTTP {status} {body}")
    if args.published is not None and token:
        try:
            published = json.loads(args.published.read_text("utf-8"))["inference"]["key"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise NotReady(f"inference key not published at {args.published}: {e}") from None
        if published != token:
            raise NotReady(f"{args.published} holds an old inference token")


def check_torchserve(args: argparse.Namespace) -> None:
    keys = _keys(args.key_file)
    _healthy_ping(args.url, keys.get("inference"), args.timeout)
    models = snapshot_models(args.ts_config) if args.ts_config else []
    for model in models:
        status, body = _get(f"{args.management_url}/models/{model}", keys.get("management"), args.timeout)
        workers = [w for entry in body for w in entry.get("workers", [])] if isinstance(body, list) else []
        if status != 200 or not any(w.get("status") == "READY" for w in workers):
            raise NotReady(f"{model}: no READY worker (HTTP {status})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="zooserve-ready", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="mode", required=True)
    gw = sub.add_parser("gateway", help="zooserve serve: gateway /ping + /v2/models/NAME/ready")
    gw.add_argument("--v2-url", default="http://127.0.0.1:8000")
    gw.add_argument("--models", default="", help="space-separated model names")
    gw.add_argument("--published", type=Path, help="the inference-only key file docker/keys.py writes")
    ts = sub.add_parser("torchserve", help="TorchServe alone: /ping + a READY worker per model")
    ts.add_argument("--management-url", default="http://127.0.0.1:8081")
    ts.add_argument("--ts-config", type=Path, help="config.properties whose model_snapshot lists the models")
    for s in (gw, ts):
        s.add_argument("--key-file", type=Path, required=True)
        s.add_argument("--url", default="http://127.0.0.1:8080", help="inference API (serves /ping)")
        s.add_argument("--timeout", type=float, default=5.0)
    args = p.parse_args(argv)
    try:
        (check_gateway if args.mode == "gateway" else check_torchserve)(args)
    except NotReady as e:
        print(f"not ready: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
