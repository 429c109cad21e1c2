"""Message codec: a versioned JSON envelope (msgpack optional). Never pickle.

A payload is the bytes of one task message: ``{"v": 1, "id", "task", "args", "kwargs",
"opts"}``. Decoding checks the envelope before anything else reads it, and a payload that
looks like a pickle is refused with a clear error; nothing in a message is ever imported.
"""

from __future__ import annotations

import json
import json.scanner
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from dtq_core.errors import SerializationError

#: Version of the message envelope written by this code.
ENVELOPE_VERSION = 1
#: First byte of a msgpack payload (JSON payloads start with ``{``).
MSGPACK_MARK = b"M"

_decoder = json.JSONDecoder()
_scan_once: Any = json.scanner.make_scanner(_decoder)  # type: ignore[arg-type]
_loads = json.loads


def _loads_payload(payload: bytes) -> Any:
    # The C scanner directly: json.loads(bytes) sniffs the encoding and wraps twice.
    text = payload.decode()
    try:
        obj, end = _scan_once(text, 0)
    except StopIteration:
        raise ValueError("no JSON value at the start") from None
    if end != len(text) and text[end:].strip():
        raise ValueError(f"extra data after the JSON value at offset {end}")
    return obj


if c_make_encoder is not None:
    # One C encoder built once: JSONEncoder.encode builds a new one on every call.
    # No circular-reference markers: a cycle ends in RecursionError, caught below.
    _c_encoder = c_make_encoder(None, None, encode_basestring, None, ":", ",", False, False, False)

    def _dumps(value: Any) -> str:
        if type(value) is str:
            return str(encode_basestring(value))
        return "".join(_c_encoder(value, 0))
else:  # pragma: no cover - CPython always has the C encoder
    _py_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    def _dumps(value: Any) -> str:
        return _py_encoder.encode(value)


_ENCODE_ERRORS = (TypeError, ValueError, RecursionError)


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
    msg = {"v": ENVELOPE_VERSION, "id": task_id, "task": name, "args": args, "kwargs": kwargs}
    if opts:
        msg["opts"] = opts
    if fmt == "msgpack":
        return _encode_msgpack(msg)
    try:
        return _dumps(msg).encode()
    except _ENCODE_ERRORS as exc:
        raise SerializationError(_explain(name, args, kwargs, exc)) from None


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
            msg = _loads_payload(payload)
        except (ValueError, UnicodeDecodeError) as exc:
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
    try:
        return _dumps(value)
    except _ENCODE_ERRORS as exc:
        raise SerializationError(f"value is not JSON-serializable: {exc}") from None


def loads(text: str | bytes) -> Any:
    """Decode a JSON value."""
    try:
        return _loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SerializationError(f"not valid JSON: {exc}") from None


_SCALARS = frozenset({type(None), bool, int, str})


def check_json(value: Any, what: str) -> None:
    """Raise a clear error if ``value`` cannot travel as JSON (e.g. a task result)."""
    if type(value) in _SCALARS:
        return
    try:
        _dumps(value)
    except _ENCODE_ERRORS as exc:
        raise SerializationError(f"{what} is not JSON-serializable: {exc}") from None


def json_form(value: Any, what: str) -> Any:
    """``value`` as it comes back from JSON (tuples become lists, keys strings).

    A task's result is stored in this form, so a live record, the log, a checkpoint
    and another process all see the same value; one encode and decode, none for scalars.

    Raises:
        SerializationError: When ``value`` cannot travel as JSON, naming ``what``.
    """
    if type(value) in _SCALARS:
        return value
    try:
        return _loads(_dumps(value))
    except _ENCODE_ERRORS as exc:
        raise SerializationError(f"{what} is not JSON-serializable: {exc}") from None


def _explain(name: str, args: Any, kwargs: Any, exc: Exception) -> str:
    for i, arg in enumerate(args if isinstance(args, list | tuple) else ()):
        try:
            _dumps(arg)
        except _ENCODE_ERRORS as inner:
            return (
                f"task {name!r}: argument {i} ({type(arg).__name__}) is not JSON-serializable "
                f"({_why(inner)}); pass plain data (str, int, float, bool, None, list, dict)"
            )
    for key, val in kwargs.items() if isinstance(kwargs, dict) else ():
        try:
            _dumps(val)
        except _ENCODE_ERRORS as inner:
            return (
                f"task {name!r}: keyword argument {key!r} ({type(val).__name__}) is not "
                f"JSON-serializable ({_why(inner)}); pass plain data (str, int, float, bool, "
                "None, list, dict)"
            )
    return f"task {name!r}: arguments are not JSON-serializable: {exc}"


def _why(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "it contains itself"
    if isinstance(exc, ValueError):
        return "NaN and Infinity are not JSON"
    return "no JSON form for this type"


def _encode_msgpack(msg: dict[str, Any]) -> bytes:
    try:
        import msgpack  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise SerializationError(
            "codec 'msgpack' needs the msgpack package: pip install msgpack"
        ) from None
    try:
        return MSGPACK_MARK + bytes(msgpack.packb(msg, use_bin_type=True))
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"task {msg['task']!r}: arguments are not msgpack-able: {exc}"
        ) from None


def _decode_msgpack(payload: bytes) -> Any:
    try:
        import msgpack
    except ImportError:
        raise SerializationError("a msgpack payload arrived but msgpack is not installed") from None
    try:
        return msgpack.unpackb(payload[1:], raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise SerializationError(f"payload is not valid msgpack: {exc}") from None
