"""Task records as Redis stores them: the hash of a record back to a ``TaskRecord``."""

from __future__ import annotations

import json
from typing import Any

from dtq_core.task import Attempt, ErrorInfo, TaskRecord, TaskState


def _s(v: bytes | str | None) -> str:
    if v is None:
        return ""
    return v.decode() if isinstance(v, bytes) else v


def _f(v: bytes | str | None) -> float | None:
    s = _s(v)
    return float(s) if s else None


def _opt(v: Any) -> str:
    return "" if v is None else repr(v) if isinstance(v, float) else str(v)


def _record(h: dict[bytes, bytes], task_id: str, queue: str) -> TaskRecord:
    """The hash of task ``task_id``'s record in ``queue`` as a :class:`TaskRecord`.

    A field that is missing or cannot be read (written by hand, or by an older
    version) reads as its default, so that listings and the console never fail on one
    bad record; the claim and settle scripts dead-letter such a record as
    ``malformed record``.
    """
    g = {_s(k): v for k, v in h.items()}

    def text(name: str, default: str = "") -> str:
        return _s(g.get(name)) or default

    def num(name: str, kind: Any, default: Any) -> Any:
        try:
            return kind(_s(g.get(name))) if g.get(name) not in (None, b"", "") else default
        except (TypeError, ValueError):
            return default

    def js(name: str, default: Any) -> Any:
        try:
            v = json.loads(_s(g.get(name)) or "null")
        except ValueError:
            return default
        return v if isinstance(v, type(default)) or (default is None and v is not None) else default

    def seq(name: str, make: Any) -> tuple[Any, ...]:
        try:
            return tuple(make(a) for a in js(name, []))
        except (TypeError, ValueError, KeyError, AttributeError):
            return ()

    try:
        state = TaskState(text("state"))
    except ValueError:
        state = TaskState.DEAD if text("dead_reason") else TaskState.PENDING
    # A record leaves out what holds its first value (see ``create`` in the scripts):
    # its id and queue are its key's, its creation time its enqueue time.
    created = num("created_at", float, None)
    enqueued = num("enqueued_at", float, created)
    err = js("error", None)
    try:
        error = ErrorInfo.from_dict(err) if isinstance(err, dict) else None
    except (TypeError, KeyError):
        error = None
    return TaskRecord.of(
        id=text("id", task_id),
        name=text("name", "?"),
        queue=text("queue", queue),
        priority=num("priority", int, 0),
        payload=bytes(g.get("payload") or b""),
        state=state,
        created_at=created if created is not None else enqueued or 0.0,
        enqueued_at=enqueued if enqueued is not None else 0.0,
        eta=num("eta", float, None),
        max_retries=num("max_retries", int, 0),
        time_limit=num("time_limit", float, None),
        attempt=num("attempt", int, 0),
        deliveries=num("deliveries", int, 0),
        started_at=num("started_at", float, None),
        finished_at=num("finished_at", float, None),
        result=js("result", None),
        error=error,
        history=seq("history", Attempt.from_dict),
        replayed_from=text("replayed_from") or None,
        replayed_to=seq("replayed_to", str),
        dead_reason=text("dead_reason") or None,
        worker=text("worker") or None,
        lease_token=num("lease_token", int, 0),
        lease_deadline=num("lease_deadline", float, None),
        edits=seq("edits", lambda e: e),
        dedup_key=text("dedup_key") or None,
        workflow=text("workflow") or None,
    )
