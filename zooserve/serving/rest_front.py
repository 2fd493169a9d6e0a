"""TorchServe's REST APIs as the gateway serves them (aiohttp), in front of TorchServe's own.

Inference (``POST /predictions/{model}[/{version}]``): a valid token, then admission, a deadline
and a request id; TorchServe's answer comes back with ``X-Request-Id``. A full model is refused at
once (503 ``Overloaded`` with ``Retry-After``), a late call is 504 ``DeadlineExceeded``: both in the
one JSON error shape. ``/ping`` is Healthy only when TorchServe is and every model has a ready
(warmed-up) worker. Everything else is passed through unchanged, TorchServe's own errors included.

Management: registration only of an archive in the model store (a plain ``NAME.mar``: never a
directory or a URL, which TorchServe would load code from), and the model admits calls only once a
worker is ready; unregistering or scaling a model down drains it first (no new calls, the ones in
flight answered) so no request is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from zooserve.errors import DeadlineExceeded, Overloaded, PayloadTooLarge, RequestError, ServiceError
from zooserve.serving.calls import REQUEST_ID, TIMEOUT, TIMING, timeout_from_header
from zooserve.serving.dispatch import Dispatcher
from zooserve.serving.upstream import Backend

log = logging.getLogger(__name__)
ARCHIVE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}\.mar")
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "host",
    "proxy-authorization",
    "proxy-authenticate",
}
DRAIN_TIMEOUT_S = 60.0
REGISTER_TIMEOUT_S = 600.0  # a registered model with no ready worker by then is admitted anyway
_BACKGROUND: set[asyncio.Task] = set()  # tasks kept referenced until they finish
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class RegistrationRefused(RequestError):
    """Only archives already in the model store may be registered (a plain NAME.mar)."""


def error_response(err: ServiceError, request_id: str | None = None) -> web.Response:
    headers = {"X-Request-Id": request_id} if request_id else {}
    if isinstance(err, Overloaded):
        headers["Retry-After"] = str(err.retry_after_s)
    return web.json_response(err.to_json(), status=err.status, headers=headers)


async def _pass_through(
    request: web.Request,
    backend: Backend,
    base: str,
    extra: dict[str, str] | None = None,
    timeout: float | None = None,
) -> tuple[int, bytes, CIMultiDict[str]]:
    """Send the request on to TorchServe as it came; (status, body, response headers)."""
    headers = CIMultiDict((k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP)
    for key, value in (extra or {}).items():
        headers[key] = value  # replaces whatever case the client used
    url = f"{base}{request.rel_url}"
    async with backend.http.request(
        request.method,
        url,
        data=await request.read(),
        headers=headers,
        timeout=aiohttp.ClientTimeout(total=timeout),
        allow_redirects=False,
    ) as resp:
        body = await resp.read()
        out = CIMultiDict((k, v) for k, v in resp.headers.items() if k.lower() not in HOP_BY_HOP)
        return resp.status, body, out


def inference_app(backend: Backend, dispatcher: Dispatcher, max_body: int) -> web.Application:
    base = backend.addresses.url("inference")

    async def predict(request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        if not backend.keys.allows(request.headers.get("Authorization"), "inference"):
            return await proxy(request)  # TorchServe answers a bad token its own way
        rid = request.headers.get(REQUEST_ID)
        if (request.content_length or 0) > max_body:
            return error_response(
                PayloadTooLarge(f"body of {request.content_length} bytes; the limit is {max_body}"), rid
            )
        try:
            timeout = timeout_from_header(request.headers.get(TIMEOUT))
            async with dispatcher.call("rest", model, rid, timeout) as outcome:
                call = outcome.call
                extra = call.forward_headers()
                if request.content_type == "application/x-www-form-urlencoded":
                    # curl's default for --data-binary: TorchServe would parse the bytes as a form
                    # and fail (500); the handlers take the body itself
                    extra["Content-Type"] = "application/octet-stream"
                try:
                    status, body, headers = await outcome.forward(
                        _pass_through(request, backend, base, extra, timeout=outcome.budget()),
                        lambda answer: answer[0] < 500,
                    )
                except DeadlineExceeded:
                    outcome.code = "504"
                    raise
                call.read_timing(headers.popall(TIMING, [None])[0])
                if status == 503:  # TorchServe's own refusal: no worker, or its queue is full
                    outcome.code = "503"
                    raise Overloaded(f"TorchServe refused the request: {body[:200].decode(errors='replace')}")
                outcome.code = str(status)
                headers.popall(REQUEST_ID, None)  # TorchServe's own id, and the handler's echo of ours
                headers["X-Request-Id"] = call.request_id
                return web.Response(status=status, body=body, headers=headers)
        except ServiceError as e:
            return error_response(e, rid)
        except web.HTTPRequestEntityTooLarge:  # a chunked body that grew past the limit
            return error_response(PayloadTooLarge(f"body over the limit of {max_body} bytes"), rid)
        except aiohttp.ClientError as e:
            return error_response(Overloaded(f"TorchServe is not reachable: {type(e).__name__}"), rid)

    async def ping(request: web.Request) -> web.StreamResponse:
        try:
            status, body, headers = await _pass_through(request, backend, base, timeout=10)
            if status != 200:
                return web.Response(status=status, body=body, headers=headers)
            pending = await not_ready(backend)
        except (aiohttp.ClientError, TimeoutError) as e:
            return web.json_response(
                {"status": "Unhealthy", "reason": f"TorchServe: {type(e).__name__}"}, status=503
            )
        if pending:
            return web.json_response({"status": "Unhealthy", "models_not_ready": pending}, status=503)
        return web.Response(status=status, body=body, headers=headers)

    proxy = _forwarder(backend, base, timeout=300)

    app = web.Application(client_max_size=max_body)
    app.router.add_route("POST", "/predictions/{model}", predict)
    app.router.add_route("POST", "/predictions/{model}/{version}", predict)
    app.router.add_route("PUT", "/predictions/{model}", predict)
    app.router.add_route("GET", "/ping", ping)
    app.router.add_route("*", "/{tail:.*}", proxy)
    return app


def _forwarder(backend: Backend, base: str, timeout: float) -> Handler:
    """A handler passing its request to TorchServe at ``base`` and its answer back unchanged."""

    async def forward(request: web.Request) -> web.StreamResponse:
        try:
            status, body, headers = await _pass_through(request, backend, base, timeout=timeout)
        except aiohttp.ClientError as e:
            return error_response(Overloaded(f"TorchServe is not reachable: {type(e).__name__}"))
        return web.Response(status=status, body=body, headers=headers)

    return forward


async def not_ready(backend: Backend) -> list[str]:
    """Models without a READY worker (TorchServe marks a worker ready after its warm-up)."""
    mgmt = backend.addresses.url("management")
    auth = backend.keys.header("management")
    timeout = aiohttp.ClientTimeout(total=10)
    async with backend.http.get(f"{mgmt}/models?limit=1000", headers=auth, timeout=timeout) as r:
        names = [m["modelName"] for m in (await r.json(content_type=None)).get("models", [])]
    return [name for name in names if not _ready(await _workers(backend, name))]


def _ready(workers: list[dict]) -> bool:
    return any(w.get("status") == "READY" for w in workers)


def management_app(backend: Backend, dispatcher: Dispatcher, model_store: Path) -> web.Application:
    forward = _forwarder(backend, backend.addresses.url("management"), timeout=900)

    async def register(request: web.Request) -> web.StreamResponse:
        url = request.query.get("url", "")
        try:
            check_archive(url, model_store)
        except RequestError as e:
            return error_response(e)
        if not backend.keys.allows(request.headers.get("Authorization"), "management"):
            return await forward(request)  # TorchServe refuses it
        model = request.query.get("model_name") or url.removesuffix(".mar")
        sync = request.query.get("synchronous", "").lower() == "true"
        return await registering(
            backend, dispatcher, model, forward(request), lambda r: r.status == 200, synchronous=sync
        )

    async def unregister(request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        if not backend.keys.allows(request.headers.get("Authorization"), "management"):
            return await forward(request)  # TorchServe refuses it
        return await drained(dispatcher, model, forward(request))

    async def scale(request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        if not backend.keys.allows(request.headers.get("Authorization"), "management"):
            return await forward(request)
        wanted = request.query.get("min_worker")
        if wanted is None or not wanted.isdigit() or int(wanted) >= len(await _workers(backend, model)):
            return await forward(request)  # not a scale-down (set-default, scale up): nothing to drain
        return await drained(dispatcher, model, forward(request))

    app = web.Application(client_max_size=1024 * 1024)
    app.router.add_route("POST", "/models", register)
    app.router.add_route("DELETE", "/models/{model}", unregister)
    app.router.add_route("DELETE", "/models/{model}/{version}", unregister)
    app.router.add_route("PUT", "/models/{model}", scale)
    app.router.add_route("PUT", "/models/{model}/{version}", scale)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


async def _workers(backend: Backend, model: str) -> list[dict]:
    """The model's workers as TorchServe describes them (every version's)."""
    url = f"{backend.addresses.url('management')}/models/{model}"
    timeout = aiohttp.ClientTimeout(total=10)
    async with backend.http.get(url, headers=backend.keys.header("management"), timeout=timeout) as r:
        described = await r.json(content_type=None) if r.status == 200 else []
    return [w for d in described if isinstance(d, dict) for w in d.get("workers", [])]


async def registering(
    backend: Backend,
    dispatcher: Dispatcher,
    model: str,
    action: Awaitable[Any],
    succeeded: Callable[[Any], bool],
    synchronous: bool = False,
) -> Any:
    """Register with ``action`` while ``model`` admits nothing (503 ModelLoading): TorchServe would
    queue its calls behind the worker's start. Calls are admitted again once a worker is READY
    (registration may return before that: ``synchronous=false``). A ``synchronous`` registration
    is answered once its calls are admitted, so a call right after it is served."""
    dispatcher.admission.hold(model)
    try:
        result = await action
    except BaseException:
        dispatcher.admission.reopen(model)
        raise
    if not succeeded(result):
        dispatcher.admission.reopen(model)
        return result
    task = asyncio.create_task(_reopen_when_ready(backend, dispatcher, model))
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)
    if synchronous:
        await asyncio.shield(task)  # the caller may go; the model still reopens
    return result


async def _reopen_when_ready(backend: Backend, dispatcher: Dispatcher, model: str) -> None:
    deadline = time.monotonic() + REGISTER_TIMEOUT_S
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                if _ready(await _workers(backend, model)):
                    return
            await asyncio.sleep(0.2)
        log.warning("%s has no ready worker %.0f s after its registration", model, REGISTER_TIMEOUT_S)
    finally:
        dispatcher.admission.reopen(model)


def check_archive(url: str, model_store: Path) -> None:
    """A registration names an archive of the model store: ``NAME.mar``, nothing else."""
    if not ARCHIVE.fullmatch(url) or not (model_store / url).is_file():
        raise RegistrationRefused(
            f"cannot register {url[:80]!r}: only archives in the model store may be registered (NAME.mar)"
        )


async def drained(
    dispatcher: Dispatcher, model: str, action: Awaitable[web.StreamResponse]
) -> web.StreamResponse:
    """Stop admitting calls for ``model``, wait for its calls in flight, then run ``action``."""
    idle = await dispatcher.admission.drain(model, DRAIN_TIMEOUT_S)
    if not idle:
        log.warning("%s still had calls in flight after %.0f s of draining", model, DRAIN_TIMEOUT_S)
    try:
        return await action
    finally:
        dispatcher.admission.reopen(model)


def metrics_app(dispatcher: Dispatcher) -> web.Application:
    async def metrics(request: web.Request) -> web.StreamResponse:
        body, content_type = dispatcher.telemetry.exposition(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", metrics)
    return app
