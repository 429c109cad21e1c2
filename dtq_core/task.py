"""Task records, states and the one transition table."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import msgspec

from dtq_core.errors import IllegalTransition
from dtq_core.packed import Packed, pack, unpack
from dtq_core.task_parts import (
    Attempt,
    ErrorInfo,
    Extras,
    InExtras,
    InRun,
    LastRun,
    RecordType,
    build,
    make_record,
)

__all__ = [
    "RECORD_FIELDS",
    "TERMINAL",
    "TRANSITIONS",
    "Attempt",
    "ErrorInfo",
    "Extras",
    "LastRun",
    "TaskRecord",
    "TaskState",
    "check_transition",
    "make_record",
]


class TaskState(StrEnum):
    """Lifecycle states of a task."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCESS = "SUCCESS"
    FAILED = "FAILED"
    RETRY = "RETRY"
    DEAD = "DEAD"
    CANCELLED = "CANCELLED"


S = TaskState

#: Every legal state change. RUNNING -> PENDING is a requeue (shutdown, lost lease,
#: deferral by a rate limit or an open breaker); PENDING/RUNNING -> DEAD covers messages
#: that can never run (unregistered task, too many deliveries).
TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    S.PENDING: frozenset({S.RUNNING, S.CANCELLED, S.DEAD}),
    S.RUNNING: frozenset({S.SUCCESS, S.FAILED, S.PENDING, S.DEAD}),
    S.FAILED: frozenset({S.RETRY, S.DEAD}),
    S.RETRY: frozenset({S.PENDING, S.CANCELLED}),
    S.SUCCESS: frozenset(),
    S.DEAD: frozenset(),
    S.CANCELLED: frozenset(),
}

#: States a settled task rests in: ``get()`` returns or raises once one is reached.
#: FAILED is also a step on the way to RETRY or DEAD, taken in the same backend call as
#: the next step; a task rests in FAILED only when it is neither retried nor
#: dead-lettered (``dead_letter=False``). DEAD is replayed as a new task.
TERMINAL: frozenset[TaskState] = frozenset({S.SUCCESS, S.FAILED, S.DEAD, S.CANCELLED})


