"""Message codec: a versioned JSON envelope (msgpack optional). Never pickle.

A payload is the bytes of one task message: ``{"v": 1, "id", "task", "args", "kwargs",
"opts"}``, compact UTF-8 JSON. Decoding checks the envelope before anything else reads
it, and a payload that looks like a pickle is refused with a clear error; nothing in a
message is ever imported.

Encoding and decoding are msgspec's. What may travel is JSON's data model, as the
standard library's ``json`` saw it: ``None``, ``bool``, ``int``, finite ``float``,
``str``, lists and tuples (they arrive as lists), dicts with ``str`` or number keys
(they arrive as strings), and subclasses of these. msgspec would also encode sets,
bytes, dates, dataclasses and more, each into some JSON form the task would get back
changed: :func:`_strict_json` refuses them, naming why.
"""

from __future__ import annotations

import math
from typing import Any

import msgspec

from dtq_core.errors import SerializationError

#: Version of the message envelope written by this code.
ENVELOPE_VERSION = 1
#: First byte of a msgpack payload (JSON payloads start with ``{``).
MSGPACK_MARK = b"M"

_NAN = "NaN and Infinity are not JSON"
_TYPE = "no JSON form for this type"
_CYCLE = "it contains itself"
_DEEP = "it is nested too deeply"
_SCALARS = frozenset({type(None), bool, int, str})
#: Values a message may hold with no check after encoding (finite floats too).
_SIMPLE = _SCALARS


