"""Version 1 of the store's format, read only: its log records and its checkpoint.

Version 1 logged JSON bodies under frame types 1..8, one of which (``OP_CALL``) named a
Python method and its positional arguments. :func:`decode_v1` maps each such record to
the typed change records of :mod:`dtq_core.backends.changes` by an explicit table of the
method names version 1 wrote, never by looking a name up on a class; an unknown name is
a malformed record. :func:`load_state_v1` reads a version-1 checkpoint (JSON) into a
state machine. A store that opens version-1 data converts it: it replays through these,
then writes a version-2 checkpoint (``dtq wal upgrade`` reports it).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import msgspec

from dtq_core.backends.changes import (
    Ack,
    Bury,
    Cancel,
    Change,
    Claim,
    Enqueue,
    Expire,
    Fail,
    KeyDelete,
    KeySet,
    Names,
    Pause,
    Promote,
    Purge,
    Reclaim,
    Release,
    Replay,
    TaskSpec,
)
from dtq_core.backends.embedded import oplog
from dtq_core.backends.embedded.malformed import MalformedTasks, nameable, task_flaw
from dtq_core.backends.memory_state import StateMachine
from dtq_core.errors import StoreCorrupted
from dtq_core.ready_queue import ReadyQueue
from dtq_core.task import ErrorInfo, TaskRecord, TaskState

__all__ = ["decode_v1", "load_state_v1", "s2b"]


def s2b(text: str) -> bytes:
    """A version-1 payload (``j`` + UTF-8 JSON text, or ``b`` + base64) as bytes."""
    if text[:1] == "j":
        return text[1:].encode()
    if text[:1] == "b":
        return base64.b64decode(text[1:])
    raise ValueError(f"payload text starts with {text[:1]!r}, not 'j' or 'b'")


def _spec(d: dict[str, Any]) -> TaskSpec:
    why = task_flaw(d)
    if why is not None:
        raise ValueError(why)
    return TaskSpec(
        d["id"],
        d["name"],
        d["queue"],
        d["priority"],
        s2b(d["payload"]),
        d["eta"],
        d["max_retries"],
        d["time_limit"],
        d["dedup_key"],
        d["replayed_from"],
        d["workflow"],
    )


def _enqueue(body: Any) -> list[Change]:
    task, now = body
    why = task_flaw(task)
    if why is None:
        return [Enqueue(now, [_spec(task)])]
    if nameable(task):
        raise MalformedTasks(float(now), [], [(task, why)])
    raise ValueError(why)


def _claim(body: Any) -> list[Change]:
    entries, now = body
    out: list[Change] = []
    for task_id, token, worker, deadline in entries:
        last = out[-1] if out else None
        if isinstance(last, Claim) and (last.worker, last.deadline) == (worker, deadline):
            last.tasks.append((task_id, token))
        else:
            out.append(Claim(now, worker, deadline, [(task_id, token)]))
    return out


#: The calls version 1 logged under ``OP_CALL``: method name -> its arguments as a record.
_CALLS: dict[str, Callable[[list[Any]], Change]] = {
    "ack": lambda a: Ack(a[3], [(a[0], a[1], a[2])]),
    "fail": lambda a: Fail(a[3], a[0], a[1], ErrorInfo.from_dict(a[2]), a[4], a[5]),
    "bury": lambda a: Bury(a[4], a[0], a[1], ErrorInfo.from_dict(a[2]), a[3]),
    "release": lambda a: Release(a[2], a[0], a[1], a[3], a[4]),
    "cancel": lambda a: Cancel(a[1], a[0]),
    "set_paused": lambda a: Pause(a[0], a[1]),
    "replay": lambda a: Replay(a[3], a[0], _spec(a[1]), a[2]),
    "purge": lambda a: Purge(list(a[0])),
    "drop_finished": lambda a: Expire(list(a[0])),
}


def _call(body: Any) -> list[Change]:
    name, args = body
    make = _CALLS.get(name) if isinstance(name, str) else None
    if make is None:
        raise ValueError(f"unknown version-1 call {str(name)[:40]!r}")
    return [make(args)]


_DECODERS: dict[int, Callable[[Any], list[Change]]] = {
    oplog.OP_ENQ: _enqueue,
    oplog.OP_CLAIM: _claim,
    oplog.OP_CALL: _call,
    oplog.OP_PROMOTE: lambda b: [Promote(b[1], list(b[0]))],
    oplog.OP_RECLAIM: lambda b: [Reclaim(b[1], [(i, bool(bury)) for i, bury in b[0]])],
    oplog.OP_KVSET: lambda b: [KeySet(b[0], b[1], b[2])],
    oplog.OP_KVDEL: lambda b: [KeyDelete(b[0])],
    oplog.OP_NAMES: lambda b: [Names(list(b))],
}


def decode_v1(rtype: int, body: bytes) -> list[Change]:
    """The typed records a version-1 record stands for, each checked by its schema.

    Raises:
        MalformedTasks: An enqueue of a task that cannot be read but can be named.
        ValueError: Any other body that cannot be read (not JSON, a wrong shape, an
            unknown type or call); ``TypeError``, ``KeyError``, ``IndexError`` too.
    """
    decode = _DECODERS.get(rtype)
    if decode is None:
        raise ValueError(f"unknown record type {rtype}")
    changes = decode(json.loads(body))
    # Built from JSON, so not yet checked: a round trip through the schema checks them.
    return [msgspec.msgpack.decode(msgspec.msgpack.encode(c), type=type(c)) for c in changes]


def load_state_v1(state: StateMachine, body: bytes) -> None:
    """Restore a version-1 checkpoint (JSON) into an empty state machine.

    Raises:
        StoreCorrupted: The body is not a version-1 state.
    """
    tasks, keys = state.tasks, state.keys
    try:
        data = json.loads(body)
        if data.get("version") != 1:
            raise StoreCorrupted(f"checkpoint state version {data.get('version')} unknown")
        for d in data["records"]:
            raw = dict(d)
            raw["payload"] = "x"
            rec = TaskRecord.from_dict(raw)
            rec.payload = s2b(d["payload"])
            rec.lease_token = int(d.get("lease_token", 0))
            tasks.records[rec.id] = rec
            tasks.counts[rec.state] += 1
            if rec.state is TaskState.RUNNING:
                tasks.running[rec.queue] = tasks.running.get(rec.queue, 0) + 1
                tasks.leases.push(rec.id, rec.lease_deadline or 0.0)
        for q, entries in data["ready"].items():
            ready = tasks.ready.setdefault(q, ReadyQueue())
            for task_id, _ in entries:  # in claim order; each at its record's priority
                ready.push(task_id, tasks.records[task_id].priority)
        for task_id, eta in data["delayed"]:
            tasks.delayed.push(task_id, eta)
        tasks.dead.update(dict.fromkeys(data["dead"]))
        tasks.paused.update(data["paused"])
        keys.kv.update({k: (v, exp) for k, v, exp in data["kv"]})
        keys.names.update(data["names"])
        tasks.expiry.extend((t, i) for t, i in data["expiry"])
        tasks.next_token = int(data["token"])
        tasks.index.rebuild()  # the sort index is derived from the records, not saved
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreCorrupted(f"version-1 checkpoint state is malformed: {exc!r}") from exc
