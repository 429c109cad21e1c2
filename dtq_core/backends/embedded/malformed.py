"""Log records that pass their checksum but whose body cannot be applied.

A record's frame (length, type, LSN, CRC) proves it is what was written, not that what
was written makes sense: a bug of an older version, or a hand-made edit, can log a task
without a name or a claim of a task that never existed. Recovery must not fail on one
such record (a store that cannot start takes every good task with it): a task it can
name is dead-lettered as ``malformed record`` with an error naming the field, anything
else is skipped, counted (``malformed_records`` in the store's figures) and logged.

Both record formats get this treatment: a version-2 enqueue whose body fails its schema
is read again field by field (:func:`v2_enqueue`), a version-1 one by :mod:`.legacy`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from dtq_core.backends.changes import TaskSpec

__all__ = ["MALFORMED", "MalformedTasks", "placeholder", "task_flaw", "v2_enqueue"]

#: Errors that applying a malformed body raises (never an I/O error: those fail-stop).
#: ``msgspec``'s decode and validation errors are ``ValueError``s.
MALFORMED = (ValueError, TypeError, KeyError, IndexError, AttributeError)

_OPT_TEXT = ("dedup_key", "replayed_from", "workflow")
_FIELDS = TaskSpec.__struct_fields__


class MalformedTasks(ValueError):
    """An enqueue record with tasks that cannot be read but can be named.

    Recovery enqueues ``good`` and dead-letters each of ``bad`` (``(fields, why)``).
    """

    def __init__(
        self, now: float, good: list[TaskSpec], bad: list[tuple[dict[str, Any], str]]
    ) -> None:
        super().__init__(f"{len(bad)} malformed task(s)")
        self.now = now
        self.good = good
        self.bad = bad


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def task_flaw(d: Any, *, v1: bool = True) -> str | None:
    """What is wrong with a logged task (as a dict of its fields), or ``None``.

    ``v1``: the payload is version-1 text (``j`` + JSON or ``b`` + base64), not bytes.
    """
    if not isinstance(d, dict):
        return f"the task is a {type(d).__name__}, not an object"
    pay = d.get("payload")
    pay_ok = isinstance(pay, str) and pay[:1] in ("j", "b") if v1 else isinstance(pay, bytes)
    checks: list[tuple[str, bool, str]] = [
        ("id", isinstance(d.get("id"), str) and bool(d.get("id")), "a non-empty string"),
        ("name", isinstance(d.get("name"), str) and bool(d.get("name")), "a non-empty string"),
        ("queue", isinstance(d.get("queue"), str) and bool(d.get("queue")), "a non-empty string"),
        ("priority", _is_int(d.get("priority")), "an integer"),
        ("payload", pay_ok, "text" if v1 else "bytes"),
        ("eta", d.get("eta") is None or _is_num(d.get("eta")), "a number or null"),
        ("max_retries", _is_int(d.get("max_retries")), "an integer"),
        ("time_limit", d.get("time_limit") is None or _is_num(d.get("time_limit")), "a number"),
    ]
    checks += [(f, d.get(f) is None or isinstance(d.get(f), str), "a string") for f in _OPT_TEXT]
    for field, ok, want in checks:
        if field not in d:  # every field is always logged, null or not
            return f"field '{field}' is missing"
        if not ok:
            return f"field '{field}' is not {want}: {str(d.get(field))[:40]!r}"
    return None


def nameable(d: Any) -> bool:
    """Whether a malformed task can still be named (a string id): it is dead-lettered."""
    return isinstance(d, dict) and isinstance(d.get("id"), str) and bool(d["id"])


def placeholder(d: dict[str, Any]) -> TaskSpec:
    """A task to dead-letter in place of malformed ``d`` (its readable fields)."""

    def text(field: str, default: str) -> str:
        v = d.get(field)
        return v if isinstance(v, str) and v else default

    return TaskSpec(
        str(d["id"]),
        text("name", "?"),
        text("queue", "default"),
        0,
        b"",
        None,
        0,
        None,
        None,
        None,
        None,
    )


def v2_enqueue(body: bytes) -> MalformedTasks | None:
    """Read a version-2 enqueue that failed its schema task by task.

    Returns the good and the nameable bad tasks, or ``None`` when the body is not an
    enqueue or names none of its tasks (it is then skipped as a whole).
    """
    try:
        raw: Any = msgspec.msgpack.decode(body)
    except msgspec.DecodeError:
        return None
    if not (isinstance(raw, list) and len(raw) == 3 and raw[0] == "enqueue"):
        return None
    now, tasks = raw[1], raw[2]
    if not _is_num(now) or not isinstance(tasks, list):
        return None
    good: list[TaskSpec] = []
    bad: list[tuple[dict[str, Any], str]] = []
    for item in tasks:
        d = dict(zip(_FIELDS, item, strict=False)) if isinstance(item, list) else item
        why = task_flaw(d, v1=False)
        if why is None:
            good.append(msgspec.convert(item, TaskSpec))
        elif nameable(d):
            bad.append((d, why))
        else:
            return None
    return MalformedTasks(float(now), good, bad) if bad else None
