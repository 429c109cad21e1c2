"""Periodic tasks: ``@periodic(cron=...)`` and the scheduler that fires each tick once.

The last fire time of every schedule is persisted through the backend, so a restart
neither double-fires nor forgets. The enqueued task's id is derived from the tick, and
enqueueing an existing id fails atomically in every backend, so any number of
schedulers sharing a backend (or one restarted mid-tick) fire each tick once. After
downtime, ``missed="skip"`` resumes at the next tick and ``missed="catch_up"`` runs once
for all missed ticks.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from dtq_core.client import Task, task
from dtq_core.errors import BackendError, ConfigError
from dtq_core.hooks import Hook
from dtq_core.registry import Registry
from dtq_core.scheduling.cron import CronExpression
from dtq_core.snapshot import ScheduleSnapshot

if TYPE_CHECKING:
    from dtq_core.broker import Broker

#: Prefix of the backend keys of schedule state.
PREFIX = "dtq:cron:"
#: A tick due less than this long ago is on time, not missed (scheduler latency).
GRACE_S = 60.0

Missed = Literal["skip", "catch_up"]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(slots=True)
class Schedule:
    """One cron schedule of a registered task."""

    name: str
    task: str
    cron: CronExpression
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    missed: Missed = "skip"
    queue: str | None = None


class ScheduleRegistry:
    """The schedules known to this process."""

    def __init__(self) -> None:
        self._items: dict[str, Schedule] = {}
        self._lock = threading.Lock()

    def add(self, schedule: Schedule) -> None:
        """Register ``schedule`` (a name already used is an error)."""
        with self._lock:
            old = self._items.get(schedule.name)
            if old is not None and old.task != schedule.task:
                raise ConfigError(f"schedule name {schedule.name!r} is already used")
            self._items[schedule.name] = schedule

    def get(self, name: str) -> Schedule | None:
        """The schedule called ``name``."""
        return self._items.get(name)

    def all(self) -> list[Schedule]:
        """Every schedule, by name."""
        with self._lock:
            return [self._items[k] for k in sorted(self._items)]

    def remove(self, name: str) -> None:
        """Forget a schedule."""
        with self._lock:
            self._items.pop(name, None)


#: Schedules registered by ``@periodic``.
default_schedules = ScheduleRegistry()


def periodic(
    cron: str,
    *,
    tz: str | None = None,
    name: str | None = None,
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    missed: Missed = "skip",
    registry: Registry | None = None,
    schedules: ScheduleRegistry | None = None,
    **task_options: Any,
) -> Callable[[Callable[..., Any]], Task[Any, Any]]:
    """Register a function as a task that runs on a cron schedule.

    Args:
        cron: A cron expression (five fields, or six with seconds, or a macro).
        tz: IANA time zone of the expression (default UTC).
        name: Schedule and task name (default: the function's qualified name).
        args: Arguments of every run.
        kwargs: Keyword arguments of every run.
        missed: After downtime, ``skip`` missed ticks or ``catch_up`` with one run.
        registry: Task registry (the global one by default).
        schedules: Schedule registry (the global one by default).
        **task_options: Options of the task (queue, retries...).

    Raises:
        CronError: For a malformed expression, naming the field.
    """
    expr = CronExpression(cron, tz)
    if missed not in ("skip", "catch_up"):
        raise ConfigError(f"missed must be skip or catch_up, not {missed!r}")

    def wrap(fn: Callable[..., Any]) -> Task[Any, Any]:
        t = (
            task(name=name, registry=registry, **task_options)(fn)
            if name
            else task(registry=registry, **task_options)(fn)
        )
        (schedules or default_schedules).add(
            Schedule(
                t.name,
                t.name,
                expr,
                list(args or []),
                dict(kwargs or {}),
                missed,
                task_options.get("queue"),
            )
        )
        return t

    return wrap


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class PeriodicHook(Hook):
    """Fires due cron ticks from the broker's maintenance thread."""

    def __init__(self, schedules: ScheduleRegistry | None = None) -> None:
        self.schedules = schedules or default_schedules
        self._started: float | None = None

    def attach(self, broker: Broker) -> None:
        """Record when each schedule was first seen on this backend.

        First runs count from there, not from this process's start.
        """
        now = self._started = broker.clock.now()
        for s in self.schedules.all():
            with contextlib.suppress(BackendError):  # retried by the first tick
                self._since(broker, s, now)

    def _since(self, broker: Broker, s: Schedule, now: float) -> float:
        first = repr(self._started or now)
        seen = broker.backend.set_if_absent(
            PREFIX + f"since:{s.name}", first, 10 * 365 * 86400.0, now
        )
        return float(seen if seen is not None else first)

    def _get(self, broker: Broker, suffix: str, now: float) -> str | None:
        return broker.backend.get_key(PREFIX + suffix, now)

    def tick(self, broker: Broker, now: float) -> float | None:
        """Fire every due schedule once; return the next fire time."""
        nxt: float | None = None
        for s in self.schedules.all():
            try:
                when = self._fire_due(broker, s, now)
            except BackendError:
                continue
            if when is not None:
                nxt = when if nxt is None else min(nxt, when)
        return nxt

    def _fire_due(self, broker: Broker, s: Schedule, now: float) -> float | None:
        last_raw = self._get(broker, f"last:{s.name}", now)
        # No fire yet: count from when a scheduler first saw this schedule (persisted,
        # so a scheduler restarted before the first tick was sent still sends it).
        base = float(last_raw) if last_raw is not None else self._since(broker, s, now)
        if self._get(broker, f"paused:{s.name}", now) is not None:
            # Ticks that pass while paused are skipped, not missed: resuming replays none.
            if s.cron.next(_dt(base)).timestamp() <= now:
                latest = s.cron.prev(_dt(now + 1e-6)).timestamp()
                broker.backend.set_key(PREFIX + f"last:{s.name}", repr(latest), None, now)
            return s.cron.next(_dt(now)).timestamp()
        due = s.cron.next(_dt(base)).timestamp()
        if due > now:
            return due
        # The latest tick at or before now.
        latest = s.cron.prev(_dt(now + 1e-6)).timestamp()
        on_time = now - latest <= GRACE_S
        if on_time or s.missed == "catch_up":
            self._fire(broker, s, latest, now, "catch_up" if not on_time else "tick")
        else:
            broker.backend.set_key(PREFIX + f"last:{s.name}", repr(latest), None, now)
        return s.cron.next(_dt(latest)).timestamp()

    def _fire(self, broker: Broker, s: Schedule, tick: float, now: float, why: str) -> str | None:
        backend = broker.backend
        # The task id derived from the tick is the lock: of several schedulers (or a
        # restarted one) only the first enqueue of this id succeeds, the others get
        # BackendError; a scheduler that dies before sending leaves nothing behind.
        task_id = f"cron-{s.name}-{int(tick)}"
        try:
            broker.send(s.task, s.args, s.kwargs, queue=s.queue, task_id=task_id)
        except BackendError:
            return None  # fired already, by another scheduler or before a restart
        backend.set_key(PREFIX + f"last:{s.name}", repr(tick), None, now)
        self._record_fire(broker, s.name, tick, task_id, now, manual=False)
        count = backend.get_key(PREFIX + f"fired:{s.name}", now)
        backend.set_key(PREFIX + f"fired:{s.name}", str(int(count or 0) + 1), None, now)
        return task_id

    def trigger(self, broker: Broker, name: str) -> str:
        """Enqueue a schedule's task now (not a tick: the schedule is unchanged)."""
        s = self._require(name)
        res = broker.send(s.task, s.args, s.kwargs, queue=s.queue)
        now = broker.clock.now()
        self._record_fire(broker, s.name, now, res.id, now, manual=True)
        return res.id

    def _record_fire(
        self, broker: Broker, name: str, when: float, task_id: str, now: float, manual: bool
    ) -> None:
        """What the console shows as "last": the time and the task of one real enqueue.

        Kept apart from the ``last:`` cursor (which also moves over ticks skipped while
        paused or down), so "last" never pairs a skipped tick with another task's id.
        """
        value = json.dumps({"at": when, "task": task_id, "manual": manual})
        broker.backend.set_key(PREFIX + f"fire:{name}", value, None, now)
        broker.backend.set_key(PREFIX + f"lasttask:{name}", task_id, None, now)

    def pause(self, broker: Broker, name: str, paused: bool) -> None:
        """Pause or resume a schedule for every scheduler sharing the backend."""
        self._require(name)
        key = PREFIX + f"paused:{name}"
        if paused:
            broker.backend.set_key(key, "1", None, broker.clock.now())
        else:
            broker.backend.delete_key(key)

    def _require(self, name: str) -> Schedule:
        s = self.schedules.get(name)
        if s is None:
            known = ", ".join(x.name for x in self.schedules.all()) or "none"
            raise ConfigError(f"unknown schedule {name!r} (known: {known})")
        return s

    def _last_fire(self, broker: Broker, name: str, now: float) -> tuple[float, str, bool] | None:
        """``(when, task id, by hand)`` of the last real enqueue, if any."""
        raw = self._get(broker, f"fire:{name}", now)
        if raw is not None:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                doc = json.loads(raw)
                return float(doc["at"]), str(doc["task"]), bool(doc.get("manual"))
        # A store written before fire: existed: a tick's task id names its tick.
        task_id = self._get(broker, f"lasttask:{name}", now)
        prefix = f"cron-{name}-"
        if task_id and task_id.startswith(prefix) and task_id[len(prefix) :].isdigit():
            return float(task_id[len(prefix) :]), task_id, False
        return None

    def snapshot(self, broker: Broker) -> dict[str, Any]:
        """``schedules``: expression in words, next runs, last fire and its outcome."""
        now = broker.clock.now()
        out = []
        for s in self.schedules.all():
            fire = self._last_fire(broker, s.name, now)
            last, last_task, manual = fire if fire is not None else (None, None, False)
            state = broker.backend.get_state(last_task) if last_task else None
            try:
                runs = tuple(d.timestamp() for d in s.cron.next_n(_dt(now), 3))
            except ConfigError:
                runs = ()
            out.append(
                ScheduleSnapshot(
                    s.name,
                    s.task,
                    s.cron.expr,
                    s.cron.describe(),
                    str(s.cron.tz),
                    runs,
                    last,
                    last_task,
                    state.value if state is not None else None,
                    self._get(broker, f"paused:{s.name}", now) is not None,
                    s.missed,
                    int(self._get(broker, f"fired:{s.name}", now) or 0),
                    manual,
                )
            )
        return {"schedules": tuple(out)}
