"""Typed errors and the one table that maps them to HTTP status and gRPC code.

Request errors (``RequestError``) are the client's fault: each becomes a 4xx with the JSON body
``{"code": ..., "type": ..., "message": ...}`` for that request alone, never for its batch-mates.
User errors (``UserError``) are CLI/build mistakes: one clear line and a non-zero exit.
"""

from __future__ import annotations

from dataclasses import dataclass


class ZooError(Exception):
    """Base of every error zooserve raises on purpose."""

    status: int = 500
    grpc_code: str = "INTERNAL"  # name of a grpc.StatusCode member

    @property
    def type(self) -> str:
        return type(self).__name__

    def to_json(self) -> dict[str, object]:
        return {"code": self.status, "type": self.type, "message": str(self)}


# ---- request errors: one row each of the table -------------------------------------------------
class RequestError(ZooError):
    status = 400
    grpc_code = "INVALID_ARGUMENT"


class EmptyBody(RequestError):
    """The request had no payload."""


class InvalidImage(RequestError):
    """Bytes that do not decode to an image (truncated, corrupt, not an image)."""


class UnsupportedMediaType(RequestError):
    status = 415
    grpc_code = "INVALID_ARGUMENT"


class ImageTooLarge(RequestError):
    """Declared pixel count above the configured budget (decompression bombs land here)."""

    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class PayloadTooLarge(RequestError):
    status = 413
    grpc_code = "RESOURCE_EXHAUSTED"


class InvalidText(RequestError):
    """Empty, non-UTF-8 or otherwise unusable text."""


class InvalidJSON(RequestError):
    """Malformed JSON, or JSON without the expected fields."""


class InvalidParameter(RequestError):
    """A request option (topk, beam size, ...) out of range."""


class InvalidTensor(RequestError):
    """An Open Inference Protocol (v2) request whose tensors do not fit the model's metadata:
    unknown input or output name, wrong datatype or shape, malformed raw or binary data."""


class Unauthorized(RequestError):
    """A missing, wrong or expired token."""

    status = 401
    grpc_code = "UNAUTHENTICATED"


class ModelNotReady(ZooError):
    status = 503
    grpc_code = "UNAVAILABLE"


class InferenceFailed(ZooError):
    """The model itself failed on a well-formed batch: a server error, not the client's."""

    status = 500
    grpc_code = "INTERNAL"


# ---- user errors (CLI, build) ------------------------------------------------------------------
class UserError(ZooError):
    """A mistake by the person at the command line; printed as one line, exit code 2."""

    status = 400


class UnknownModel(UserError):
    status = 404
    grpc_code = "NOT_FOUND"


class WeightsError(UserError):
    """A weights file that cannot be used: wrong keys, not a tensor file, truncated."""


class UnsupportedFormat(UserError):
    """An export format that does not apply to this model or this machine."""


class ConfigError(UserError):
    pass


class ServerError(UserError):
    """The server could not be started, stopped or reached."""

    status = 503
    grpc_code = "UNAVAILABLE"


@dataclass(frozen=True)
class ErrorRow:
    type: str
    status: int
    grpc_code: str
    meaning: str


def error_table() -> list[ErrorRow]:
    """Every request/user error with its HTTP status and gRPC code (documented and tested)."""
    abstract = (ZooError, RequestError, UserError)
    return [
        ErrorRow(cls.__name__, cls.status, cls.grpc_code, (cls.__doc__ or "").strip())
        for cls in _all_classes()
        if cls not in abstract
    ]


def from_json(body: dict[str, object]) -> ZooError:
    """Rebuild a typed error from its JSON body (used by the client)."""
    name = str(body.get("type", ""))
    cls: type[ZooError] = next((c for c in _all_classes() if c.__name__ == name), ZooError)
    err = cls(str(body.get("message", "")))
    if cls is ZooError:
        err.status = int(body.get("code", 500))  # type: ignore[misc]
    return err


def _all_classes() -> list[type[ZooError]]:
    out: list[type[ZooError]] = []
    stack: list[type[ZooError]] = [ZooError]
    while stack:
        cls = stack.pop(0)
        out.append(cls)
        stack.extend(cls.__subclasses__())
    return out
