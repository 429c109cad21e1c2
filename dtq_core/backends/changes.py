"""The changes of the in-memory state machine, as typed records.

Every change to the state of :class:`~dtq_core.backends.local.LocalBackend` is one of
these records, applied by one function per type
(:meth:`~dtq_core.backends.memory_state.StateMachine.apply`). The memory backend
applies them and forgets them; the embedded store appends each to its write-ahead log
first and replays them at recovery, so a live change and its replay run the same code.

A record states the outcome of a decision, never a request: a claim names the tasks it
took and the tokens it gave them, a lease reclaim whether each task was requeued or
dead-lettered, an expiry the ids it dropped. Applying one is therefore deterministic.

The records are ``msgspec`` structs encoded as arrays with a string tag first
(``["ack", now, [[id, token, result], ...]]``); ``FORMAT.md`` in
``dtq_core/backends/embedded/`` specifies each field. Changing a record is a change of
the on-disk format: add a type (and a log format version), never edit one in place.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dtq_core.task import ErrorInfo


class TaskSpec(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """A new task as logged: what :class:`~dtq_core.backends.base.NewTask` holds."""

    id: str
    name: str
    queue: str
    priority: int
    payload: bytes
    eta: float | None
    max_retries: int
    time_limit: float | None
    dedup_key: str | None
    replayed_from: str | None
    workflow: str | None


class Enqueue(msgspec.Struct, array_like=True, tag="enqueue", gc=False):
    """New PENDING tasks, ready at once or at their ``eta``."""

    now: float
    tasks: list[TaskSpec]


class Claim(msgspec.Struct, array_like=True, tag="claim", gc=False):
    """Ready tasks leased to ``worker`` until ``deadline`` (PENDING -> RUNNING)."""

    now: float
    worker: str
    deadline: float
    #: ``(task id, lease token)`` per task, in the order they were taken.
    tasks: list[tuple[str, int]]


class Ack(msgspec.Struct, array_like=True, tag="ack", gc=False):
    """Acknowledgements (RUNNING -> SUCCESS); one whose token is stale changes nothing."""

    now: float
    #: ``(task id, lease token, result)``; the result in its JSON form.
    acks: list[tuple[str, int, Any]]


class Fail(msgspec.Struct, array_like=True, tag="fail", gc=False):
    """RUNNING -> FAILED, then RETRY at ``retry_at`` or DEAD for ``dead_reason``."""

    now: float
    task_id: str
    token: int
    error: ErrorInfo
    retry_at: float | None
    dead_reason: str | None


class Bury(msgspec.Struct, array_like=True, tag="bury", gc=False):
    """RUNNING -> DEAD for a message that can never run."""

    now: float
    task_id: str
    token: int
    error: ErrorInfo
    reason: str


class Release(msgspec.Struct, array_like=True, tag="release", gc=False):
    """RUNNING -> PENDING without counting an attempt."""

    now: float
    task_id: str
    token: int
    eta: float | None
    note: str


class Reclaim(msgspec.Struct, array_like=True, tag="reclaim", gc=False):
    """Leases that ran out: each task requeued, or dead-lettered as ``worker_lost``."""

    now: float
    #: ``(task id, dead-lettered)`` per task.
    tasks: list[tuple[str, bool]]


class Promote(msgspec.Struct, array_like=True, tag="promote", gc=False):
    """Delayed tasks that came due, moved to their ready queues."""

    now: float
    task_ids: list[str]


class Cancel(msgspec.Struct, array_like=True, tag="cancel", gc=False):
    """PENDING/RETRY -> CANCELLED."""

    now: float
    task_id: str


class Pause(msgspec.Struct, array_like=True, tag="pause", gc=False):
    """A queue paused (no claims) or resumed."""

    queue: str
    paused: bool


class Replay(msgspec.Struct, array_like=True, tag="replay", gc=False):
    """A dead task enqueued again as a new task (optionally with edited arguments)."""

    now: float
    dead_id: str
    task: TaskSpec
    edit: dict[str, Any] | None


class Purge(msgspec.Struct, array_like=True, tag="purge", gc=False):
    """Dead records deleted."""

    task_ids: list[str]


class Expire(msgspec.Struct, array_like=True, tag="expire", gc=False):
    """Finished records dropped (their result TTL ran out, or too many were kept)."""

    task_ids: list[str]


class KeySet(msgspec.Struct, array_like=True, tag="key-set", gc=False):
    """A key's new value, and when it expires (``None``: never)."""

    key: str
    value: str
    expires_at: float | None


class KeyDelete(msgspec.Struct, array_like=True, tag="key-delete", gc=False):
    """A key removed."""

    key: str


class Names(msgspec.Struct, array_like=True, tag="names", gc=False):
    """Task names a worker can run."""

    names: list[str]


#: Every change, as one tagged union: a decoder of this type reads any record.
Change = (
    Enqueue
    | Claim
    | Ack
    | Fail
    | Bury
    | Release
    | Reclaim
    | Promote
    | Cancel
    | Pause
    | Replay
    | Purge
    | Expire
    | KeySet
    | KeyDelete
    | Names
)

#: The record types, in the order FORMAT.md lists them.
CHANGE_TYPES: tuple[type[Any], ...] = (
    Enqueue,
    Claim,
    Ack,
    Fail,
    Bury,
    Release,
    Reclaim,
    Promote,
    Cancel,
    Pause,
    Replay,
    Purge,
    Expire,
    KeySet,
    KeyDelete,
    Names,
)


def tag_of(change: Any) -> str:
    """The tag a record is encoded with (``"enqueue"``, ``"ack"``...)."""
    return str(type(change).__struct_config__.tag)
