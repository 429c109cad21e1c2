"""The embedded owner's wire: length-prefixed msgpack frames on its Unix socket.

Every frame is a 4-byte big-endian length and a msgpack body (msgspec). A connection
opens with a hello (``{"v": VERSION, "role": ..., "read_only": ..., "pid": ...}``) answered
by the owner; then each request ``[method, [args...]]`` is answered by
``[0, result, ""]`` or ``[1, error_type, message]``, one at a time.

The callable methods are not written out here: they are derived from the two
protocols they serve, :class:`~dtq_core.backends.base.Backend` (attached producers
and workers) and :class:`~dtq_core.console_api.ConsoleAPI` (``dtq`` and ``dtq-tui``),
plus the few methods of the owned store itself that attached processes call
(:data:`OWNER_METHODS`). Each method's parameters become an array-like msgspec struct,
so the owner decodes and type-checks a request in one step, and its return type decodes
the reply. A method that is not in a protocol or that list cannot be called.
"""

from __future__ import annotations

import collections.abc
import inspect
import socket
import struct
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any, get_args, get_origin, get_type_hints

import msgspec

from dtq_core.backends.embedded.replies import whole

#: Version of the hello, the framing and the values; a peer speaking another is refused.
#: Records travel with whole payloads, never the packed tail a record may keep in memory
#: (:func:`.replies.whole`), so peers of every release that speaks version 1 read each
#: other.
VERSION = 1
#: Largest frame either side accepts: a 20 MB task payload fits, a runaway peer doesn't.
MAX_FRAME = 64 * 2**20
_HEADER = struct.Struct("!I")

#: Backend methods an attached process may call (the protocol, less local-only hooks).
BACKEND_METHODS = (
    "ping",
    "info",
    "wakeup",
    "enqueue",
    "enqueue_many",
    "claim",
    "leave",
    "ack",
    "ack_many",
    "fail",
    "bury",
    "release",
    "extend_leases",
    "renew_lease",
    "reclaim_expired",
    "promote_due",
    "next_due",
    "cancel",
    "queue_stats",
    "peek",
    "set_paused",
    "get",
    "get_state",
    "find_ids",
    "list_tasks",
    "task_page",
    "count_by_state",
    "expire",
    "list_dead",
    "count_dead",
    "replay",
    "waiting",
    "purge",
    "set_if_absent",
    "get_key",
    "set_key",
    "delete_key",
    "compare_and_set",
    "scan_keys",
    "reserve",
    "add_counts",
    "read_counts",
    "heartbeat",
    "workers",
    "forget_worker",
    "register_names",
    "known_names",
    "wait_final",
)
#: Methods of the owned store (not of the Backend protocol) an attached process calls:
#: after a takeover, the leases its workers never received (:mod:`.deliveries`).
OWNER_METHODS = ("reclaim_unreceived",)
#: Backend methods that change nothing: the only ones a read-only session may call.
BACKEND_READS = frozenset(
    {
        "ping",
        "info",
        "next_due",
        "queue_stats",
        "peek",
        "get",
        "get_state",
        "find_ids",
        "list_tasks",
        "task_page",
        "count_by_state",
        "list_dead",
        "count_dead",
        "waiting",
        "get_key",
        "scan_keys",
        "read_counts",
        "workers",
        "known_names",
        "wait_final",
    }
)


def _iterable(value: Any) -> Any:
    """What msgpack has no type for, as a list: iterators, generators, dict views.

    The encoder's fallback (sets, tuples and every other value msgspec encodes itself).
    """
    if isinstance(value, collections.abc.Iterable) and not isinstance(value, str | bytes):
        return list(value)
    raise TypeError(f"{type(value).__name__} cannot travel to the owner")


encode = msgspec.msgpack.Encoder(enc_hook=_iterable).encode


class Hello(msgspec.Struct, forbid_unknown_fields=False):
    """What a peer says first: who it is and whether it may change anything."""

    v: int
    role: str
    read_only: bool = False
    pid: int = 0


_hello_decoder = msgspec.msgpack.Decoder(Hello)
_request_decoder = msgspec.msgpack.Decoder(tuple[str, msgspec.Raw])
_reply_decoder = msgspec.msgpack.Decoder(tuple[int, msgspec.Raw, str])
_str_decoder = msgspec.msgpack.Decoder(str)