def check_transition(task_id: str, old: TaskState, new: TaskState) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is in the table."""
    if new not in TRANSITIONS[old]:
        raise IllegalTransition(task_id, old.value, new.value)


#: The fields of :class:`TaskRecord`, in the order of its constructor.
RECORD_FIELDS = (
    "id", "name", "queue", "priority", "payload", "state", "created_at", "enqueued_at",
    "eta", "max_retries", "time_limit", "attempt", "deliveries", "started_at",
    "finished_at", "result", "error", "history", "replayed_from", "replayed_to",
    "dead_reason", "worker", "lease_token", "lease_deadline", "edits", "dedup_key",
    "workflow",
)  # fmt: skip


class TaskRecord(msgspec.Struct, metaclass=RecordType, gc=False):  # noqa: PLW1641 (mutable)
    """Everything known about one task; owned and mutated only by a backend.

    ``payload`` holds the encoded message (args, kwargs and per-call options); ``args``
    and ``kwargs`` decode it on demand. ``history`` keeps the attempts that failed; the
    current or last attempt is described by ``started_at``/``finished_at``/``worker``/
    ``error``.

    Built and read with every field of :data:`RECORD_FIELDS` (``TaskRecord(id=...,
    history=...)``, ``rec.history``), but stored compactly, as a store keeps millions:
    the fields of a queued task inline, those of its attempts in a :class:`LastRun`
    created by the first claim, and those few tasks set in an :class:`Extras` created
    when one is set. ``copy()`` and ``replace()`` stand for ``dataclasses.replace``.

    ``payload`` reads the bytes it was given, but a canonical message is kept as its
    tail after the id and task name (:mod:`dtq_core.packed`): it is rebuilt from ``id``
    and ``name``, which a record never changes (``replace()`` may: it unpacks first).
    """

    id: str
    name: str
    queue: str
    priority: int
    #: The payload as kept: whole bytes, or the :class:`~dtq_core.packed.Packed` tail
    #: of a canonical one (read ``payload``). Encoded under the name ``payload``.
    body: bytes | Packed = msgspec.field(name="payload")
    state: TaskState
    enqueued_at: float
    eta: float | None = None
    max_retries: int = 0
    time_limit: float | None = None
    last_run: LastRun | None = None
    extras: Extras | None = None

    attempt = InRun(0)
    deliveries = InRun(0)
    worker = InRun[str | None](None)
    started_at = InRun[float | None](None)
    finished_at = InRun[float | None](None)
    lease_token = InRun(0)
    lease_deadline = InRun[float | None](None)
    result = InRun[Any](None)
    error = InRun[ErrorInfo | None](None)
    history = InExtras[tuple[Attempt, ...]](())
    replayed_from = InExtras[str | None](None)
    replayed_to = InExtras[tuple[str, ...]](())
    dead_reason = InExtras[str | None](None)
    edits = InExtras[tuple[dict[str, Any], ...]](())
    dedup_key = InExtras[str | None](None)
    workflow = InExtras[str | None](None)

    @property
    def payload(self) -> bytes:
        """The encoded message, exactly the bytes the task was stored with."""
        body = self.body
        if type(body) is not Packed:
            return body  # type: ignore[return-value]
        return unpack(self.id, self.name, body)

    @payload.setter
    def payload(self, value: bytes) -> None:
        self.body = pack(self.id, self.name, value)

    @property
    def created_at(self) -> float:
        """When the task was created (``enqueued_at`` unless set otherwise)."""
        extras = self.extras
        if extras is None or extras.created_at is None:
            return self.enqueued_at
        return extras.created_at

    @created_at.setter
    def created_at(self, value: float) -> None:
        extras = self.extras
        if extras is None:
            if value == self.enqueued_at:
                return
            extras = self.extras = Extras()
        extras.created_at = value

    def values(self) -> tuple[Any, ...]:
        """Every field's value, in the order of :data:`RECORD_FIELDS`."""
        run = self.last_run or _NO_RUN
        ex = self.extras or _NO_EXTRAS
        return (
            self.id, self.name, self.queue, self.priority, self.payload, self.state,
            self.enqueued_at if ex.created_at is None else ex.created_at, self.enqueued_at,
            self.eta, self.max_retries, self.time_limit, run.attempt, run.deliveries,
            run.started_at, run.finished_at, run.result, run.error, ex.history,
            ex.replayed_from, ex.replayed_to, ex.dead_reason, run.worker, run.lease_token,
            run.lease_deadline, ex.edits, ex.dedup_key, ex.workflow,
        )  # fmt: skip

    def copy(self) -> TaskRecord:
        """A copy that later changes to this record do not reach."""
        run, ex = self.last_run, self.extras
        return make_record(  # type: ignore[no-any-return]
            TaskRecord,
            self.id, self.name, self.queue, self.priority, self.body, self.state,
            self.enqueued_at, self.eta, self.max_retries, self.time_limit,
            None if run is None else msgspec.structs.replace(run),
            None if ex is None else msgspec.structs.replace(ex),
        )  # fmt: skip

    __copy__ = copy

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # By the stored fields: msgspec's own reduce would call the class, whose
        # constructor takes every field of RECORD_FIELDS in another order.
        return _restore, msgspec.structs.astuple(self)

    def replace(self, **changes: Any) -> TaskRecord:
        """A copy with ``changes`` (fields of :data:`RECORD_FIELDS`) applied."""
        out = self.copy()
        for key in changes:
            if key not in _FIELD_SET:
                raise TypeError(f"TaskRecord has no field {key!r}")
        if "id" in changes or "name" in changes:
            # A packed payload is read through both: it is set again once they are.
            changes.setdefault("payload", self.payload)
        payload = changes.pop("payload", _UNSET)
        for key, value in changes.items():
            setattr(out, key, value)
        if payload is not _UNSET:
            out.payload = payload
        return out

    def __eq__(self, other: object) -> bool:
        if type(other) is not TaskRecord:
            return NotImplemented
        return self.values() == other.values()

    def message(self) -> dict[str, Any]:
        """The decoded message envelope."""
        from dtq_core.codec import decode_message

        return decode_message(self.payload)

    @property
    def args(self) -> list[Any]:
        """Positional arguments (decoded from the payload)."""
        return list(self.message()["args"])

    @property
    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments (decoded from the payload)."""
        return dict(self.message()["kwargs"])

    def attempts(self) -> list[Attempt]:
        """All attempts, the failed ones from history plus the current or last one."""
        out = list(self.history)
        if self.started_at is not None and (not out or out[-1].number != self.attempt):
            outcome = self.state.value if self.state is not TaskState.PENDING else "RUNNING"
            out.append(
                Attempt(
                    self.attempt,
                    self.worker,
                    self.started_at,
                    self.finished_at,
                    outcome,
                    self.error if self.state in (S.FAILED, S.DEAD) else None,
                )
            )
        return out

    def to_dict(self, *, with_payload: bool = False) -> dict[str, Any]:
        """JSON-ready form; args and kwargs are decoded (the payload only on request)."""
        try:
            msg = self.message()
            args, kwargs, opts = msg["args"], msg["kwargs"], msg.get("opts", {})
        except Exception:  # a record of a message that never decoded (dead-lettered)
            args, kwargs, opts = None, None, {}
        data: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "queue": self.queue,
            "priority": self.priority,
            "state": self.state.value,
            "args": args,
            "kwargs": kwargs,
            "options": opts,
            "created_at": self.created_at,
            "enqueued_at": self.enqueued_at,
            "eta": self.eta,
            "max_retries": self.max_retries,
            "time_limit": self.time_limit,
            "attempt": self.attempt,
            "deliveries": self.deliveries,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "result": self.result,
            "error": self.error.to_dict() if self.error else None,
            "history": [a.to_dict() for a in self.history],
            "replayed_from": self.replayed_from,
            "replayed_to": list(self.replayed_to),
            "dead_reason": self.dead_reason,
            "worker": self.worker,
            "lease_deadline": self.lease_deadline,
            "edits": list(self.edits),
            "dedup_key": self.dedup_key,
            "workflow": self.workflow,
        }
        if with_payload:
            data["payload"] = self.payload.decode("utf-8", "replace")
        return data

    @classmethod
    def of(cls, *args: Any, **kwargs: Any) -> TaskRecord:
        """``TaskRecord(...)`` with every field of :data:`RECORD_FIELDS`, typed for mypy.

        (mypy reads the class's constructor as that of its stored fields.)
        """
        return build(cls, *args, **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskRecord:
        """Rebuild a record from :meth:`to_dict` output made ``with_payload=True``."""
        err = data.get("error")
        return cls.of(
            id=data["id"],
            name=data["name"],
            queue=data["queue"],
            priority=int(data["priority"]),
            payload=str(data["payload"]).encode(),
            state=TaskState(data["state"]),
            created_at=float(data["created_at"]),
            enqueued_at=float(data["enqueued_at"]),
            eta=data.get("eta"),
            max_retries=int(data.get("max_retries", 0)),
            time_limit=data.get("time_limit"),
            attempt=int(data.get("attempt", 0)),
            deliveries=int(data.get("deliveries", 0)),
            started_at=data.get("started_at"),
            finished_at=data.get("finished_at"),
            result=data.get("result"),
            error=ErrorInfo.from_dict(err) if err else None,
            history=tuple(Attempt.from_dict(a) for a in data.get("history", [])),
            replayed_from=data.get("replayed_from"),
            replayed_to=tuple(data.get("replayed_to", [])),
            dead_reason=data.get("dead_reason"),
            worker=data.get("worker"),
            lease_deadline=data.get("lease_deadline"),
            edits=tuple(data.get("edits", [])),
            dedup_key=data.get("dedup_key"),
            workflow=data.get("workflow"),
        )


def _restore(*stored: Any) -> TaskRecord:
    """A record from its stored fields (unpickling)."""
    return make_record(TaskRecord, *stored)  # type: ignore[no-any-return]


_UNSET: Any = object()
_NO_RUN = LastRun()
_NO_EXTRAS = Extras()
_FIELD_SET = frozenset(RECORD_FIELDS)
