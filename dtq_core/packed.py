"""Payloads kept compactly in a task record: the part the record does not already hold.

A canonical message (:func:`dtq_core.codec.encode_message` in JSON) starts with the
task's id and name, which the record holds already::

    {"v":1,"id":"<id>","task":"<name>",   "args":[],"kwargs":{}}
    <-- rebuilt from the record's fields -><------ the tail ----->

A record keeps only the tail, in a :class:`Packed`, and rebuilds the exact bytes when
its ``payload`` is read (:func:`unpack`). Identical tails (a no-op's, a task always
called with the same arguments) share one :class:`Packed` object, so such a payload
costs a store nothing per task. Any payload that does not start with exactly the head
the record's id and name make (another format, an id that JSON escapes, a message of
another task) is kept whole, as the bytes it is. Either way the bytes read back are the
bytes given: :func:`pack` keeps a tail only after checking ``head + tail == payload``
byte for byte.

Nothing outside a process's memory holds the packed form: the log and checkpoints hold
whole payloads, and so do the embedded owner's replies on its socket
(:func:`dtq_core.backends.embedded.replies.whole`), which peers of every release read.
"""

from __future__ import annotations

import msgspec

__all__ = ["END", "MAX_SHARED", "MAX_TAILS", "MID", "START", "Packed", "head", "pack", "unpack"]

#: How every canonical JSON message starts: then the id, ``MID``, the task name, ``END``.
START = b'{"v":1,"id":"'
MID = b'","task":"'
END = b'",'
#: Tails up to this many bytes are shared between records (longer ones are rarely equal).
MAX_SHARED = 256
#: Distinct tails remembered for sharing; the table starts afresh when it is full.
MAX_TAILS = 4096
_join = b"".join


class Packed(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """The tail of a canonical payload, after its id and task name (see the module)."""

    tail: bytes


#: Tails seen recently, each with its one shared :class:`Packed`.
_tails: dict[bytes, Packed] = {}
#: The last tail packed: the next one is most often the same (compared, not hashed).
_last = Packed(b"")


def head(task_id: str, name: str) -> bytes | None:
    """The bytes a canonical payload of this task starts with (``None``: none can)."""
    try:
        return _join((START, task_id.encode(), MID, name.encode(), END))
    except UnicodeEncodeError:  # a lone surrogate: JSON escapes it, so no payload matches
        return None


def pack(task_id: str, name: str, payload: bytes) -> bytes | Packed:
    """``payload`` as a record of task ``task_id`` named ``name`` keeps it.

    A :class:`Packed` tail when the payload is canonical for this id and name (shared
    with the records of the same tail), else ``payload`` itself.
    """
    global _last
    if type(payload) is not bytes or not payload.startswith(START):
        return payload
    start = head(task_id, name)
    if start is None or not payload.startswith(start):
        return payload
    cut, last = len(start), _last
    if len(payload) - cut == len(last.tail) and payload.endswith(last.tail):
        return last
    tail = payload[cut:]
    packed = _tails.get(tail)
    if packed is None:
        packed = Packed(tail)
        if len(tail) > MAX_SHARED:
            return packed
        if len(_tails) >= MAX_TAILS:
            _tails.clear()
        _tails[tail] = packed
    _last = packed
    return packed


def unpack(task_id: str, name: str, body: bytes | Packed) -> bytes:
    """The payload a record of ``task_id``/``name`` holding ``body`` stands for."""
    if type(body) is not Packed:
        return body  # type: ignore[return-value]
    return _join((START, task_id.encode(), MID, name.encode(), END, body.tail))
