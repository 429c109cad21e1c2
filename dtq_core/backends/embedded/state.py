"""Checkpoint bodies: the whole in-memory state of the embedded store, msgpack.

A version-2 body is one :class:`State` (``FORMAT.md`` lists its fields); version-1
bodies (JSON) are read by :func:`~dtq_core.backends.embedded.legacy.load_state_v1`.
The sort index is not saved: it is derived from the records when a body is loaded.
"""

from __future__ import annotations

from collections.abc import Iterable
from math import copysign, nan
from sys import intern
from typing import Any, Generic, TypeVar

import msgspec

from dtq_core.backends.embedded.legacy import load_state_v1
from dtq_core.backends.memory_state import StateMachine
from dtq_core.errors import StoreCorrupted
from dtq_core.queue import IndexedHeap
from dtq_core.ready_queue import ReadyQueue
from dtq_core.task import Attempt, ErrorInfo, TaskRecord, TaskState

#: Version of the checkpoint body layout this release writes.
STATE_VERSION = 2


class Record(msgspec.Struct, gc=False):
    """A task record as a checkpoint holds it: a map of every field of ``TaskRecord``.

    (Version 2 encoded the record class itself, then a dataclass of these fields; the
    record is stored compactly now, so the body keeps its own copy of the layout.)
    """

    id: str
    name: str
    queue: str
    priority: int
    payload: bytes
    state: TaskState
    created_at: float
    enqueued_at: float
    eta: float | None = None
    max_retries: int = 0
    time_limit: float | None = None
    attempt: int = 0
    deliveries: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    error: ErrorInfo | None = None
    history: tuple[Attempt, ...] = ()
    replayed_from: str | None = None
    replayed_to: tuple[str, ...] = ()
    dead_reason: str | None = None
    worker: str | None = None
    lease_token: int = 0
    lease_deadline: float | None = None
    edits: tuple[dict[str, Any], ...] = ()
    dedup_key: str | None = None
    workflow: str | None = None


#: What a checkpoint's records are: :class:`Record` when written, ``msgspec.Raw`` when
#: read (each record is then decoded on its own, see below).
R = TypeVar("R")


class State(msgspec.Struct, Generic[R], gc=False):
    """The state at a checkpoint's LSN."""

    version: int
    #: Every record, each as a map of its fields (``TaskRecord``).
    records: list[R]
    #: Ready ids per queue, ``(id, priority)`` in claim order.
    ready: dict[str, list[tuple[str, float]]]
    #: Delayed ids, ``(id, due time)`` in due order.
    delayed: list[tuple[str, float]]
    #: Dead ids in order of death.
    dead: list[str]
    paused: list[str]
    #: ``(key, value, expiry time or None)``.
    kv: list[tuple[str, str, float | None]]
    names: list[str]
    #: ``(expiry time, id)`` of finished records, oldest first.
    expiry: list[tuple[float, str]]
    #: The next lease token.
    token: int


_encode = msgspec.msgpack.Encoder().encode
_decoder = msgspec.msgpack.Decoder(State[msgspec.Raw])
_record_decoder = msgspec.msgpack.Decoder(Record)


def _records(records: Iterable[TaskRecord]) -> list[Record]:
    make = Record
    return [make(*rec.values()) for rec in records]


def _heap_entries(heap: IndexedHeap) -> list[tuple[str, float]]:
    # (key, insertion order) order, so FIFO among equal keys survives the reload.
    live = [e for e in heap._heap if e[2] is not None]
    live.sort(key=lambda e: (e[0], e[1]))
    return [(e[2], e[0]) for e in live]  # type: ignore[misc]


def dump_state(state: StateMachine) -> bytes:
    """Serialize the state (call with the owner's lock held)."""
    t, k = state.tasks, state.keys
    return _encode(
        State(
            STATE_VERSION,
            _records(t.records.values()),
            {q: r.entries() for q, r in t.ready.items() if r},
            _heap_entries(t.delayed),
            list(t.dead),
            sorted(t.paused),
            [(key, v, exp) for key, (v, exp) in k.kv.items()],
            sorted(k.names),
            list(t.expiry),
            t.next_token,
        )
    )


class _SharedTimes:
    """One float object for a run of equal times, as the live store had.

    Tasks enqueued together share the one ``now`` of their change, live and at replay;
    decoded from a checkpoint each would get a float object of its own (32 bytes).
    """

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = nan

    def __call__(self, value: float) -> float:
        last = self.last
        # Equal and of the same sign: 0.0 == -0.0, but they are not the same time.
        if value == last and copysign(1.0, value) == copysign(1.0, last):
            return last
        self.last = value
        return value


def load_state(state: StateMachine, body: bytes, version: int) -> None:
    """Restore a checkpoint body of format ``version`` into an empty state machine.

    Raises:
        StoreCorrupted: The body does not decode as that version's state.
    """
    if version == 1:
        load_state_v1(state, body)
        return
    try:
        data = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise StoreCorrupted(f"checkpoint state is malformed: {exc}") from exc
    if data.version != STATE_VERSION:
        raise StoreCorrupted(f"checkpoint state version {data.version} unknown")
    t, k = state.tasks, state.keys
    # One record decoded at a time, each gone before the next: decoded all at once they
    # were 240 bytes a task of short-lived objects between the long-lived ones, memory
    # the process kept (about 970 bytes a task after loading, against 330 after replay).
    build, values, decode = TaskRecord.of, msgspec.structs.astuple, _record_decoder.decode
    when = _SharedTimes()
    for raw in data.records:
        try:
            rec = build(*values(decode(raw)))
        except msgspec.DecodeError as exc:
            raise StoreCorrupted(f"checkpoint state is malformed: {exc}") from exc
        rec.name, rec.queue = intern(rec.name), intern(rec.queue)  # one copy, not one a task
        rec.enqueued_at = when(rec.enqueued_at)
        t.records[rec.id] = rec
        t.counts[rec.state] += 1
        if rec.state is TaskState.RUNNING:
            t.running[rec.queue] = t.running.get(rec.queue, 0) + 1
            t.leases.push(rec.id, rec.lease_deadline or 0.0)
    # Every structure holds the record's own id, not the copy the body decoded for it
    # (a copy per structure per task, kept while the task is there).
    records = t.records
    for q, entries in data.ready.items():
        ready = t.ready.setdefault(q, ReadyQueue())
        for task_id, _ in entries:  # in claim order; each at its record's priority
            rec = records[task_id]
            ready.push(rec.id, rec.priority)
    for task_id, eta in data.delayed:
        t.delayed.push(records[task_id].id, eta)
    t.dead.update(dict.fromkeys(records[i].id for i in data.dead))
    t.paused.update(data.paused)
    k.kv.update({key: (v, exp) for key, v, exp in data.kv})
    k.names.update(data.names)
    t.expiry.extend((when, records[i].id if i in records else i) for when, i in data.expiry)
    t.next_token = data.token
    t.index.rebuild()
