"""Hooks: the middleware chain around the broker core (Dramatiq's idea).

The broker calls ``before_*`` methods in chain order and ``after_*`` in reverse. Each
hook declares the task options it reads; ``@task`` rejects options no hook declares.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from dtq_core.backends.base import Delivery, NewTask, Transition
    from dtq_core.broker import Broker
    from dtq_core.client import Task

#: Task[Any, Any] options understood by the core (name, routing, time limit).
CORE_OPTIONS: frozenset[str] = frozenset({"name", "queue", "priority", "time_limit", "redact_args"})

#: Every task option some hook declares; filled by :class:`Hook` subclasses.
KNOWN_OPTIONS: set[str] = set(CORE_OPTIONS)

#: Options that may be overridden per call and so travel in the message.
PER_CALL_OPTIONS: set[str] = {"time_limit", "redact_args"}


@dataclass(slots=True)
class RunContext:
    """One delivery on its way through the chain."""

    broker: Broker
    delivery: Delivery
    task: Task[Any, Any]
    args: list[Any]
    kwargs: dict[str, Any]
    opts: dict[str, Any]
    worker_id: str
    started: float = 0.0
    runtime: float = 0.0

    def option(self, name: str, default: Any = None) -> Any:
        """A task option: the per-call value, then the task's, then ``default``."""
        if name in self.opts:
            return self.opts[name]
        return self.task.options.get(name, default)


@dataclass(slots=True)
class FailureDecision:
    """What happens to a failed attempt; hooks fill it in chain order."""

    retry_at: float | None = None
    dead_reason: str | None = None
    notes: list[str] = field(default_factory=list)


class Hook:
    """Base of all hooks: every method is a no-op.

    Subclasses set ``options`` to the task options they read and ``per_call`` to those
    of them that ``apply_async`` may override.
    """

    #: Task[Any, Any] options this hook reads.
    options: ClassVar[frozenset[str]] = frozenset()
    #: Options among ``options`` that may be overridden per call.
    per_call: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        KNOWN_OPTIONS.update(cls.options)
        PER_CALL_OPTIONS.update(cls.per_call)

    def attach(self, broker: Broker) -> None:
        """Called once when the broker starts."""

    def detach(self, broker: Broker) -> None:
        """Called once when the broker stops."""

    def before_enqueue(self, broker: Broker, task: NewTask, options: dict[str, Any]) -> str | None:
        """Return the id of an existing task to answer with instead of enqueueing."""
        return None

    def after_enqueue(self, broker: Broker, task: NewTask, options: dict[str, Any]) -> None:
        """A task was stored."""

    def before_run(self, ctx: RunContext) -> float | None:
        """Return a time to defer the task to (not an attempt), or ``None`` to go on."""
        return None

    def on_failure(self, ctx: RunContext, exc: BaseException, decision: FailureDecision) -> None:
        """Decide retry or dead-letter for a failed attempt (chain order)."""

    def after_run(
        self,
        ctx: RunContext,
        exc: BaseException | None,
        transitions: list[Transition],
    ) -> None:
        """An attempt was settled (``exc`` is ``None`` on success); reverse order."""

    def ack_later(self, ctx: RunContext) -> bool:
        """May this success be stored in a batch, up to ``ack_delay_s`` later?

        A hook with per-task work of its own after a success (a workflow moving on, a
        breaker counting) says no: that work would hold up the whole batch.
        """
        return True

    def tick(self, broker: Broker, now: float) -> float | None:
        """Periodic work on the broker's maintenance thread; return when to run next."""
        return None

    def snapshot(self, broker: Broker) -> dict[str, Any]:
        """Figures for the Console API snapshot, under this hook's name."""
        return {}
