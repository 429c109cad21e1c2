"""One filter language for tasks and dead letters, shared by the CLI and the console.

``task:NAME queue:NAME exc:TYPE state:STATE since:1h id:PREFIX text:WORDS``; bare words
are text. Values may be quoted. Unknown keys are an error naming the key.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from dtq_core.errors import ConfigError
from dtq_core.task import TaskRecord, TaskState

#: Filter keys understood by :func:`parse_filter`.
KEYS = ("task", "queue", "exc", "state", "since", "id", "text", "reason")

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw]?)$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """``90``, ``30s``, ``15m``, ``1h``, ``2d``, ``1w`` -> seconds."""
    m = _DURATION.match(text.strip().lower())
    if not m:
        raise ConfigError(f"bad duration {text!r}: use a number with s, m, h, d or w (e.g. 1h)")
    return float(m.group(1)) * _UNITS[m.group(2)]


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """A conjunction of conditions on task records; empty matches everything."""

    task: str | None = None
    queue: str | None = None
    exc: str | None = None
    states: frozenset[TaskState] = frozenset()
    since_s: float | None = None
    id_prefix: str | None = None
    text: str | None = None
    reason: str | None = None

    def is_empty(self) -> bool:
        """Whether the filter matches every record."""
        return self == TaskFilter()

    def matches(self, rec: TaskRecord, now: float) -> bool:
        """Whether ``rec`` passes every condition."""
        if self.states and rec.state not in self.states:
            return False
        if self.task is not None and rec.name != self.task:
            return False
        if self.queue is not None and rec.queue != self.queue:
            return False
        if self.id_prefix is not None and not rec.id.startswith(self.id_prefix):
            return False
        if self.exc is not None:
            if rec.error is None:
                return False
            etype = rec.error.type
            if etype != self.exc and etype.rsplit(".", 1)[-1] != self.exc:
                return False
        if self.reason is not None and self.reason.lower() not in (rec.dead_reason or "").lower():
            return False
        if self.since_s is not None:
            when = rec.finished_at or rec.enqueued_at
            if when < now - self.since_s:
                return False
        if self.text is not None:
            needle = self.text.lower()
            hay = " ".join(
                (
                    rec.id,
                    rec.name,
                    rec.payload.decode("utf-8", "replace"),
                    rec.error.type if rec.error else "",
                    rec.error.message if rec.error else "",
                    rec.dead_reason or "",
                )
            ).lower()
            if needle not in hay:
                return False
        return True

    def describe(self) -> str:
        """The filter written back in its own language."""
        parts = []
        for key, val in (
            ("task", self.task),
            ("queue", self.queue),
            ("exc", self.exc),
            ("id", self.id_prefix),
            ("reason", self.reason),
        ):
            if val is not None:
                parts.append(f"{key}:{_quote(val)}")
        parts.extend(f"state:{s.value.lower()}" for s in sorted(self.states))
        if self.since_s is not None:
            since = self.since_s
            parts.append(f"since:{int(since)}s" if since == int(since) else f"since:{since!r}s")
        if self.text is not None:
            parts.append(f"text:{_quote(self.text)}")
        return " ".join(parts)


def _quote(val: str) -> str:
    special = any(c.isspace() or c in "'\"\\" for c in val)
    return shlex.quote(val) if special or not val else val


def parse_filter(spec: str | list[str] | tuple[str, ...] | None) -> TaskFilter:
    """Parse the filter language into a :class:`TaskFilter`.

    Raises:
        ConfigError: Naming the bad key or value.
    """
    if not spec:
        return TaskFilter()
    if isinstance(spec, str):
        try:
            tokens = shlex.split(spec)
        except ValueError as exc:
            raise ConfigError(f"bad filter {spec!r}: {exc}") from None
    else:
        tokens = list(spec)
    fields: dict[str, str] = {}
    states: set[TaskState] = set()
    words: list[str] = []
    for tok in tokens:
        key, sep, val = tok.partition(":")
        if not sep:
            words.append(tok)
            continue
        key = key.lower()
        if key not in KEYS:
            raise ConfigError(
                f"unknown filter key {key!r} in {tok!r}: use one of {', '.join(KEYS)}"
            )
        if not val:
            raise ConfigError(f"filter {tok!r} has no value: write {key}:VALUE")
        if key == "state":
            for part in val.split(","):
                try:
                    states.add(TaskState(part.upper()))
                except ValueError:
                    names = ", ".join(s.value.lower() for s in TaskState)
                    raise ConfigError(f"unknown state {part!r}: use one of {names}") from None
        elif key == "text":
            words.append(val)
        else:
            fields[key] = val
    since = parse_duration(fields["since"]) if "since" in fields else None
    return TaskFilter(
        task=fields.get("task"),
        queue=fields.get("queue"),
        exc=fields.get("exc"),
        states=frozenset(states),
        since_s=since,
        id_prefix=fields.get("id"),
        text=" ".join(words) if words else None,
        reason=fields.get("reason"),
    )
