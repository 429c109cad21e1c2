"""Log records that pass their checksum but whose body cannot be applied.

A record's frame (length, type, LSN, CRC) proves it is what was written, not that what
was written makes sense: a bug of an older version, or a hand-made edit, can log a task
without a name or a claim of a task that never existed. Recovery must not fail on one
such record (a store that cannot start takes every good task with it): a task it can
name is dead-lettered as ``malformed record`` with an error naming the field, anything
else is skipped, counted (``malformed_records`` in the store's figures) and logged.
"""

from __future__ import annotations

from typing import Any

from dtq_core.backends.base import NewTask

__all__ = ["MALFORMED", "placeholder", "task_flaw"]

#: Errors that applying a malformed body raises (never an I/O error: those fail-stop).
MALFORMED = (ValueError, TypeError, KeyError, IndexError, AttributeError)

_OPT_TEXT = ("dedup_key", "replayed_from", "workflow")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def task_flaw(d: Any) -> str | None:
    """What is wrong with a logged task (``OP_ENQ``'s first element), or ``None``."""
    if not isinstance(d, dict):
        return f"the task is a {type(d).__name__}, not an object"
    checks: list[tuple[str, bool, str]] = [
        ("id", isinstance(d.get("id"), str) and bool(d.get("id")), "a non-empty string"),
        ("name", isinstance(d.get("name"), str) and bool(d.get("name")), "a non-empty string"),
        ("queue", isinstance(d.get("queue"), str) and bool(d.get("queue")), "a non-empty string"),
        ("priority", _is_int(d.get("priority")), "an integer"),
        ("payload", isinstance(d.get("payload"), str) and d["payload"][:1] in ("j", "b"), "text"),
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


def placeholder(d: dict[str, Any]) -> NewTask:
    """A task record to dead-letter in place of malformed ``d`` (its readable fields)."""

    def text(field: str, default: str) -> str:
        v = d.get(field)
        return v if isinstance(v, str) and v else default

    return NewTask(str(d["id"]), text("name", "?"), text("queue", "default"), 0, b"")
