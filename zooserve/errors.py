"""Typed errors and the one table that maps each answered error to its HTTP status and gRPC code.

Two families, never mixed:

- ``ServiceError``: what the server answers for one request. ``RequestError`` subclasses are the
  client's fault (4xx); each becomes ``{"code": ..., "type": ..., "message": ...}`` for that request
  alone, never for its batch-mates. ``SERVICE_ERRORS`` is the table, written out explicitly.
- ``UserError``: a mistake at the command line or in a build (a bad flag, a weights file that does
  not fit). The CLI prints one line and exits 2; these carry no HTTP status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


class ZooError(Exception):
    """Base of every error zooserve raises on purpose."""

    @property
    def type(self) -> str:
        return type(self).__name__


# ---- service errors: answered to one request ----------------------------------------------------
class ServiceError(ZooError):
    """An error a request is answered with. ``status`` and ``grpc_code`` come from the table."""

    status: int = 500
    grpc_code: str = "INTERNAL"  # name of a grpc.StatusCode member

    def to_json(self) -> dict[str, object]:
        return {"code": self.status, "type": self.type, "message": str(self)}


class RequestError(ServiceError):
    """The client's mistake: a 4xx for that request alone."""

    status = 400
    grpc_code = "INVALID_ARGUMENT"


class MalformedRequest(RequestError):
    """A request that cannot be read at all (its fields, headers or structure)."""


class EmptyBody(RequestError):
    """The request had no payload."""


class InvalidImage(RequestError):
    """Bytes that do not decode to an image (truncated, corrupt, not an image)."""


class NoDigitFound(RequestError):
    """An image a digit model finds no digit in: blank, ink all over it, or only a speck."""

    status = 422


class UnsupportedMediaType(RequestError):
    """A payload of a kind the model does not take (text to an image model, an unknown format)."""

    status = 415


class ImageTooLarge(RequestError):
    """More pixels, or a more extreme shape, than the model's budget (decompression bombs)."""

    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class PayloadTooLarge(RequestError):
    """A body above the size the model accepts."""

    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class InvalidText(RequestError):
    """Empty, non-UTF-8 or otherwise unusable text."""


class InvalidJSON(RequestError):
    """Malformed JSON, or JSON without the expected fields."""


class InvalidParameter(RequestError):
    """A request option (topk, beam size, ...) of the wrong type or out of range."""


class ModelNotFound(ServiceError):
    """The server holds no model (or model version) of that name."""

    status = 404
    grpc_code = "NOT_FOUND"


class InvalidTensor(RequestError):
    """An Open Inference Protocol (v2) request whose tensors do not fit the model's metadata:
    unknown input or output name, wrong datatype or shape, malformed raw or binary data."""


class Unauthorized(RequestError):
    """A missing, wrong or expired token."""

    status = 401
    grpc_code = "UNAUTHENTICATED"


class Overloaded(ServiceError):
    """The model has as many requests in flight as it can answer in time: retry after Retry-After."""

    status = 503
    grpc_code = "UNAVAILABLE"

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelUnloading(Overloaded):
    """The model is being unregistered or scaled down: it takes no new requests."""


class ModelLoading(Overloaded):
    """The model is being registered: it takes requests once a worker is ready."""


class DeadlineExceeded(ServiceError):
    """The request's deadline passed before its answer was ready (queue time included)."""

    status = 504
    grpc_code = "DEADLINE_EXCEEDED"


class InferenceFailed(ServiceError):
    """The model itself failed on a well-formed request: the server's fault, not the client's."""


class RemoteError(ServiceError):
    """A reply the client could not map to a row of the table (its status is the reply's)."""

    def __init__(self, message: str, status: int = 500, grpc_code: str = "UNKNOWN") -> None:
        super().__init__(message)
        self.status = status
        self.grpc_code = grpc_code


SERVICE_ERRORS: tuple[type[ServiceError], ...] = (
    MalformedRequest,
    EmptyBody,
    InvalidImage,
    NoDigitFound,
    UnsupportedMediaType,
    ImageTooLarge,
    PayloadTooLarge,
    InvalidText,
    InvalidJSON,
    InvalidParameter,
    InvalidTensor,
    Unauthorized,
    ModelNotFound,
    Overloaded,
    ModelUnloading,
    ModelLoading,
    DeadlineExceeded,
    InferenceFailed,
)
_BY_TYPE = {cls.__name__: cls for cls in SERVICE_ERRORS}


# ---- user errors: the command line and builds ---------------------------------------------------
class UserError(ZooError):
    """A mistake by the person at the command line; printed as one line, exit code 2."""


class UnknownModel(UserError):
    """A model name the registry does not hold."""


class WeightsError(UserError):
    """A weights file that cannot be used: wrong keys, not a tensor file, truncated."""


class UnsupportedFormat(UserError):
    """An export format or precision that does not apply to this model or this machine."""


class ConfigError(UserError):
    """A configuration, archive or option file that cannot be used."""


class AccuracyGateFailed(UserError):
    """A build whose model is less accurate than its gate allows (reduced precision, trained demo)."""


class ServerError(UserError):
    """The server could not be started, stopped or reached."""


@dataclass(frozen=True)
class ErrorRow:
    type: str
    status: int
    grpc_code: str
    meaning: str


_ADDRESS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")  # e.g. Pillow's "<_io.BytesIO object at 0x7f..>"


def client_text(e: BaseException, limit: int = 200) -> str:
    """An unexpected exception's first line as a client may read it: short, and without the
    process's memory addresses (object reprs)."""
    text = _ADDRESS.sub("an object", str(e).strip())
    return text.splitlines()[0][:limit] if text else type(e).__name__


def error_table() -> list[ErrorRow]:
    """Every answered error with its HTTP status and gRPC code (documented and tested)."""
    return [
        ErrorRow(cls.__name__, cls.status, cls.grpc_code, (cls.__doc__ or "").strip())
        for cls in SERVICE_ERRORS
    ]


def from_json(body: dict[str, object], status: int | None = None) -> ServiceError:
    """Rebuild a typed error from its JSON body (the client raises what the server answered)."""
    cls = _BY_TYPE.get(str(body.get("type", "")))
    message = str(body.get("message", ""))
    if cls is None:
        code = body.get("code")
        return RemoteError(message or str(body), status or (code if isinstance(code, int) else 500))
    return cls(message)
