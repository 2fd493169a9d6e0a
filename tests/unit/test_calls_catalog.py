"""The gateway's view of one call (``serving/calls.py``: ids, deadlines, the handler's timing
header) and of each served model (``serving/catalog.py``: names, archives, admission policies)."""

from __future__ import annotations

import json
import math
import os
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from zooserve.errors import InvalidParameter, ModelNotFound
from zooserve.manifest import CONFIG_FILE, MANIFEST_FILE, ServingOptions
from zooserve.serving import catalog as catalog_module
from zooserve.serving.calls import MAX_TIMEOUT_S, Call, new_call, timeout_from_header
from zooserve.serving.catalog import QUEUE_SIZE, Catalog, Policy, default_policy, policy_from

PROPS = settings(max_examples=150, deadline=None, derandomize=True)


# ---- timeouts from the client --------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, seconds",
    [(None, None), ("1500", 1.5), ("0.5", 0.0005), (" 250 ", 0.25), ("3600000", MAX_TIMEOUT_S)],
)
def test_timeout_from_header(value: str | None, seconds: float | None) -> None:
    assert timeout_from_header(value) == seconds


@pytest.mark.parametrize(
    "value",
    ["", "abc", "0", "-5", "-0", "nan", "NaN", "inf", "-inf", "1e999", "3600000.1", "1e10", "5ms", "0x10"],
)
def test_a_malformed_timeout_is_the_clients_400(value: str) -> None:
    with pytest.raises(InvalidParameter) as exc:
        timeout_from_header(value)
    assert exc.value.status == 400 and "X-Request-Timeout-Ms" in str(exc.value)


@PROPS
@given(value=st.text(max_size=60) | st.from_regex(r"\s*[+-]?\d{0,12}(\.\d{0,6})?([eE][+-]?\d{1,3})?\s*"))
def test_timeout_from_header_is_a_bounded_number_or_a_400(value: str) -> None:
    try:
        seconds = timeout_from_header(value)
    except InvalidParameter as e:
        assert len(str(e)) < 300  # the value is quoted cut to 40 characters
        return
    assert seconds is not None and math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT_S


# ---- new calls -----------------------------------------------------------------------------------
def test_new_call_keeps_a_valid_id_and_fixes_the_deadline_on_arrival() -> None:
    before = time.time()
    call = new_call("resnet18", "client-42.a:b_c", 2.0, default_s=10.0)
    assert call.model == "resnet18" and call.request_id == "client-42.a:b_c"
    assert before <= call.arrived <= time.time() and call.deadline == pytest.approx(call.arrived + 2.0)
    assert 0 < call.remaining() <= 2.0
    default = new_call("m", None, None, default_s=7.5)
    assert default.deadline == pytest.approx(default.arrived + 7.5)


@pytest.mark.parametrize(
    "rid",
    [
        None,
        "",
        "has space",
        "new\nline",
        "a" * 129,
        "ünï",
        "semi;colon",
        'quote"',
        "a/b",
        "x\r\nSet-Cookie: y",
    ],
)
def test_an_unusable_request_id_is_replaced(rid: str | None) -> None:
    call = new_call("m", rid, None, 1.0)
    assert call.request_id != rid and len(call.request_id) == 32 and int(call.request_id, 16) >= 0


def test_ids_are_unique_per_call() -> None:
    assert len({new_call("m", None, None, 1.0).request_id for _ in range(50)}) == 50


def test_forward_headers_carry_the_id_and_an_absolute_ms_deadline() -> None:
    call = Call("m", "rid-1", arrived=1_700_000_000.0, deadline=1_700_000_012.3456)
    assert call.forward_headers() == {"x-request-id": "rid-1", "x-zooserve-deadline": "1700000012345"}


# ---- the handler's timing header -----------------------------------------------------------------
def test_read_timing_parses_the_handlers_header() -> None:
    call = Call("m", "r", 0.0, 0.0)
    call.read_timing(
        "start=1700000000.125000,batch=8,decode=0.001000,preprocess=0.002,inference=0.5,handler=0.6"
    )
    assert call.timing == {
        "start": 1700000000.125,
        "batch": 8.0,
        "decode": 0.001,
        "preprocess": 0.002,
        "inference": 0.5,
        "handler": 0.6,
    }


@pytest.mark.parametrize("header", [None, "", ",,,", "garbage", "a=b,c", "=", "x=1=2"])
def test_read_timing_ignores_what_it_cannot_read(header: str | None) -> None:
    call = Call("m", "r", 0.0, 0.0)
    call.read_timing(header)
    assert all(isinstance(v, float) for v in call.timing.values())
    assert "a" not in call.timing and "x" not in call.timing


@PROPS
@given(header=st.text(max_size=200))
def test_read_timing_never_raises(header: str) -> None:
    call = Call("m", "r", 0.0, 0.0)
    call.read_timing(header)
    assert all(isinstance(v, float) for v in call.timing.values())


# ---- admission policies from model-config.yaml ---------------------------------------------------
def test_the_default_policy() -> None:
    p = default_policy()
    assert p == Policy(deadline_s=ServingOptions.deadline_ms / 1e3, floor=4, cap=QUEUE_SIZE)


