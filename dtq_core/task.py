"""Task records, states and the one transition table."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from dtq_core.errors import IllegalTransition


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


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An exception captured as data: its type name, message and formatted traceback."""

    type: str
    message: str
    traceback: str = ""
    #: ``(task id, name)`` of the tasks that were running in the same worker process
    #: when it died (``WorkerLost`` only; see :mod:`dtq_core.backends.lost`).
    beside: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
        }
        if self.beside:
            out["beside"] = [list(b) for b in self.beside]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorInfo:
        """Inverse of :meth:`to_dict`."""
        raw = data.get("beside")
        beside: tuple[tuple[str, str], ...] = ()
        if isinstance(raw, list):  # (Lua's cjson writes an empty list as {})
            beside = tuple(
                (str(b[0]), str(b[1])) for b in raw if isinstance(b, list) and len(b) == 2
            )
        return cls(str(data["type"]), str(data["message"]), str(data.get("traceback", "")), beside)


@dataclass(slots=True)
class Attempt:
    """One finished attempt that did not succeed (the last attempt lives on the record)."""

    number: int
    worker: str | None
    started_at: float | None
    finished_at: float | None
    outcome: str
    error: ErrorInfo | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "number": self.number,
            "worker": self.worker,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "outcome": self.outcome,
            "error": self.error.to_dict() if self.error else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Attempt:
        """Inverse of :meth:`to_dict`."""
        err = data.get("error")
        return cls(
            int(data["number"]),
            data.get("worker"),
            data.get("started_at"),
            data.get("finished_at"),
            str(data["outcome"]),
            ErrorInfo.from_dict(err) if err else None,
        )


@dataclass(slots=True)
class TaskRecord:
    """Everything known about one task; owned and mutated only by a backend.

    ``payload`` holds the encoded message (args, kwargs and per-call options); ``args``
    and ``kwargs`` decode it on demand. ``history`` keeps the attempts that failed; the
    current or last attempt is described by ``started_at``/``finished_at``/``worker``/
    ``error``.
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
    def from_dict(cls, data: dict[str, Any]) -> TaskRecord:
        """Rebuild a record from :meth:`to_dict` output made ``with_payload=True``."""
        err = data.get("error")
        return cls(
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
