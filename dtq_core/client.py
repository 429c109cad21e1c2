"""The producer API: ``@task``, ``.delay()``, ``.apply_async()`` and ``AsyncResult``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, overload

from dtq_core.errors import ConfigError, DTQError, TaskFailed, TaskNotFound
from dtq_core.hooks import KNOWN_OPTIONS
from dtq_core.registry import Registry, default_registry
from dtq_core.task import TERMINAL, TaskRecord, TaskState

if TYPE_CHECKING:
    from dtq_core.broker import Broker

P = ParamSpec("P")
R = TypeVar("R")

_default_broker: Broker | None = None


def set_default_broker(broker: Broker | None) -> None:
    """Make ``broker`` the one ``.delay()`` and ``.apply_async()`` use by default."""
    global _default_broker
    _default_broker = broker


def get_default_broker() -> Broker:
    """The default broker.

    Raises:
        DTQError: When none is set.
    """
    if _default_broker is None:
        raise DTQError(
            "no default broker: call set_default_broker(broker) or pass broker=... to apply_async"
        )
    return _default_broker


def validate_options(name: str, options: dict[str, Any]) -> None:
    """Reject unknown task options and values of the wrong kind, naming them."""
    for key in options:
        if key not in KNOWN_OPTIONS:
            raise ConfigError(
                f"task {name!r}: unknown option {key!r} (known: {', '.join(sorted(KNOWN_OPTIONS))})"
            )
    checks: dict[str, Callable[[Any], bool]] = {
        "queue": lambda v: isinstance(v, str) and bool(v),
        "priority": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "max_retries": lambda v: isinstance(v, int) and v >= 0,
        "time_limit": lambda v: v is None or (isinstance(v, int | float) and v > 0),
        "retry_backoff": lambda v: isinstance(v, int | float) and v >= 0,
        "retry_max_delay": lambda v: isinstance(v, int | float) and v >= 0,
        "retry_jitter": lambda v: v in ("full", "equal", "none"),
        "redact_args": lambda v: isinstance(v, bool),
    }
    for key, ok in checks.items():
        if key in options and not ok(options[key]):
            raise ConfigError(f"task {name!r}: bad value for {key}: {options[key]!r}")
    if options.get("rate_limit") is not None:
        from dtq_core.scheduling.ratelimit import parse_rate

        try:
            parse_rate(options["rate_limit"])
        except ConfigError as exc:
            raise ConfigError(f"task {name!r}: {exc}") from None


class Task(Generic[P, R]):
    """A registered task: call it to run locally, ``.delay()`` to enqueue.

    Attributes:
        name: The registered name messages carry.
        options: Task options (queue, priority, retries, time limit, hook options).
        is_async: Whether the function is ``async def``.
    """

    def __init__(
        self, fn: Callable[P, R], name: str, options: dict[str, Any], registry: Registry
    ) -> None:
        validate_options(name, options)
        self.fn = fn
        self.name = name
        self.options = options
        self.queue: str = options.get("queue", "default")
        self.priority: int = options.get("priority", 0)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.qualname = f"{fn.__module__}.{fn.__qualname__}"
        self.registry = registry
        functools.update_wrapper(self, fn)
        registry.register(self)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function here and now, not through a queue."""
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue}>"

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult:
        """Enqueue with these arguments on the default broker."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        countdown: float | None = None,
        eta: datetime | float | None = None,
        priority: int | None = None,
        queue: str | None = None,
        task_id: str | None = None,
        dedup_key: str | None = None,
        broker: Broker | None = None,
        **options: Any,
    ) -> AsyncResult:
        """Enqueue with per-call options.

        Args:
            args: Positional arguments (JSON-serializable).
            kwargs: Keyword arguments (JSON-serializable).
            countdown: Run no sooner than this many seconds from now.
            eta: Run no sooner than this time (aware datetime or epoch seconds).
            priority: Lower runs first; overrides the task's.
            queue: Overrides the task's queue.
            task_id: Use this id instead of a new one.
            dedup_key: Drop duplicates with the same key inside the dedup window.
            broker: Use this broker instead of the default.
            **options: Per-call overrides (``max_retries``, ``time_limit``, retry settings).

        Returns:
            An :class:`AsyncResult` for the task (the original's, for a duplicate).
        """
        b = broker or get_default_broker()
        return b.send(
            self.name,
            args,
            kwargs,
            countdown=countdown,
            eta=eta,
            priority=priority,
            queue=queue,
            task_id=task_id,
            dedup_key=dedup_key,
            options=options,
            task=self,
        )

    def apply_many(
        self,
        calls: Iterable[Sequence[Any] | tuple[Sequence[Any], dict[str, Any]]],
        *,
        queue: str | None = None,
        priority: int | None = None,
        broker: Broker | None = None,
    ) -> list[AsyncResult]:
        """Enqueue many calls in one batch: each an args sequence or ``(args, kwargs)``."""
        b = broker or get_default_broker()
        return b.send_many(self.name, calls, queue=queue, priority=priority, task=self)


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...


@overload
def task(
    *, name: str | None = None, registry: Registry | None = None, **options: Any
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    registry: Registry | None = None,
    **options: Any,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Register a function as a task: ``@task`` or ``@task(name="add", queue="math")``.

    Options: ``queue``, ``priority``, ``max_retries``, ``time_limit``, ``retry_backoff``,
    ``retry_max_delay``, ``retry_jitter``, ``retry_on``, ``dont_retry_on``,
    ``dead_letter``, ``redact_args`` (every view masks the positional arguments too,
    not only sensitive keys: see :mod:`dtq_core.redact`) and those declared by hooks.
    Unknown options are an error.
    """

    def wrap(f: Callable[P, R]) -> Task[P, R]:
        return Task(
            f,
            name or f"{f.__module__}.{f.__qualname__}",
            options,
            registry if registry is not None else default_registry,
        )

    return wrap(fn) if fn is not None else wrap


class AsyncResult:
    """A handle on an enqueued task.

    Args:
        task_id: The task's id.
        broker: The broker that can answer for it.
    """

    __slots__ = ("broker", "id")

    def __init__(self, task_id: str, broker: Broker) -> None:
        self.id = task_id
        self.broker = broker

    def __repr__(self) -> str:
        return f"<AsyncResult {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AsyncResult) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def state(self) -> TaskState | None:
        """The current state (``None`` when unknown or expired)."""
        return self.broker.backend.get_state(self.id)

    def ready(self) -> bool:
        """Whether the task reached a final state."""
        return self.state in TERMINAL

    def successful(self) -> bool:
        """Whether the task succeeded."""
        return self.state is TaskState.SUCCESS

    def record(self) -> TaskRecord | None:
        """The full task record."""
        return self.broker.backend.get(self.id)

    def get(self, timeout: float | None = None, propagate: bool = True) -> Any:
        """Wait for the task and return its result.

        Args:
            timeout: Seconds to wait; ``None`` waits forever.
            propagate: Raise :class:`TaskFailed` when the task did not succeed; if
                false, return the error info dict instead.

        Raises:
            TimeoutError: The task did not finish in time.
            TaskFailed: The task ended FAILED, DEAD or CANCELLED.
            TaskNotFound: The id is unknown or its result expired.
        """
        rec = self.broker.wait_outcome(self.id, timeout)
        if rec.state is TaskState.SUCCESS:
            return rec.result
        err = rec.error
        failed = TaskFailed(
            self.id,
            rec.state.value,
            err.type if err else rec.state.value,
            err.message if err else (rec.dead_reason or "cancelled"),
            err.traceback if err else "",
        )
        if propagate:
            raise failed
        return failed.to_dict()

    def cancel(self) -> bool:
        """Cancel a task that has not started; return whether it was cancelled."""
        return self.broker.cancel(self.id)


__all__ = [
    "AsyncResult",
    "Task",
    "TaskNotFound",
    "get_default_broker",
    "set_default_broker",
    "task",
    "validate_options",
]
