"""The parts of a task record: errors, attempts, and the optional parts of a record.

:class:`~dtq_core.task.TaskRecord` keeps the fields of a queued task inline and the
rest in two parts made only when they hold something: :class:`LastRun` (the current or
last attempt, made by the first claim) and :class:`Extras` (fields few tasks set). A
store holds millions of records; a queued one costs its inline fields alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, overload

import msgspec

from dtq_core.packed import pack

if TYPE_CHECKING:
    from dtq_core.task import TaskRecord, TaskState


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


class LastRun(msgspec.Struct, gc=False):
    """The current or last attempt of a task (absent until its first claim)."""

    attempt: int = 0
    deliveries: int = 0
    worker: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    lease_token: int = 0
    lease_deadline: float | None = None
    result: Any = None
    error: ErrorInfo | None = None


class Extras(msgspec.Struct, gc=False):
    """The fields few tasks set (absent until one is)."""

    #: ``None``: the same as ``enqueued_at``.
    created_at: float | None = None
    history: tuple[Attempt, ...] = ()
    replayed_from: str | None = None
    replayed_to: tuple[str, ...] = ()
    dead_reason: str | None = None
    edits: tuple[dict[str, Any], ...] = ()
    dedup_key: str | None = None
    workflow: str | None = None


_T = TypeVar("_T")


class InRun(Generic[_T]):
    """A field of :class:`~dtq_core.task.TaskRecord` kept in its :class:`LastRun`."""

    __slots__ = ("default", "name")

    def __init__(self, default: _T) -> None:
        self.default = default
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, rec: None, owner: type | None = None) -> InRun[_T]: ...
    @overload
    def __get__(self, rec: TaskRecord, owner: type | None = None) -> _T: ...
    def __get__(self, rec: TaskRecord | None, owner: type | None = None) -> Any:
        if rec is None:
            return self
        run = rec.last_run
        return self.default if run is None else getattr(run, self.name)

    def __set__(self, rec: TaskRecord, value: _T) -> None:
        run = rec.last_run
        if run is None:
            if value is self.default or value == self.default:
                return
            run = rec.last_run = LastRun()
        setattr(run, self.name, value)


class InExtras(InRun[_T]):
    """A field of :class:`~dtq_core.task.TaskRecord` kept in its :class:`Extras`."""

    __slots__ = ()

    @overload
    def __get__(self, rec: None, owner: type | None = None) -> InExtras[_T]: ...
    @overload
    def __get__(self, rec: TaskRecord, owner: type | None = None) -> _T: ...
    def __get__(self, rec: TaskRecord | None, owner: type | None = None) -> Any:
        if rec is None:
            return self
        extras = rec.extras
        return self.default if extras is None else getattr(extras, self.name)

    def __set__(self, rec: TaskRecord, value: _T) -> None:
        extras = rec.extras
        if extras is None:
            if value is self.default or value == self.default:
                return
            extras = rec.extras = Extras()
        setattr(extras, self.name, value)


#: Builds a record from its stored fields without the keyword constructor (the store's
#: path: several times faster).
make_record = msgspec.StructMeta.__call__


class RecordType(msgspec.StructMeta):
    """Gives :class:`~dtq_core.task.TaskRecord` the constructor of every field."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        """``TaskRecord(...)``: :func:`build` (typed callers call ``TaskRecord.of``)."""
        return build(cls, *args, **kwargs)


def build(
    cls: type[Any],
    id: str,
    name: str,
    queue: str,
    priority: int,
    payload: bytes,
    state: TaskState,
    created_at: float,
    enqueued_at: float,
    eta: float | None = None,
    max_retries: int = 0,
    time_limit: float | None = None,
    attempt: int = 0,
    deliveries: int = 0,
    started_at: float | None = None,
    finished_at: float | None = None,
    result: Any = None,
    error: ErrorInfo | None = None,
    history: tuple[Attempt, ...] = (),
    replayed_from: str | None = None,
    replayed_to: tuple[str, ...] = (),
    dead_reason: str | None = None,
    worker: str | None = None,
    lease_token: int = 0,
    lease_deadline: float | None = None,
    edits: tuple[dict[str, Any], ...] = (),
    dedup_key: str | None = None,
    workflow: str | None = None,
) -> TaskRecord:
    """A ``cls`` (:class:`~dtq_core.task.TaskRecord`) with every field, as ``cls(...)``.

    Each part is made only when one of its fields holds a value; a canonical payload
    is kept packed (:func:`dtq_core.packed.pack`).
    """
    run = None
    if (
        attempt or deliveries or lease_token or worker is not None or started_at is not None
        or finished_at is not None or lease_deadline is not None or result is not None
        or error is not None
    ):  # fmt: skip
        run = LastRun(
            attempt, deliveries, worker, started_at, finished_at, lease_token,
            lease_deadline, result, error,
        )  # fmt: skip
    extras = None
    if (
        created_at != enqueued_at or history or replayed_from is not None or replayed_to
        or dead_reason is not None or edits or dedup_key is not None or workflow is not None
    ):  # fmt: skip
        extras = Extras(
            None if created_at == enqueued_at else created_at, tuple(history), replayed_from,
            tuple(replayed_to), dead_reason, tuple(edits), dedup_key, workflow,
        )  # fmt: skip
    return make_record(  # type: ignore[no-any-return]
        cls, id, name, queue, priority, pack(id, name, payload), state, enqueued_at, eta,
        max_retries, time_limit, run, extras,
    )  # fmt: skip
