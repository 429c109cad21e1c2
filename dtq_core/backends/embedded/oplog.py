"""The log's record codec: which frame types hold which format, and the v2 encoder.

A frame's type byte (see :mod:`.framing`) says how its body is encoded:

- :data:`RECORD_V2` (32): a change record of :mod:`dtq_core.backends.changes`, msgpack;
  everything this release writes;
- 1..8 (:data:`V1_TYPES`): the version-1 records (JSON, an operation per type and
  ``OP_CALL`` naming a method); only read, by :mod:`.legacy`, which turns each into the
  typed records.

``FORMAT.md`` beside this module specifies both.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dtq_core.backends.changes import Change, tag_of
from dtq_core.backends.embedded.framing import MAX_BODY, RTYPE_HOLE
from dtq_core.errors import SerializationError

#: Version of the log's record format written by this release.
LOG_FORMAT = 2
#: Frame type of a version-2 record (a msgpack change record).
RECORD_V2 = 32
#: Frame types of the version-1 records (JSON bodies), by name.
OP_ENQ, OP_CLAIM, OP_CALL, OP_PROMOTE, OP_RECLAIM, OP_KVSET, OP_KVDEL, OP_NAMES = range(1, 9)
#: Names of the version-1 frame types (for ``dtq wal inspect``).
V1_TYPES = {
    OP_ENQ: "v1 enqueue",
    OP_CLAIM: "v1 claim",
    OP_CALL: "v1 call",
    OP_PROMOTE: "v1 promote",
    OP_RECLAIM: "v1 reclaim",
    OP_KVSET: "v1 key-set",
    OP_KVDEL: "v1 key-delete",
    OP_NAMES: "v1 names",
}

_encode = msgspec.msgpack.Encoder().encode
#: Decodes a version-2 body into its typed record, checking every field.
DECODER: msgspec.msgpack.Decoder[Change] = msgspec.msgpack.Decoder(Change)
#: Errors a body that does not decode raises.
DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


def encode(change: Change) -> bytes:
    """A change as the body of a :data:`RECORD_V2` frame.

    Raises:
        SerializationError: A value msgpack cannot hold (an integer past 64 bits in a
            result), or a body over the log's record limit; nothing was changed.
    """
    try:
        raw = _encode(change)
    except OverflowError:
        raise SerializationError(
            f"this change cannot be logged ({tag_of(change)}): it holds an integer past "
            "64 bits, which the embedded log cannot store; pass or return it as a string"
        ) from None
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"this change cannot be logged ({tag_of(change)}): {exc}; keep task results "
            "plain JSON values"
        ) from None
    if len(raw) > MAX_BODY:
        raise SerializationError(
            f"this change would write a {len(raw):,}-byte log record (the limit is "
            f"{MAX_BODY:,}): keep task arguments and results small, store big data "
            "elsewhere and pass a reference"
        )
    return raw


def kind(rtype: int, body: bytes) -> str:
    """What a record is, for ``dtq wal inspect``: its tag, or its version-1 type."""
    if rtype == RECORD_V2:
        try:
            head: Any = msgspec.msgpack.decode(body)
        except DECODE_ERRORS:
            return "unreadable"
        if isinstance(head, list) and head and isinstance(head[0], str):
            return head[0]
        return "unreadable"
    if rtype == RTYPE_HOLE:
        return "hole"
    return V1_TYPES.get(rtype, f"type {rtype}")


def version_of(rtype: int) -> int:
    """The format version of a frame type (0 for a repair's hole, which has none)."""
    if rtype == RECORD_V2:
        return 2
    return 1 if rtype in V1_TYPES else 0