def _plain(obj: Any) -> Any:
    """Encode what msgspec does not know: subclasses of ``str``, ``int`` and ``float``.

    Anything else is refused (:func:`_strict_json` then names why).
    """
    for base in (str, int, float):
        if isinstance(obj, base):
            return base(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON")


_encode = msgspec.json.Encoder(enc_hook=_plain).encode
_decode = msgspec.json.decode


def _flaw(value: Any, active: set[int], binary: bool = False) -> str | None:
    """Why ``value`` cannot travel as JSON, or ``None`` when it can.

    ``active`` holds the ids of the containers being walked, so a cycle is named as
    such instead of recursing until the stack runs out. ``binary``: the msgpack
    format's wider model, which also carries bytes and NaN.
    """
    if type(value) in _SCALARS:
        return None
    if isinstance(value, float):
        return None if binary or math.isfinite(value) else _NAN
    if binary and isinstance(value, bytes):
        return None
    if isinstance(value, str | int):  # subclasses: str and int enums included
        return None
    if isinstance(value, dict):
        for key in value:
            if isinstance(key, float) and not (binary or math.isfinite(key)):
                return _NAN
            if isinstance(key, bool) or not isinstance(key, str | int | float):
                return _TYPE
        items: Any = value.values()
    elif isinstance(value, list | tuple):
        items = value
    else:
        return _TYPE
    if not value:
        return None
    key = id(value)
    if key in active:
        return _CYCLE
    active.add(key)
    try:
        for item in items:
            if type(item) not in _SCALARS:
                why = _flaw(item, active, binary)
                if why is not None:
                    return why
    finally:
        active.discard(key)
    return None


def _why_not(value: Any, binary: bool = False) -> str | None:
    """:func:`_flaw` from the top, a stack overflow included."""
    try:
        return _flaw(value, set(), binary)
    except RecursionError:
        return _DEEP


def _strict_json(value: Any) -> bytes | str:
    """``value`` in JSON, or why it cannot travel as JSON.

    msgspec encodes more than JSON's model (a set as an array, bytes as base64): the
    encoded value decoded again must equal ``value``, which costs two C passes. Only
    when it does not (tuples, number keys, or a value to refuse) is it walked in
    Python to tell which.
    """
    try:
        out = _encode(value)
        if _decode(out) == value:
            return out
    except (TypeError, ValueError, RecursionError, msgspec.MsgspecError) as exc:
        why = _why_not(value)
        return f"no JSON form ({exc})" if why is None else why
    why = _why_not(value)
    return out if why is None else why


def encode_message(
    task_id: str,
    name: str,
    args: Any,
    kwargs: Any,
    opts: dict[str, Any] | None = None,
    fmt: str = "json",
) -> bytes:
    """Encode one task message.

    Raises:
        SerializationError: When an argument is not JSON-serializable, naming it.
    """
    if type(args) is tuple:  # the usual call (``delay(*args)``): compared as a list below
        args = list(args)
    msg = {"v": ENVELOPE_VERSION, "id": task_id, "task": name, "args": args, "kwargs": kwargs}
    if opts:
        msg["opts"] = opts
    if fmt == "msgpack":
        return _encode_msgpack(msg)
    if not opts and _plain_call(task_id, name, args, kwargs):
        # Nothing msgspec could encode into another value: no round trip to compare.
        try:
            return _encode(msg)
        except (TypeError, ValueError, OverflowError, msgspec.MsgspecError):
            pass  # an int past 64 bits, say: the strict path says why
    out = _strict_json(msg)
    if isinstance(out, str):
        raise SerializationError(_explain(name, args, kwargs, out))
    return out


def _plain_call(task_id: Any, name: Any, args: Any, kwargs: Any) -> bool:
    """Whether a message holds only plain values (no check after encoding needed).

    Plain: exact ``str``, ``int``, ``bool``, ``None`` and finite ``float`` values, in a
    list of arguments and a dict with ``str`` keys. Such a message encodes to JSON that
    decodes to an equal value, so :func:`encode_message` skips the round trip of
    :func:`_strict_json` (most calls: a few ids and numbers).
    """
    if type(task_id) is not str or type(name) is not str or type(args) is not list:
        return False
    if type(kwargs) is not dict:
        return False
    if not args and not kwargs:  # a call without arguments: nothing to look at
        return True
    simple = _SIMPLE
    for a in args:
        t = type(a)
        if t not in simple and (t is not float or a - a != 0.0):  # inf - inf is NaN
            return False
    for k, v in kwargs.items():
        t = type(v)
        if type(k) is not str or (t not in simple and (t is not float or v - v != 0.0)):
            return False
    return True


def decode_message(payload: bytes) -> dict[str, Any]:
    """Decode and check one task message.

    Raises:
        SerializationError: For pickle, non-JSON, or an envelope of the wrong shape.
    """
    if not payload:
        raise SerializationError("empty payload")
    first = payload[:1]
    if first == b"\x80":
        raise SerializationError("pickle payloads are refused: DTQ accepts JSON or msgpack only")
    if first == MSGPACK_MARK:
        msg = _decode_msgpack(payload)
    else:
        try:
            msg = _decode(payload)
        except msgspec.DecodeError as exc:
            raise SerializationError(f"payload is not valid JSON: {exc}") from None
    if type(msg) is not dict or msg.get("v") != ENVELOPE_VERSION:
        raise SerializationError(f"payload is not a DTQ v{ENVELOPE_VERSION} message envelope")
    if type(msg.get("task")) is not str or type(msg.get("id")) is not str:
        raise SerializationError("message envelope lacks a task name or id")
    if type(msg.get("args")) is not list or type(msg.get("kwargs")) is not dict:
        raise SerializationError("message args must be a JSON array and kwargs a JSON object")
    return msg


def dumps(value: Any) -> str:
    """Encode any JSON value compactly (results, records, snapshots)."""
    return _to_json(value, "value").decode()


def loads(text: str | bytes) -> Any:
    """Decode a JSON value."""
    try:
        return _decode(text)
    except msgspec.DecodeError as exc:
        raise SerializationError(f"not valid JSON: {exc}") from None


def _check_text(value: str, what: str) -> None:
    """Refuse a string that is not Unicode text (a lone surrogate: no UTF-8 form).

    Such strings come from bytes decoded with ``surrogateescape`` (file names, say);
    nested in a list or dict msgspec refuses them, alone they would reach the store.
    """
    if not value.isascii():  # O(1): CPython keeps the flag
        try:
            value.encode()
        except UnicodeEncodeError as exc:
            raise SerializationError(
                f"{what} is not valid Unicode text (a lone surrogate at position "
                f"{exc.start}): decode bytes strictly, or pass them as base64"
            ) from None


def check_json(value: Any, what: str) -> None:
    """Raise a clear error if ``value`` cannot travel as JSON (e.g. a task result)."""
    if type(value) is str:
        _check_text(value, what)
        return
    if type(value) in _SCALARS:
        return
    _to_json(value, what)


def json_form(value: Any, what: str) -> Any:
    """``value`` as it comes back from JSON (tuples become lists, keys strings).

    A task's result is stored in this form, so a live record, the log, a checkpoint
    and another process all see the same value; one encode and decode, none for scalars.

    Raises:
        SerializationError: When ``value`` cannot travel as JSON, naming ``what``.
    """
    if type(value) is str:
        _check_text(value, what)
        return value
    if type(value) in _SCALARS:
        return value
    return _decode(_to_json(value, what))


def _to_json(value: Any, what: str) -> bytes:
    out = _strict_json(value)
    if isinstance(out, str):
        raise SerializationError(f"{what} is not JSON-serializable: {out}")
    return out


def _explain(name: str, args: Any, kwargs: Any, why: str) -> str:
    """The refusal of a message, naming the first argument that cannot travel."""
    for i, arg in enumerate(args if isinstance(args, list | tuple) else ()):
        inner = _strict_json(arg)
        if isinstance(inner, str):
            return (
                f"task {name!r}: argument {i} ({type(arg).__name__}) is not JSON-serializable "
                f"({inner}); pass plain data (str, int, float, bool, None, list, dict)"
            )
    for key, val in kwargs.items() if isinstance(kwargs, dict) else ():
        inner = _strict_json(val)
        if isinstance(inner, str):
            return (
                f"task {name!r}: keyword argument {key!r} ({type(val).__name__}) is not "
                f"JSON-serializable ({inner}); pass plain data (str, int, float, bool, "
                "None, list, dict)"
            )
    return f"task {name!r}: the message is not JSON-serializable: {why}"


_msgpack_encode = msgspec.msgpack.Encoder().encode
_msgpack_decode = msgspec.msgpack.decode


def _encode_msgpack(msg: dict[str, Any]) -> bytes:
    # JSON's values, plus bytes and NaN; a set or a date is refused as with JSON (it
    # would arrive as something else).
    why = _why_not(msg, binary=True)
    if why is not None:
        raise SerializationError(f"task {msg['task']!r}: arguments are not msgpack-able: {why}")
    try:
        return MSGPACK_MARK + _msgpack_encode(msg)
    except (TypeError, ValueError, OverflowError) as exc:
        raise SerializationError(
            f"task {msg['task']!r}: arguments are not msgpack-able: {exc}"
        ) from None


def _decode_msgpack(payload: bytes) -> Any:
    try:
        return _msgpack_decode(payload[1:])
    except msgspec.DecodeError as exc:
        raise SerializationError(f"payload is not valid msgpack: {exc}") from None