@dataclass(frozen=True, slots=True)
class Method:
    """One callable method: its parameters and how to decode its arguments and result."""

    name: str
    params: tuple[str, ...]
    #: Parameters passed by keyword (keyword-only, or the ``**options`` catch-all).
    keywords: frozenset[str]
    #: ``**options`` of the protocol method, carried as one dict parameter.
    var_keyword: str | None
    defaults: tuple[Any, ...]
    args: msgspec.msgpack.Decoder[Any]
    result: msgspec.msgpack.Decoder[Any]

    def pack(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        """The positional argument list of a call (defaults filled in)."""
        out = list(args) + list(self.defaults[len(args) :])
        if len(args) > len(self.params):
            raise TypeError(f"{self.name}() takes {len(self.params)} arguments")
        extra: dict[str, Any] = {}
        for key, value in kwargs.items():
            try:
                out[self.params.index(key)] = value
            except ValueError:
                if self.var_keyword is None:
                    raise TypeError(f"{self.name}() got an unexpected argument {key!r}") from None
                extra[key] = value
        if self.var_keyword is not None:
            out[self.params.index(self.var_keyword)] = extra
        return out

    def unpack(self, raw: bytes | msgspec.Raw) -> tuple[list[Any], dict[str, Any]]:
        """Decoded, type-checked ``(args, kwargs)`` of a request."""
        values = msgspec.structs.astuple(self.args.decode(raw))
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        for name, value in zip(self.params, values, strict=True):
            if name == self.var_keyword:
                kwargs.update(value or {})
            elif name in self.keywords:
                kwargs[name] = value
            else:
                args.append(value)
        return args, kwargs


def _wire_type(tp: Any) -> Any:
    """A hint as msgspec decodes it: ``Iterable[X]`` as ``list[X]``.

    msgspec takes every other hint of the protocols as it is (dataclasses, named
    tuples, enums, unions, ``Sequence``), but an ``Iterable`` it decodes unchecked.
    """
    if get_origin(tp) in (collections.abc.Iterable, collections.abc.Iterator):
        (item,) = get_args(tp)
        return list[_wire_type(item)]  # type: ignore[misc]
    return tp


def _method(cls: type, name: str) -> Method:
    fn = getattr(cls, name)
    hints = get_type_hints(fn)
    sig = inspect.signature(fn)
    fields: list[tuple[str, Any, Any]] = []
    keywords: set[str] = set()
    var_keyword = None
    defaults: list[Any] = []
    for p in list(sig.parameters.values())[1:]:  # without self
        if p.kind is p.VAR_KEYWORD:
            var_keyword = p.name
            keywords.add(p.name)
            fields.append((p.name, dict[str, Any], msgspec.field(default_factory=dict)))
            defaults.append({})
            continue
        if p.kind is p.KEYWORD_ONLY:
            keywords.add(p.name)
        tp = _wire_type(hints.get(p.name, Any))
        if p.default is p.empty:
            fields.append((p.name, tp, msgspec.NODEFAULT))
            defaults.append(None)
        else:
            fields.append((p.name, tp, p.default))
            defaults.append(p.default)
    # Required fields first is msgspec's rule; a protocol with a required parameter
    # after an optional one (none today) would be refused here, at import.
    struct_type = msgspec.defstruct(f"{cls.__name__}_{name}", fields, array_like=True)
    ret = hints.get("return", Any)
    return Method(
        name,
        tuple(f[0] for f in fields),
        frozenset(keywords),
        var_keyword,
        tuple(defaults),
        msgspec.msgpack.Decoder(struct_type),
        msgspec.msgpack.Decoder(Any if ret is None else ret),
    )


@cache
def backend_methods() -> dict[str, Method]:
    """The Backend protocol's callable methods, and the owned store's own."""
    from dtq_core.backends.base import Backend
    from dtq_core.backends.embedded.backend import EmbeddedBackend

    out = {name: _method(Backend, name) for name in BACKEND_METHODS}
    out.update((name, _method(EmbeddedBackend, name)) for name in OWNER_METHODS)
    return out


@cache
def console_methods() -> dict[str, Method]:
    """The Console API's callable methods (every public method of the protocol)."""
    from dtq_core.console_api import ConsoleAPI

    names = [
        n
        for n, v in vars(ConsoleAPI).items()
        if not n.startswith("_") and inspect.isfunction(v) and n not in ("subscribe", "close")
    ]
    return {name: _method(ConsoleAPI, name) for name in names}


def hello(role: str, read_only: bool, pid: int) -> bytes:
    """The first frame a peer sends."""
    return encode(Hello(VERSION, role, read_only, pid))


def decode_hello(raw: bytes) -> Hello:
    """The peer's hello; raises :class:`msgspec.ValidationError` for anything else."""
    return _hello_decoder.decode(raw)


def decode_request(raw: bytes) -> tuple[str, msgspec.Raw]:
    """``(method, raw arguments)`` of a request frame."""
    return _request_decoder.decode(raw)


def decode_reply(raw: bytes) -> tuple[int, msgspec.Raw, str]:
    """``(status, raw result or error type, message)`` of a reply frame."""
    return _reply_decoder.decode(raw)


def decode_str(raw: msgspec.Raw) -> str:
    """A raw msgpack string."""
    return _str_decoder.decode(raw)


def ok(result: Any) -> bytes:
    """A success reply (records in it with whole payloads: :func:`.replies.whole`)."""
    return encode((0, whole(result), ""))


def error(kind: str, message: str) -> bytes:
    """An error reply naming the :mod:`dtq_core.errors` type to raise."""
    return encode((1, kind, message))


def send(sock: socket.socket, body: bytes) -> None:
    """Write one frame."""
    if len(body) > MAX_FRAME:
        raise ValueError(f"a {len(body):,}-byte message is over the {MAX_FRAME:,}-byte limit")
    if len(body) < 65536:
        sock.sendall(_HEADER.pack(len(body)) + body)
    else:  # no copy of a big body
        sock.sendall(_HEADER.pack(len(body)))
        sock.sendall(body)


def recv(reader: typing.BinaryIO, limit: int = MAX_FRAME) -> bytes | None:
    """Read one frame; ``None`` at a clean end of stream.

    Raises:
        EOFError: The stream ended inside a frame.
        ValueError: The frame is longer than ``limit``.
    """
    head = reader.read(4)
    if not head:
        return None
    if len(head) < 4:
        raise EOFError("connection closed inside a frame header")
    (size,) = _HEADER.unpack(head)
    if size > limit:
        raise ValueError(f"a {size:,}-byte frame is over the {limit:,}-byte limit")
    body = reader.read(size)
    if len(body) < size:
        raise EOFError("connection closed inside a frame")
    return body
