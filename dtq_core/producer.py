"""Producing: a call checked, encoded, passed through the enqueue hooks and stored."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from dtq_core.backends.base import NewTask
from dtq_core.broker_events import EventsMixin
from dtq_core.client import AsyncResult, Task, validate_options
from dtq_core.codec import encode_message
from dtq_core.errors import ConfigError, TaskNotRegistered
from dtq_core.hooks import PER_CALL_OPTIONS, Hook
from dtq_core.ids import new_id
from dtq_core.registry import Registry

if TYPE_CHECKING:
    from dtq_core.broker import Broker


class ProducerMixin(EventsMixin):
    """``send`` and ``send_many``: the producing side of :class:`~dtq_core.broker.Broker`.

    Mixed into the broker, which creates the state in its constructor and provides
    ``open``; events are emitted through :class:`~dtq_core.broker_events.EventsMixin`.
    """

    registry: Registry
    _opened: bool
    _before_enqueue: list[Hook]
    _after_enqueue: list[Hook]
    open: Callable[[], None]

    def send(
        self,
        name: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        priority: int | None = None,
        queue: str | None = None,
        task_id: str | None = None,
        dedup_key: str | None = None,
        options: dict[str, Any] | None = None,
        task: Task[Any, Any] | None = None,
        workflow: str | None = None,
    ) -> AsyncResult:
        """Enqueue task ``name`` (see :meth:`Task.apply_async` for the arguments).

        Raises:
            TaskNotRegistered: ``name`` is registered neither here nor by any worker.
            SerializationError: An argument is not JSON-serializable.
            ConfigError: A bad option, countdown or eta.
        """
        broker: Broker = self  # type: ignore[assignment]  # (cast() is a call per task)
        if not self._opened:
            self.open()
        if task is None:
            task = self.registry.get(name)
            if task is None and name not in self.backend.known_names():
                known = sorted(set(self.registry.names()) | self.backend.known_names())
                raise TaskNotRegistered(
                    f"unknown task {name!r}: no worker has registered it "
                    f"(known: {', '.join(known) or 'none'})"
                )
        topts = task.options if task is not None else {}
        opts = options or {}
        if opts:
            bad = [k for k in opts if k not in PER_CALL_OPTIONS]
            if bad:
                raise ConfigError(
                    f"task {name!r}: option {bad[0]!r} cannot be set per call "
                    f"(per-call options: {', '.join(sorted(PER_CALL_OPTIONS))})"
                )
            validate_options(name, opts)  # values too: a bad one must not reach a worker
        if topts.get("redact_args") and "redact_args" not in opts:
            # Carried by the message: a console that never imported the task masks too.
            opts = {**opts, "redact_args": True}
        now = self.clock.now()
        due = None if countdown is None and eta is None else self._due(now, countdown, eta)
        tid = task_id or new_id()
        payload = encode_message(tid, name, args, kwargs or {}, opts, self.config.codec)
        nt = NewTask(
            tid,
            name,
            queue or (task.queue if task is not None else "default"),
            priority if priority is not None else (task.priority if task is not None else 0),
            payload,
            due,
            opts.get("max_retries", topts.get("max_retries", self.config.max_retries)),
            opts.get("time_limit", topts.get("time_limit")),
            dedup_key,
            None,
            workflow,
        )
        for hook in self._before_enqueue:
            existing = hook.before_enqueue(broker, nt, topts)
            if existing is not None:
                return AsyncResult(existing, broker)
        self.emit(self.backend.enqueue(nt, now))
        for hook in self._after_enqueue:
            hook.after_enqueue(broker, nt, topts)
        if due is not None:
            self.wake_scheduler(due)
        return AsyncResult(tid, broker)

    def send_many(
        self,
        name: str,
        calls: Iterable[Sequence[Any] | tuple[Sequence[Any], dict[str, Any]]],
        *,
        queue: str | None = None,
        priority: int | None = None,
        task: Task[Any, Any] | None = None,
    ) -> list[AsyncResult]:
        """Enqueue many calls of task ``name`` in one batch.

        One lock, one fsync wait, one Redis round trip. Each call is an args sequence or
        an ``(args, kwargs)`` pair.

        Raises:
            TaskNotRegistered, SerializationError: As :meth:`send`; nothing is enqueued.
        """
        broker = cast("Broker", self)
        if not self._opened:
            self.open()
        if task is None:
            task = self.registry.get(name)
            if task is None and name not in self.backend.known_names():
                raise TaskNotRegistered(f"unknown task {name!r}: no worker has registered it")
        topts = task.options if task is not None else {}
        q = queue or (task.queue if task is not None else "default")
        prio = priority if priority is not None else (task.priority if task is not None else 0)
        max_retries = topts.get("max_retries", self.config.max_retries)
        time_limit = topts.get("time_limit")
        codec = self.config.codec
        extra = {"redact_args": True} if topts.get("redact_args") else None
        batch: list[NewTask] = []
        results: list[AsyncResult] = []
        for call in calls:
            if (
                isinstance(call, tuple)
                and len(call) == 2
                and isinstance(call[1], dict)
                and isinstance(call[0], list | tuple)
            ):
                args, kwargs = call
            else:
                args, kwargs = call, {}
            tid = new_id()
            payload = encode_message(tid, name, args, kwargs, extra, codec)
            nt = NewTask(tid, name, q, prio, payload, None, max_retries, time_limit)
            existing = None
            for hook in self._before_enqueue:
                existing = hook.before_enqueue(broker, nt, topts)
                if existing is not None:
                    break
            if existing is not None:
                results.append(AsyncResult(existing, broker))
                continue
            batch.append(nt)
            results.append(AsyncResult(tid, broker))
        if batch:
            self.emit(self.backend.enqueue_many(batch, self.clock.now()))
            for nt in batch:
                for hook in self._after_enqueue:
                    hook.after_enqueue(broker, nt, topts)
        return results

    @staticmethod
    def _due(now: float, countdown: float | None, eta: datetime | float | None) -> float | None:
        if countdown is not None and eta is not None:
            raise ConfigError("give countdown or eta, not both")
        if countdown is not None:
            if countdown < 0:
                raise ConfigError(f"countdown must be >= 0, not {countdown}")
            return now + countdown if countdown > 0 else None
        if eta is None:
            return None
        if isinstance(eta, datetime):
            if eta.tzinfo is None:
                raise ConfigError("eta must be a timezone-aware datetime (or epoch seconds)")
            when = eta.timestamp()
        else:
            when = float(eta)
        return when if when > now else None