@pytest.mark.parametrize(
    "config, policy",
    [
        ({"batchSize": 8, "maxWorkers": 2}, Policy(10.0, 16, QUEUE_SIZE)),  # a full batch per worker
        ({"batchSize": 8, "minWorkers": 3}, Policy(10.0, 24, QUEUE_SIZE)),
        ({"batchSize": 1}, Policy(10.0, 4, QUEUE_SIZE)),  # never below 4
        (
            {"batchSize": 64, "maxWorkers": 4, "jobQueueSize": 100},
            Policy(10.0, 100, 100),
        ),  # never above the queue
        ({"zooserve": {"deadline_ms": 2500}}, Policy(2.5, 4, QUEUE_SIZE)),
        ({"zooserve": None, "jobQueueSize": "16"}, Policy(10.0, 4, 16)),
    ],
)
def test_policy_from_model_config(config: dict[str, Any], policy: Policy) -> None:
    assert policy_from(config) == policy


# ---- the catalog ---------------------------------------------------------------------------------
def _mar(store: Path, name: str, meta: dict[str, Any] | None, config: Any = None) -> Path:
    path = store / f"{name}.mar"
    with zipfile.ZipFile(path, "w") as mar:
        if meta is not None:
            mar.writestr(MANIFEST_FILE, json.dumps(meta))
        if config is not None:
            mar.writestr(CONFIG_FILE, config if isinstance(config, str) else yaml.safe_dump(config))
        mar.writestr("model.pt", b"\x00" * 16)
    return path


def test_a_real_archive_gives_task_platform_and_policy(tmp_path: Path) -> None:
    _mar(
        tmp_path,
        "resnet18",
        {"name": "resnet18", "task": "classify", "format": "torchscript"},
        {"batchSize": 4, "maxWorkers": 2, "jobQueueSize": 64, "zooserve": {"deadline_ms": 1500, "topk": 3}},
    )
    info = Catalog(tmp_path).get("resnet18")
    assert (info.name, info.task, info.platform) == ("resnet18", "classify", "pytorch_torchscript")
    assert info.policy == Policy(deadline_s=1.5, floor=8, cap=64)


def test_models_without_a_usable_archive_get_the_default_policy(tmp_path: Path) -> None:
    (tmp_path / "corrupt.mar").write_bytes(b"PK\x03\x04 not really a zip")
    _mar(tmp_path, "nomanifest", None, {"batchSize": 8})
    _mar(tmp_path, "badjson", None)
    with zipfile.ZipFile(tmp_path / "badjson.mar", "a") as mar:
        mar.writestr(MANIFEST_FILE, "{not json")
    _mar(tmp_path, "badyaml", {"task": "classify"}, "batchSize: [unclosed")
    cat = Catalog(tmp_path)
    for name in ("absent", "corrupt", "nomanifest", "badjson", "badyaml"):
        info = cat.get(name)
        assert (info.task, info.platform, info.policy) == (None, "torchserve", default_policy()), name


def test_an_archive_without_a_config_or_task(tmp_path: Path) -> None:
    _mar(tmp_path, "bare", {"name": "bare"})
    _mar(tmp_path, "listconfig", {"task": "caption", "format": "aoti"}, [1, 2, 3])
    cat = Catalog(tmp_path)
    assert (cat.get("bare").task, cat.get("bare").platform, cat.get("bare").policy) == (
        None,
        "pytorch_torchserve",
        default_policy(),
    )
    assert cat.get("listconfig").policy == default_policy() and cat.get("listconfig").task == "caption"


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "../resnet18",
        "a/b",
        "a\\b",
        ".hidden",
        "-dash",
        "a b",
        "a" * 129,
        "ü",
        "a\x00b",
        "name.mar/x",
    ],
)
def test_bad_names_are_model_not_found(tmp_path: Path, name: str) -> None:
    _mar(tmp_path, "resnet18", {"task": "classify"})
    with pytest.raises(ModelNotFound) as exc:
        Catalog(tmp_path).get(name)
    assert exc.value.status == 404 and exc.value.grpc_code == "NOT_FOUND"


@pytest.mark.parametrize("name", ["resnet18\n", "x\n"])
def test_a_name_with_a_trailing_newline_is_model_not_found(tmp_path: Path, name: str) -> None:
    with pytest.raises(ModelNotFound):
        Catalog(tmp_path).get(name)


def test_an_archive_is_read_again_when_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog_module, "RECHECK_S", 60.0)  # however slow this machine is today
    path = _mar(tmp_path, "m", {"task": "classify", "format": "aoti"}, {"zooserve": {"deadline_ms": 1000}})
    cat = Catalog(tmp_path)
    assert cat.get("m").policy.deadline_s == 1.0
    _mar(tmp_path, "m", {"task": "caption", "format": "aoti"}, {"zooserve": {"deadline_ms": 20000}})
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert cat.get("m").policy.deadline_s == 1.0  # looked at no more than once per RECHECK_S
    monkeypatch.setattr(catalog_module, "RECHECK_S", 0.0)
    info = cat.get("m")
    assert (info.task, info.policy.deadline_s) == ("caption", 20.0)
    path.unlink()
    assert cat.get("m").task is None  # unregistered from the store: the default again


@pytest.mark.parametrize(
    "config",
    [
        {"batchSize": "eight"},
        {"batchSize": None},
        {"jobQueueSize": "lots"},
        {"zooserve": {"deadline_ms": "soon"}},
        {"zooserve": {"deadline_ms": None}},
        {"zooserve": ["deadline_ms"]},
        {"zooserve": {"deadline_ms": float("inf")}},
        {"zooserve": {"deadline_ms": -5}},
    ],
)
def test_a_malformed_model_config_gives_a_usable_policy(tmp_path: Path, config: dict[str, Any]) -> None:
    _mar(tmp_path, "m", {"task": "classify", "format": "aoti"}, config)
    policy = Catalog(tmp_path).get("m").policy
    assert math.isfinite(policy.deadline_s) and policy.deadline_s > 0 and 0 < policy.floor <= policy.cap
