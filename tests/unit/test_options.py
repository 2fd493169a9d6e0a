"""Per-request options read strictly (``zooserve.runtime.options``): whatever a client sends, the
outcome is the option (of the right type, in range) or an ``InvalidParameter`` for that request alone.

The last tests push JSON-ish option values through real pipelines (tiny_resnet, tiny_bert,
TorchScript): a 200 must honour the option exactly, anything else must be the request's own 4xx,
and its batch-mate must be unaffected.
"""

from __future__ import annotations

import math
import os
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from zooserve.errors import InvalidParameter
from zooserve.runtime.bundle import load_bundle
from zooserve.runtime.options import flag_option, float_option, int_option, raw_option
from zooserve.runtime.pipeline import Request, run_batch
from zooserve.runtime.tasks import make_pipeline

EXAMPLES = int(os.environ.get("ZOOSERVE_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize="ZOOSERVE_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ_FAST = settings(FUZZ, max_examples=max(50, EXAMPLES // 2))
FUZZ_FORWARD = settings(FUZZ, max_examples=max(12, EXAMPLES // 16))  # a forward each: a few
MAX_MESSAGE = 600  # an error message stays short whatever the value (40 characters of it, escaped)


def _body(name: str, value: Any) -> Request:
    return Request(body={name: value})


def _header(name: str, value: str) -> Request:
    return Request(body=b"", headers={"x-" + name.replace("_", "-"): value})


# ---- where an option comes from ------------------------------------------------------------------
def test_header_wins_over_body_and_underscores_are_dashes() -> None:
    req = Request(body={"beam_size": 7}, headers={"x-beam-size": "3"})
    assert raw_option(req, "beam_size") == "3"
    assert int_option(req, "beam_size", 1, 1, 20) == 3
    assert raw_option(Request(body={"beam_size": 7}), "beam_size") == 7
    assert raw_option(Request(body=b"{}"), "beam_size") is None  # bytes bodies carry no options
    assert raw_option(Request(body=["beam_size"]), "beam_size") is None


def test_absent_or_null_option_is_the_default() -> None:
    for req in (Request(body=None), Request(body={}), Request(body={"topk": None})):
        assert int_option(req, "topk", 5, 1, 10) == 5
        assert float_option(req, "topk", 0.5, 0, 1) == 0.5
        assert flag_option(req, "topk") is False


# ---- integers ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, expected",
    [(3, 3), (3.0, 3), ("3", 3), (" 3 ", 3), ("+3", 3), ("-0", 0), ("007", 7), (1e1, 10)],
)
def test_int_option_accepts_integral_values(raw: Any, expected: int) -> None:
    value = int_option(_body("n", raw), "n", 1, 0, 10)
    assert value == expected and type(value) is int


@pytest.mark.parametrize(
    "raw",
    [
        True,
        False,
        2.5,
        float("nan"),
        float("inf"),
        -float("inf"),
        "2.5",
        "3e0",
        "0x3",
        "1_0",
        "three",
        "",
        "1" * 13,
        "3 4",
        [3],
        {"v": 3},
        b"3",
        11,
        -1,
        10**20,
        1e300,
        "99999999999",
    ],
)
def test_int_option_refuses_everything_else(raw: Any) -> None:
    with pytest.raises(InvalidParameter) as exc:
        int_option(_body("n", raw), "n", 1, 0, 10)
    assert exc.value.status == 400 and "n must" in str(exc.value) and len(str(exc.value)) <= MAX_MESSAGE


def test_int_option_from_a_header_is_range_checked() -> None:
    assert int_option(_header("topk", "10"), "topk", 5, 1, 10) == 10
    for text in ("0", "11", "true", "5.0", "٣x"):
        with pytest.raises(InvalidParameter):
            int_option(_header("topk", text), "topk", 5, 1, 10)


@pytest.mark.parametrize("reader", ["int", "float", "flag"])
def test_an_enormous_integer_is_refused_as_invalid_parameter(reader: str) -> None:
    req = _body("n", 10**5000)
    with pytest.raises(InvalidParameter):
        if reader == "int":
            int_option(req, "n", 1, 0, 10)
        elif reader == "float":
            float_option(req, "n", 0.5, 0, 1)
        else:
            flag_option(req, "n")


@pytest.mark.parametrize("text", ["٣", "５", "१०"])
def test_only_ascii_digits_are_numbers(text: str) -> None:
    with pytest.raises(InvalidParameter):
        int_option(_header("topk", text), "topk", 5, 1, 10)


# ---- floats --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, expected",
    [
        (0, 0.0),
        (1, 1.0),
        (0.25, 0.25),
        ("0.25", 0.25),
        (".5", 0.5),
        ("1.", 1.0),
        ("2e-1", 0.2),
        (" 1E0 ", 1.0),
    ],
)
def test_float_option_accepts_finite_numbers_in_range(raw: Any, expected: float) -> None:
    value = float_option(_body("x", raw), "x", 0.5, 0.0, 2.0)
    assert value == expected and type(value) is float


@pytest.mark.parametrize(
    "raw",
    [
        True,
        False,
        float("nan"),
        float("inf"),
        "nan",
        "inf",
        "Infinity",
        "1e999",
        "-1e999",
        "2.1",
        -0.1,
        "1e",
        "e1",
        "1.2.3",
        "0x1",
        "1_0",
        "",
        [1.0],
        {"x": 1},
        2**53,
        -(2**60),
        "1" * 13,
    ],
)
def test_float_option_refuses_everything_else(raw: Any) -> None:
    with pytest.raises(InvalidParameter) as exc:
        float_option(_body("x", raw), "x", 0.5, 0.0, 2.0)
    assert exc.value.status == 400 and len(str(exc.value)) <= MAX_MESSAGE


SEPARATORS = {"\x1c", "\x1d", "\x1e", "\x1f"}  # str.strip() removes them, float() does not accept them


@pytest.mark.parametrize("text", ["0\x1f", "\x1c1.5", "2\x1e"])
def test_float_option_strips_what_it_matched(text: str) -> None:
    assert int_option(_header("x", text.replace(".5", "")), "x", 0, 0, 2) in (0, 1, 2)
    assert float_option(_header("x", text), "x", 0.0, 0.0, 2.0) == float(text.strip())


def test_a_big_integer_is_not_rounded_into_range() -> None:
    """2**53 + 1 rounds to 2**53 as a float: such values are refused rather than silently changed."""
    with pytest.raises(InvalidParameter):
        float_option(_body("x", 2**53 + 1), "x", 0.0, 0.0, 1e300)
    assert float_option(_body("x", 2**53 - 1), "x", 0.0, 0.0, 1e300) == float(2**53 - 1)


# ---- flags ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, expected",
    [
        (True, True),
        (False, False),
        (1, True),
        (0, False),
        ("1", True),
        ("0", False),
        ("TRUE", True),
        (" Yes ", True),
        ("on", True),
        ("Off", False),
        ("no", False),
        ("", False),
    ],
)
def test_flag_option_values(raw: Any, expected: bool) -> None:
    assert flag_option(_body("attention", raw), "attention") is expected


@pytest.mark.parametrize("raw", [2, -1, 1.0, 0.0, "2", "y", "n", "truthy", "null", [True], {"a": 1}, b"1"])
def test_flag_option_refuses_anything_else(raw: Any) -> None:
    with pytest.raises(InvalidParameter):
        flag_option(_body("attention", raw), "attention")


# ---- structure fuzzing: the outcome is the option or InvalidParameter, never anything else -------
json_ish = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.from_regex(r"\s*[+-]?\d{0,14}(\.\d{0,14})?([eE][+-]?\d{0,4})?\s*", fullmatch=True),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
bounds = st.tuples(st.integers(-50, 50), st.integers(0, 100)).map(lambda t: (t[0], t[0] + t[1]))


@FUZZ_FAST
@given(raw=json_ish, lohi=bounds, as_header=st.booleans())
def test_int_option_outcome(raw: Any, lohi: tuple[int, int], as_header: bool) -> None:
    lo, hi = lohi
    if as_header and not isinstance(raw, str):
        raw = str(raw)
    req = _header("n", raw) if as_header else _body("n", raw)
    try:
        value = int_option(req, "n", lo, lo, hi)
    except InvalidParameter as e:
        assert len(str(e)) <= MAX_MESSAGE
        return
    assert type(value) is int and lo <= value <= hi
    if raw is not None:  # the value is the client's, not a rounding of it
        assert value == (float(raw) if isinstance(raw, (int, float)) else int(raw.strip()))


@FUZZ_FAST
@given(raw=json_ish, lohi=bounds, as_header=st.booleans())
def test_float_option_outcome(raw: Any, lohi: tuple[int, int], as_header: bool) -> None:
    lo, hi = lohi
    if as_header and not isinstance(raw, str):
        raw = str(raw)
    assume(not (isinstance(raw, str) and set(raw) & SEPARATORS))  # test_float_option_strips_what_it_matched
    req = _header("x", raw) if as_header else _body("x", raw)
    try:
        value = float_option(req, "x", float(lo), float(lo), float(hi))
    except InvalidParameter as e:
        assert len(str(e)) <= MAX_MESSAGE
        return
    assert type(value) is float and math.isfinite(value) and lo <= value <= hi


@FUZZ_FAST
@given(raw=json_ish, as_header=st.booleans())
def test_flag_option_outcome(raw: Any, as_header: bool) -> None:
    if as_header and not isinstance(raw, str):
        raw = str(raw)
    req = _header("flag", raw) if as_header else _body("flag", raw)
    try:
        value = flag_option(req, "flag")
    except InvalidParameter as e:
        assert len(str(e)) <= MAX_MESSAGE
        return
    assert type(value) is bool


@FUZZ_FAST
@given(n=st.integers(-(10**11), 10**11), spaces=st.sampled_from(["", " ", "\t", "  "]), plus=st.booleans())
def test_integer_strings_round_trip(n: int, spaces: str, plus: bool) -> None:
    text = spaces + ("+" if plus and n >= 0 else "") + str(n) + spaces
    assert int_option(_header("n", text), "n", 0, -(10**11), 10**11) == n
    assert float_option(_header("n", text), "n", 0.0, -(10**11), 10**11) == float(n)


# ---- through real pipelines ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def classify(build_cache):
    return make_pipeline(
        load_bundle(build_cache("tiny_resnet", format="torchscript").bundle_dir, device="cpu")
    )


@pytest.fixture(scope="module")
def text(build_cache):
    return make_pipeline(load_bundle(build_cache("tiny_bert", format="torchscript").bundle_dir, device="cpu"))


def _jpeg(seed: int) -> bytes:
    from torchvision.io import encode_jpeg

    g = torch.Generator().manual_seed(seed)
    return bytes(encode_jpeg(torch.randint(0, 256, (3, 90, 120), dtype=torch.uint8, generator=g)).numpy())


JPEG = _jpeg(0)


def _expected_topk(raw: Any, default: int, classes: int) -> int | None:
    """What int_option makes of ``raw`` for topk (None: it must be refused)."""
    try:
        return int_option(_body("topk", raw), "topk", default, 1, classes)
    except InvalidParameter:
        return None


@FUZZ_FORWARD
@given(value=json_ish.map(lambda v: v if isinstance(v, str) else str(v)))
def test_topk_header_through_the_classify_pipeline(classify, value: str) -> None:
    labels = len(classify.labels)
    good, weird = run_batch(classify, [Request(JPEG), Request(JPEG, headers={"x-topk": value})])
    assert good.status == 200 and len(good.body["predictions"]) == classify.topk
    expected = _expected_topk(value, classify.topk, labels)
    if expected is None:
        assert (weird.status, weird.body["type"]) == (400, "InvalidParameter"), weird.body
    else:
        assert weird.status == 200 and len(weird.body["predictions"]) == expected
        assert weird.body["predictions"] == good.body["predictions"][:expected]


@FUZZ_FORWARD
@given(
    body=st.dictionaries(st.sampled_from(["text", "topk", "x", "TOPK"]), json_ish, max_size=3).flatmap(
        lambda d: st.just(d) | st.builds(lambda t: {**d, "text": t}, st.text(min_size=1, max_size=40))
    )
)
def test_json_bodies_through_the_text_pipeline(text, body: dict[str, Any]) -> None:
    """JSON ``{"text": ..., "topk": ...}`` bodies: 200 honours topk, else the request's own 4xx."""
    good_req = Request("a fine sentence")
    good_alone = run_batch(text, [good_req])[0]
    weird, good = run_batch(text, [Request(body, content_type="application/json"), good_req])
    assert good.status == 200 and good.body["predictions"] == good_alone.body["predictions"]
    assert 400 <= weird.status < 500 or weird.status == 200, weird.body
    if weird.status == 200:
        assert len(weird.body["predictions"]) == _expected_topk(body.get("topk"), text.topk, len(text.labels))
    elif "topk" in body and _expected_topk(body["topk"], text.topk, len(text.labels)) is None:
        assert weird.body["type"] == "InvalidParameter"
