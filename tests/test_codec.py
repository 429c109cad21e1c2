"""The message codec: a versioned JSON envelope, optional msgpack, never pickle."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import math
import pickle
import uuid
from collections import OrderedDict, namedtuple
from typing import Any

import hypothesis.strategies as st
import msgspec
import pytest
from hypothesis import given, settings

from dtq_core.codec import (
    ENVELOPE_VERSION,
    MSGPACK_MARK,
    check_json,
    decode_message,
    dumps,
    encode_message,
    json_form,
    loads,
)
from dtq_core.errors import SerializationError

# JSON values that survive a round trip unchanged (no NaN, string keys, lists not tuples).
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
ARGS = st.lists(JSON_VALUES, max_size=5)
KWARGS = st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=5)
OPTS = st.dictionaries(st.text(min_size=1, max_size=10), JSON_SCALARS, max_size=3)


def _envelope(**overrides: Any) -> bytes:
    msg: dict[str, Any] = {"v": ENVELOPE_VERSION, "id": "t1", "task": "app.add", "args": [1]}
    msg["kwargs"] = {}
    msg.update(overrides)
    return json.dumps({k: v for k, v in msg.items() if v is not _MISSING}).encode()


_MISSING = object()


# -- round trip ----------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(args=ARGS, kwargs=KWARGS, opts=OPTS)
def test_json_round_trip(args: list[Any], kwargs: dict[str, Any], opts: dict[str, Any]) -> None:
    payload = encode_message("id-1", "app.task", args, kwargs, opts)
    assert isinstance(payload, bytes)
    msg = decode_message(payload)
    assert msg["v"] == ENVELOPE_VERSION
    assert msg["id"] == "id-1"
    assert msg["task"] == "app.task"
    assert msg["args"] == args
    assert msg["kwargs"] == kwargs
    assert msg.get("opts", {}) == opts


@settings(max_examples=30, deadline=None)
@given(value=JSON_VALUES)
def test_dumps_loads_round_trip(value: Any) -> None:
    text = dumps(value)
    assert isinstance(text, str)
    assert loads(text) == value
    assert loads(text.encode()) == value


def test_payload_is_compact_utf8_json() -> None:
    payload = encode_message("t1", "app.greet", ["héllo", "✓"], {"n": 1})
    assert payload.startswith(b"{")
    assert b" " not in payload
    assert json.loads(payload) == {
        "v": ENVELOPE_VERSION,
        "id": "t1",
        "task": "app.greet",
        "args": ["héllo", "✓"],
        "kwargs": {"n": 1},
    }


def test_tuple_args_travel_as_a_list() -> None:
    msg = decode_message(encode_message("t1", "app.add", (1, (2, 3)), {}))
    assert msg["args"] == [1, [2, 3]]


def test_empty_opts_are_omitted() -> None:
    assert "opts" not in decode_message(encode_message("t1", "x", [], {}, {}))
    assert decode_message(encode_message("t1", "x", [], {}, {"priority": 2}))["opts"] == {
        "priority": 2
    }


def test_decode_tolerates_trailing_whitespace() -> None:
    assert decode_message(_envelope() + b"\n  ")["args"] == [1]


# -- encoding errors name the culprit ------------------------------------------------


class Opaque:
    pass


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Colour(enum.Enum):
    RED = 1


class Size(enum.IntEnum):
    BIG = 3


class Mode(str, enum.Enum):  # noqa: UP042 - the pre-StrEnum idiom users have
    FAST = "fast"


class Name(str):
    pass


PointTuple = namedtuple("PointTuple", "x y")


def test_non_serializable_positional_arg_is_named_by_index() -> None:
    with pytest.raises(SerializationError) as info:
        encode_message("t1", "app.add", [1, "ok", Opaque()], {})
    text = str(info.value)
    assert "argument 2" in text
    assert "Opaque" in text
    assert "'app.add'" in text


def test_non_serializable_keyword_arg_is_named() -> None:
    with pytest.raises(SerializationError) as info:
        encode_message("t1", "app.add", [1, 2], {"fine": 1, "when": {1, 2}})
    text = str(info.value)
    assert "keyword argument 'when'" in text
    assert "set" in text


def test_first_bad_argument_is_named() -> None:
    with pytest.raises(SerializationError, match="argument 1 "):
        encode_message("t1", "x", [0, object(), object()], {"k": object()})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_rejected(bad: float) -> None:
    with pytest.raises(SerializationError) as info:
        encode_message("t1", "x", [1.0, [bad]], {})
    assert "argument 1" in str(info.value)
    assert "NaN" in str(info.value)
    with pytest.raises(SerializationError, match="keyword argument 'ratio'"):
        encode_message("t1", "x", [], {"ratio": bad})


def test_self_containing_list_is_rejected() -> None:
    loop: list[Any] = [1]
    loop.append(loop)
    with pytest.raises(SerializationError) as info:
        encode_message("t1", "x", ["a", loop], {})
    assert "argument 1" in str(info.value)
    assert "contains itself" in str(info.value)


def test_self_containing_dict_in_kwargs_is_rejected() -> None:
    loop: dict[str, Any] = {}
    loop["me"] = loop
    with pytest.raises(SerializationError, match="keyword argument 'cfg'"):
        encode_message("t1", "x", [], {"cfg": loop})


def test_non_string_dict_key_is_rejected() -> None:
    with pytest.raises(SerializationError, match="argument 0"):
        encode_message("t1", "x", [{(1, 2): "tuple key"}], {})


def test_serialization_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        encode_message("t1", "x", [object()], {})


def test_dumps_and_check_json_reject_non_json() -> None:
    with pytest.raises(SerializationError):
        dumps(object())
    with pytest.raises(SerializationError):
        dumps(math.nan)
    with pytest.raises(SerializationError, match="task result"):
        check_json({"x": {1, 2}}, "task result")
    check_json(None, "r")
    check_json("s", "r")
    check_json({"a": [1, 2.5, None]}, "r")


def test_loads_rejects_malformed_json() -> None:
    with pytest.raises(SerializationError):
        loads("{not json")
    with pytest.raises(SerializationError):
        loads(b"\xff\xfe\xfa")


# -- decoding refuses anything but a v1 envelope -------------------------------------


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_payload_is_refused(protocol: int) -> None:
    harmless = pickle.dumps({"v": 1, "task": "x", "args": [], "kwargs": {}}, protocol=protocol)
    with pytest.raises(SerializationError, match=r"(?i)pickle"):
        decode_message(harmless)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"{",
        b'{"v": 1, "id": "t1"',
        b"not json at all",
        b'{"v": 1}{"v": 1}',
        b"\xff\xfe\x00garbage",
        b"   ",
    ],
    ids=["empty", "open-brace", "truncated", "text", "two-values", "bad-utf8", "blank"],
)
def test_malformed_payload_is_refused(payload: bytes) -> None:
    with pytest.raises(SerializationError):
        decode_message(payload)


@pytest.mark.parametrize("version", [0, 2, "1", None, _MISSING])
def test_wrong_envelope_version_is_refused(version: Any) -> None:
    with pytest.raises(SerializationError, match="envelope"):
        decode_message(_envelope(v=version))


@pytest.mark.parametrize("shape", [[], 1, "x", None], ids=["list", "int", "str", "null"])
def test_non_object_payload_is_refused(shape: Any) -> None:
    with pytest.raises(SerializationError, match="envelope"):
        decode_message(json.dumps(shape).encode())


@pytest.mark.parametrize("args", [{"a": 1}, "1,2", 3, None, _MISSING])
def test_args_must_be_a_list(args: Any) -> None:
    with pytest.raises(SerializationError, match="args"):
        decode_message(_envelope(args=args))


@pytest.mark.parametrize("kwargs", [[], "k=v", 1, None, _MISSING])
def test_kwargs_must_be_an_object(kwargs: Any) -> None:
    with pytest.raises(SerializationError, match="kwargs"):
        decode_message(_envelope(kwargs=kwargs))


@pytest.mark.parametrize(
    "field,value", [("task", 5), ("task", _MISSING), ("id", None), ("id", _MISSING)]
)
def test_task_name_and_id_are_required_strings(field: str, value: Any) -> None:
    with pytest.raises(SerializationError, match="task name or id"):
        decode_message(_envelope(**{field: value}))


# -- msgpack -------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(args=ARGS, kwargs=KWARGS, opts=OPTS)
def test_msgpack_round_trip(args: list[Any], kwargs: dict[str, Any], opts: dict[str, Any]) -> None:
    payload = encode_message("id-1", "app.task", args, kwargs, opts, fmt="msgpack")
    assert payload.startswith(MSGPACK_MARK)
    msg = decode_message(payload)
    assert msg["args"] == args
    assert msg["kwargs"] == kwargs
    assert msg["task"] == "app.task"
    assert msg["id"] == "id-1"
    assert msg.get("opts", {}) == opts


def test_msgpack_errors() -> None:
    with pytest.raises(SerializationError, match="msgpack"):
        encode_message("t1", "x", [Opaque()], {}, fmt="msgpack")
    with pytest.raises(SerializationError, match="msgpack"):
        decode_message(MSGPACK_MARK + b"\xc1\xc1")
    wrong = MSGPACK_MARK + msgspec.msgpack.encode(
        {"v": 2, "id": "t", "task": "x", "args": [], "kwargs": {}}
    )
    with pytest.raises(SerializationError, match="envelope"):
        decode_message(wrong)


# -- only JSON's data model travels (msgspec would encode more) ----------------------


@pytest.mark.parametrize(
    "value",
    [
        {1, 2},
        frozenset({1}),
        b"raw",
        bytearray(b"x"),
        datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        uuid.UUID(int=1),
        decimal.Decimal("1.5"),
        Point(1, 2),
        Colour.RED,
        {True: 1},
    ],
    ids=[
        "set",
        "frozenset",
        "bytes",
        "bytearray",
        "datetime",
        "uuid",
        "decimal",
        "dataclass",
        "plain-enum",
        "bool-key",
    ],
)
def test_values_that_would_arrive_changed_are_refused(value: Any) -> None:
    with pytest.raises(SerializationError, match=r"argument 1 .*no JSON form"):
        encode_message("t1", "x", ["ok", [value]], {})
    with pytest.raises(SerializationError, match="task result"):
        check_json({"r": value}, "task result")


def test_values_json_always_took_travel_as_before() -> None:
    args = [
        (1, 2),
        {1: "a", 2.5: "b"},
        Size.BIG,
        Mode.FAST,
        Name("alice"),
        2**80,
        OrderedDict(a=1),
        PointTuple(1, 2),
    ]
    msg = decode_message(encode_message("t1", "x", args, {}))
    assert msg["args"] == [
        [1, 2],
        {"1": "a", "2.5": "b"},
        3,
        "fast",
        "alice",
        2**80,
        {"a": 1},
        [1, 2],
    ]
    assert json_form({"t": (1, (2,))}, "r") == {"t": [1, [2]]}
    assert dumps([Name("x"), 1.5]) == '["x",1.5]'


def test_deep_nesting_is_refused_with_a_reason() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(SerializationError, match=r"argument 0 .*nested too deeply"):
        encode_message("t1", "x", [deep], {})


def test_messages_written_by_the_standard_library_still_decode() -> None:
    """Payloads stored by earlier versions (json.dumps, any spacing, ASCII escapes)."""
    old = json.dumps(
        {"v": 1, "id": "t1", "task": "app.greet", "args": ["héllo", 1.5], "kwargs": {"n": None}}
    ).encode()
    assert b"\\u00e9" in old and b", " in old
    msg = decode_message(old)
    assert msg["args"] == ["héllo", 1.5]
    assert msg["kwargs"] == {"n": None}


def test_msgpack_carries_bytes_and_refuses_sets() -> None:
    msg = decode_message(encode_message("t1", "x", [b"\x00\xff", math.inf], {}, fmt="msgpack"))
    assert msg["args"] == [b"\x00\xff", math.inf]
    with pytest.raises(SerializationError, match="msgpack"):
        encode_message("t1", "x", [{1, 2}], {}, fmt="msgpack")


def test_a_value_whose_conversion_fails_is_refused_in_one_line() -> None:
    class Weird(str):
        def __str__(self) -> str:
            raise TypeError("no text for you")

    with pytest.raises(SerializationError, match=r"argument 0 \(Weird\).*no text for you"):
        encode_message("t1", "x", [Weird("w")], {})


def test_plain_messages_skip_the_round_trip_and_encode_the_same() -> None:
    import enum

    from dtq_core import codec

    args = [1, -2, 2**70, 2.5, "x", None, True]
    kwargs = {"a": 1, "b": "two", "c": 0.1}
    assert codec._plain_call("id", "t", args, kwargs)
    msg = {"v": 1, "id": "id", "task": "t", "args": args, "kwargs": kwargs}
    assert codec.encode_message("id", "t", tuple(args), kwargs) == codec._strict_json(msg)

    class Color(enum.IntEnum):
        RED = 1

    # Anything else takes the checked path: containers, subclasses, NaN and infinity.
    for odd in ([1], {"k": 1}, (1,), Color.RED, float("nan"), float("inf"), {1}):
        assert not codec._plain_call("id", "t", [odd], {})
        assert not codec._plain_call("id", "t", [], {"k": odd})
    assert not codec._plain_call("id", "t", [], {1: 1})
