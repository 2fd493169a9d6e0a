"""Send the bad-input corpus to every served task over REST and gRPC; write docs/reliability.md.

    python tests/data/reliability_table.py [OUT.md]     # builds tiny models, serves them, stops

The helpers (``send_rest``, ``send_grpc``, ``extra_cases``) are shared with
tests/integration/test_bad_inputs.py, which asserts what this script records.
"""

from __future__ import annotations

import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from zooserve import errors

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_bad_inputs import OCTET, Case, all_cases, expected  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
# served name -> (task, build_cache / build arguments)
TASKS: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny_resnet": ("classify", {"format": "torchscript"}),
    "tiny_show_attend_tell": ("caption", {"format": "torchscript"}),
    "tiny_bert": ("classify-text", {"format": "torchscript"}),
}
OVER_LIMIT = 17 * 1024 * 1024  # max_request_size is 16 MiB


@dataclass(frozen=True)
class Outcome:
    status: int  # HTTP status; over gRPC the JSON body's code (200 for a prediction)
    type: str | None  # the JSON error body's "type" (None for a prediction or a non-JSON body)
    grpc_code: str = ""  # gRPC status code name ("" over REST)
    body: Any = None

    @property
    def ok(self) -> bool:
        return self.status == 200


def _json(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def send_rest(
    url: str, token: str, model: str, data: bytes, content_type: str = OCTET, timeout: float = 60
) -> Outcome:
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {token}"}
    r = requests.post(f"{url}/predictions/{model}", data=data, headers=headers, timeout=timeout)
    body = _json(r.content)
    kind = body.get("type") if isinstance(body, dict) and r.status_code != 200 else None
    return Outcome(r.status_code, kind, "", body)


def send_grpc(
    channel: Any,
    token: str,
    model: str,
    data: bytes,
    content_type: str = "",
    version: str = "",
    timeout: float = 60,
) -> Outcome:
    """gRPC Predictions; ``content_type`` rides in the input map as the zooserve client sends it
    ("" sends the bare ``data`` entry, as grpcurl users do)."""
    import grpc

    from zooserve.serving import grpc_stubs

    pb2 = grpc_stubs.load("inference_pb2")
    stub = grpc_stubs.load("inference_pb2_grpc").InferenceAPIsServiceStub(channel)
    inputs = {"data": data} | ({"content-type": content_type.encode()} if content_type else {})
    request = pb2.PredictionsRequest(model_name=model, model_version=version, input=inputs)
    try:
        reply = stub.Predictions(request, metadata=[("authorization", f"Bearer {token}")], timeout=timeout)
    except grpc.RpcError as e:
        body = _json(e.details() or "")
        if not isinstance(body, dict):
            return Outcome(-1, None, e.code().name, e.details())
        code = body.get("code")
        return Outcome(int(code) if isinstance(code, int) else -1, body.get("type"), e.code().name, body)
    body = _json(reply.prediction)
    if isinstance(body, dict) and isinstance(body.get("code"), int) and body["code"] >= 400:
        return Outcome(body["code"], body.get("type"), "OK", body)  # an error hidden in an OK: a bug
    return Outcome(200, None, "OK", body)


@dataclass(frozen=True)
class Extra:
    """A request outside the corpus: an address or a transport-level problem."""

    name: str
    model: str
    data: bytes
    content_type: str = OCTET
    version: str = ""
    rest: tuple[int, str | None] = (200, None)
    # accepted gRPC status names and a substring of the details (None: not sent over gRPC)
    grpc: tuple[tuple[str, ...], str] | None = None


def extra_cases(jpeg: bytes) -> list[Extra]:
    # the gateway answers an unknown model/version NOT_FOUND (TorchServe 0.12 alone says INTERNAL)
    # and refuses a message over the 16 MiB limit before reading it
    too_big = (("RESOURCE_EXHAUSTED",), "")
    return [
        Extra(
            "unknown_model",
            "no_such_model",
            jpeg,
            rest=(404, "ModelNotFoundException"),
            grpc=(("NOT_FOUND",), "ModelNotFoundException"),
        ),
        Extra(
            "unknown_version",
            "tiny_resnet",
            jpeg,
            version="9.9",
            rest=(404, "ModelVersionNotFoundException"),
            grpc=(("NOT_FOUND",), "ModelVersionNotFoundException"),
        ),
        Extra(
            "over_max_request_size",
            "tiny_resnet",
            b"\xff" * OVER_LIMIT,
            rest=(413, "PayloadTooLarge"),
            grpc=too_big,
        ),
        Extra(
            "over_max_request_size_text",
            "tiny_bert",
            b"a" * OVER_LIMIT,
            "text/plain",
            rest=(413, "PayloadTooLarge"),
            grpc=too_big,
        ),
        # TorchServe's Java frontend would parse a form body itself and fail (500) before our
        # handler: the gateway passes it on as bytes, so a photo sent as a form is still a photo
        Extra("form_urlencoded_binary", "tiny_resnet", jpeg, "application/x-www-form-urlencoded"),
    ]


def extra_mismatches(extra: Extra, rest: Outcome, grpc: Outcome | None) -> list[str]:
    wrong = []
    if (rest.status, rest.type) != extra.rest:
        wrong.append(f"{extra.name} over REST: got {rest.status} {rest.type}, want {extra.rest}")
    if extra.grpc and grpc is not None:
        codes, detail = extra.grpc
        if grpc.grpc_code not in codes or detail not in str(grpc.body):
            wrong.append(
                f"{extra.name} over gRPC: got {grpc.grpc_code} {grpc.body!s:.100}, want {extra.grpc}"
            )
    return wrong


def send_case(url: str, channel: Any, token: str, model: str, case: Case) -> tuple[Outcome, Outcome, Outcome]:
    """REST, gRPC with the content type (the zooserve client), gRPC without one (bare input map)."""
    return (
        send_rest(url, token, model, case.data, case.content_type),
        send_grpc(channel, token, model, case.data, case.content_type),
        send_grpc(channel, token, model, case.data),
    )


VIAS = ("REST", "gRPC", "gRPC without content type")
GRPC_CODES = {row.type: row.grpc_code for row in errors.error_table()}  # the error table, as served
# (case, via) pairs allowed to differ from the expectation; empty since JSON over gRPC is parsed
KNOWN_GAPS: set[tuple[str, str]] = set()


def case_mismatches(case: Case, task: str, model: str, outcomes: tuple[Outcome, ...]) -> list[str]:
    wrong = []
    for got, via in zip(outcomes, VIAS, strict=False):
        status, kind = expected(case, task, grpc=via == VIAS[2])
        if (case.name, via) in KNOWN_GAPS:
            continue
        want_code = "OK" if kind is None else GRPC_CODES.get(kind, "?")
        if (got.status, got.type) != (status or 200, kind) or (via != "REST" and got.grpc_code != want_code):
            wrong.append(
                f"{case.name} -> {model} over {via}: got {got.status} {got.type}, want {status} {kind}"
            )
        if not got.ok and not (isinstance(got.body, dict) and got.body.get("code") == got.status):
            wrong.append(f"{case.name} -> {model} over {via}: not our JSON error body: {got.body!s:.100}")
    return wrong


def send_extra(url: str, channel: Any, token: str, extra: Extra) -> tuple[Outcome, Outcome | None]:
    path = extra.model + (f"/{extra.version}" if extra.version else "")
    rest = send_rest(url, token, path, extra.data, extra.content_type)
    grpc = None
    if extra.grpc:
        grpc = send_grpc(channel, token, extra.model, extra.data, extra.content_type, extra.version)
    return rest, grpc


def _gap(case: Case, task: str, o: Outcome, via: str) -> str:
    if (case.name, via) not in KNOWN_GAPS:
        return ""
    status, kind = expected(case, task, grpc=via == VIAS[2])
    return "" if (o.status, o.type) == (status or 200, kind) else " (known gap)"


def _cell(o: Outcome | None) -> str:
    if o is None:
        return "n/a"
    if o.grpc_code and o.grpc_code != "OK":
        if isinstance(o.body, dict):
            return f"{o.grpc_code} ({o.status} {o.type})"
        detail = " ".join(str(o.body or "").split()).replace("|", "/")
        return f"{o.grpc_code}: {detail[:60]}"
    return "200 prediction" if o.ok else f"{o.status} {o.type or '(no JSON body)'}"


def table(url: str, channel: Any, token: str, jpeg: bytes) -> tuple[str, list[str]]:
    """The markdown table from real requests, and every outcome that differs from the expected."""
    cases: list[Case] = all_cases()
    lines = [
        "| input | content type | model (task) | REST | gRPC | gRPC, no content type | expected |",
        "|---|---|---|---|---|---|---|",
    ]
    wrong = []
    for case in cases:
        for model, (task, _) in TASKS.items():
            outcomes = send_case(url, channel, token, model, case)
            wrong += case_mismatches(case, task, model, outcomes)
            want = expected(case, task)
            exp_text = "prediction" if want[0] is None else f"{want[0]} {want[1]}"
            lines.append(
                f"| {case.name} ({len(case.data)} B) | {case.content_type} | {model} ({task}) | "
                + " | ".join(
                    _cell(o) + _gap(case, task, o, via) for o, via in zip(outcomes, VIAS, strict=True)
                )
                + f" | {exp_text} |"
            )
    for extra in extra_cases(jpeg):
        rest, grpc = send_extra(url, channel, token, extra)
        wrong += extra_mismatches(extra, rest, grpc)
        lines.append(
            f"| {extra.name}{' v' + extra.version if extra.version else ''} ({len(extra.data)} B) "
            f"| {extra.content_type} | {extra.model} | {_cell(rest)} | {_cell(grpc)} | n/a "
            f"| {extra.rest[0]} |"
        )
    return "\n".join(lines) + "\n", wrong


HEADER = """# Reliability: bad inputs, faults, soak

Generated by `python tests/data/reliability_table.py` from a real zooserve (its gateway in front
of TorchServe 0.12) serving `tiny_resnet` (classify), `tiny_show_attend_tell` (caption) and
`tiny_bert` (classify-text); `tests/integration/test_bad_inputs.py` asserts the same outcomes.
Inputs come from `tests/data/make_bad_inputs.py` (`image_cases()`, `text_cases()`); every case
goes to every task.

Reading the table: REST is the HTTP status and the JSON body's `type`. gRPC is the status code
from the same error table, with our JSON error (its `code` and `type` shown in brackets) as the
details: the gateway turns the JSON error TorchServe 0.12 hides in an `OK` answer into the status
it stands for, so the zooserve client raises the same typed error as REST. The gRPC column sends
the content type as a `content-type` entry of the input map, as the zooserve client does; the next
column sends the bare `data` entry (grpcurl-style): without a content type no 415 can be inferred
(the bytes go to the image decoder) and BERT takes a JSON body as plain text.

Before the handler runs: a body over `max_request_size` (16 MiB) is refused by the gateway with
413 `PayloadTooLarge` (gRPC: `RESOURCE_EXHAUSTED`) before it is read; a raw binary body sent as
`application/x-www-form-urlencoded` (curl's default for `--data-binary`) is passed on as bytes, so
the photo is read as a photo (TorchServe alone would parse it as a form and fail with 500). Known
limit: a missing or wrong token is TorchServe's own 400 `InvalidKeyException` (not 401).

JSON bodies sent over gRPC (with the `content-type` input entry the client adds) are parsed like
REST's, so JSON options (`topk`, `beam_size`, `attention`) work on both.

"""

FAULTS = "\n" + (Path(__file__).parent / "reliability_faults.md").read_text("utf-8")


def main(out: Path) -> None:
    import grpc

    from zooserve.export.build import BuildOptions, build
    from zooserve.serving import server

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "model_store"
        store.mkdir()
        for name, (_, how) in TASKS.items():
            res = build(name, BuildOptions(**how), out=store, work=Path(tmp) / "work" / name)
            assert res.archive is not None
        cfg = server.on_free_ports(server.ServerConfig(model_store=store, run_dir=Path(tmp) / "run"))
        ports = cfg.ports
        try:
            server.start(cfg, list(TASKS), timeout=240)
            token = server.read_keys(cfg)["inference"]
            with grpc.insecure_channel(f"127.0.0.1:{ports.grpc_inference}") as channel:
                jpeg = _sample_jpeg()
                text, wrong = table(cfg.url(), channel, token, jpeg)
        finally:
            server.stop(cfg)
    out.write_text(HEADER + text + FAULTS, "utf-8")
    print(f"wrote {out}")
    if wrong:
        sys.exit("unexpected outcomes:\n" + "\n".join(wrong))


def _sample_jpeg() -> bytes:
    from make_bad_inputs import _photo, encode

    return encode(_photo(), "JPEG", quality=90)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "reliability.md")
