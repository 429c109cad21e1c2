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


def _record(h: dict[bytes, bytes]) -> TaskRecord:
    g = {_s(k): v for k, v in h.items()}

    def js(name: str, default: Any) -> Any:
        raw = _s(g.get(name))
        return json.loads(raw) if raw else default

    err = js("error", None)
    return TaskRecord(
        id=_s(g["id"]),
        name=_s(g["name"]),
        queue=_s(g["queue"]),
        priority=int(_s(g["priority"])),
        payload=bytes(g["payload"]),
        state=TaskState(_s(g["state"])),
        created_at=float(_s(g["created_at"])),
        enqueued_at=float(_s(g["enqueued_at"])),
        eta=_f(g.get("eta")),
        max_retries=int(_s(g.get("max_retries")) or 0),
        time_limit=_f(g.get("time_limit")),
        attempt=int(_s(g.get("attempt")) or 0),
        deliveries=int(_s(g.get("deliveries")) or 0),
        started_at=_f(g.get("started_at")),
        finished_at=_f(g.get("finished_at")),
        result=js("result", None),
        error=ErrorInfo.from_dict(err) if err else None,
        history=tuple(Attempt.from_dict(a) for a in js("history", [])),
        replayed_from=_s(g.get("replayed_from")) or None,
        replayed_to=tuple(js("replayed_to", [])),
        dead_reason=_s(g.get("dead_reason")) or None,
        worker=_s(g.get("worker")) or None,
        lease_token=int(_s(g.get("lease_token")) or 0),
        lease_deadline=_f(g.get("lease_deadline")),
        edits=tuple(js("edits", [])),
        dedup_key=_s(g.get("dedup_key")) or None,
        workflow=_s(g.get("workflow")) or None,
    )
