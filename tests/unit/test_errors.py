from __future__ import annotations

from zooserve import errors


def test_table_maps_every_request_error_to_4xx_and_a_grpc_code() -> None:
    rows = {r.type: r for r in errors.error_table()}
    for name in (
        "EmptyBody",
        "InvalidImage",
        "NoDigitFound",
        "UnsupportedMediaType",
        "ImageTooLarge",
        "PayloadTooLarge",
        "InvalidText",
        "InvalidJSON",
        "InvalidParameter",
    ):
        assert 400 <= rows[name].status < 500, name
        assert rows[name].grpc_code in ("INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"), name
    assert rows["ImageTooLarge"].status == 413
    assert rows["UnsupportedMediaType"].status == 415
    assert rows["NoDigitFound"].status == 422  # a valid image, but nothing for a digit model to read
    assert rows["InferenceFailed"].status == 500  # a model bug is never reported as the client's fault


def test_json_round_trip_keeps_the_type() -> None:
    body = errors.InvalidImage("truncated").to_json()
    assert body == {"code": 400, "type": "InvalidImage", "message": "truncated"}
    again = errors.from_json(body)
    assert isinstance(again, errors.InvalidImage) and str(again) == "truncated"


def test_unknown_type_in_json_falls_back_to_remote_error_with_status() -> None:
    err = errors.from_json({"code": 418, "type": "SomeoneElsesException", "message": "nope"})
    assert type(err) is errors.RemoteError and err.status == 418 and str(err) == "nope"


def test_table_is_explicit_and_complete() -> None:
    """Every answered error class is a row, and nothing else is."""

    def subclasses(cls: type) -> set[type]:
        return {cls, *(c for sub in cls.__subclasses__() for c in subclasses(sub))}

    concrete = subclasses(errors.ServiceError) - {
        errors.ServiceError,
        errors.RequestError,
        errors.RemoteError,
    }
    assert concrete == set(errors.SERVICE_ERRORS)


def test_user_errors_carry_no_http_status() -> None:
    assert not hasattr(errors.UnknownModel("x"), "status")
    assert not hasattr(errors.ServerError("x"), "grpc_code")


def test_client_text_is_one_short_line_without_memory_addresses() -> None:
    from zooserve.errors import client_text

    e = ValueError("cannot identify image file <_io.BytesIO object at 0x7efcc895eac0>\nsecond line")
    assert client_text(e) == "cannot identify image file an object"
    assert client_text(KeyError()) == "KeyError" and len(client_text(ValueError("x" * 500))) == 200
