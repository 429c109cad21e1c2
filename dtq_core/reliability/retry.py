"""Retries: exponential backoff with jitter, ``retry_on``/``dont_retry_on``, ``Retry``."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from dtq_core.errors import ConfigError, RemoteTaskError, Retry
from dtq_core.hooks import FailureDecision, Hook, RunContext

if TYPE_CHECKING:
    from dtq_core.broker import Broker

Jitter = Literal["full", "equal", "none"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how often a failed task runs again.

    The delay before retry number ``n`` (0-based) is ``min(max_delay, backoff * 2**n)``,
    then jittered: ``full`` draws uniformly from ``[0, d]``, ``equal`` from
    ``[d/2, d]`` (AWS's names), ``none`` keeps ``d``.
    """

    max_retries: int = 3
    backoff: float = 1.0
    max_delay: float = 300.0
    jitter: Jitter = "full"
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    dont_retry_on: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ConfigError("max_retries must be >= 0")
        if self.backoff < 0 or self.max_delay < 0:
            raise ConfigError("retry_backoff and retry_max_delay must be >= 0")
        if self.jitter not in ("full", "equal", "none"):
            raise ConfigError(f"retry_jitter must be full, equal or none, not {self.jitter!r}")

    def delay(self, retry_number: int, rng: random.Random) -> float:
        """Seconds to wait before retry ``retry_number`` (0 for the first retry)."""
        cap = min(self.max_delay, self.backoff * (2.0 ** min(retry_number, 62)))
        if self.jitter == "full":
            return rng.uniform(0.0, cap)
        if self.jitter == "equal":
            return cap / 2 + rng.uniform(0.0, cap / 2)
        return cap

    def retries(self, exc: BaseException) -> bool:
        """Whether ``exc`` is of a kind this policy retries."""
        if isinstance(exc, Retry):
            return True
        if isinstance(exc, RemoteTaskError):  # matched by class name, nothing imported
            names = set(exc.mro)
            if any(qualified(c) in names for c in self.dont_retry_on):
                return False
            return any(qualified(c) in names for c in self.retry_on)
        if self.dont_retry_on and isinstance(exc, self.dont_retry_on):
            return False
        return isinstance(exc, self.retry_on)


class RetryHook(Hook):
    """Schedules a failed attempt again while its policy allows."""

    options = frozenset(
        {
            "max_retries",
            "retry_backoff",
            "retry_max_delay",
            "retry_jitter",
            "retry_on",
            "dont_retry_on",
        }
    )
    per_call = frozenset({"max_retries", "retry_backoff", "retry_max_delay", "retry_jitter"})

    def __init__(self, default: RetryPolicy | None = None, seed: int | None = None) -> None:
        self.default = default or RetryPolicy()
        self.rng = random.Random(seed)

    def policy(self, ctx: RunContext) -> RetryPolicy:
        """The effective policy of one delivery: per call, then task, then default."""
        d = self.default
        return RetryPolicy(
            max_retries=ctx.option("max_retries", d.max_retries),
            backoff=ctx.option("retry_backoff", d.backoff),
            max_delay=ctx.option("retry_max_delay", d.max_delay),
            jitter=ctx.option("retry_jitter", d.jitter),
            retry_on=_classes(ctx.task.options.get("retry_on", d.retry_on)),
            dont_retry_on=_classes(ctx.task.options.get("dont_retry_on", d.dont_retry_on)),
        )

    def on_failure(self, ctx: RunContext, exc: BaseException, decision: FailureDecision) -> None:
        """Set ``retry_at`` when attempts remain and the error is retryable."""
        if decision.retry_at is not None or decision.dead_reason is not None:
            return
        policy = self.policy(ctx)
        done = ctx.delivery.attempt  # attempts made so far, this one included
        if done > policy.max_retries:
            decision.notes.append(f"retries exhausted ({policy.max_retries})")
            return
        if not policy.retries(exc):
            name = exc.exc_type if isinstance(exc, RemoteTaskError) else type(exc).__name__
            decision.notes.append(f"not retried: {name}")
            return
        if isinstance(exc, Retry) and exc.countdown is not None:
            wait = max(0.0, float(exc.countdown))
        else:
            wait = policy.delay(done - 1, self.rng)
        decision.retry_at = ctx.broker.clock.now() + wait

    def attach(self, broker: Broker) -> None:
        """Take the broker's defaults and seed."""
        cfg = broker.config
        self.default = RetryPolicy(
            max_retries=cfg.max_retries,
            backoff=cfg.retry_backoff,
            max_delay=cfg.retry_max_delay,
            jitter=cfg.retry_jitter,
        )
        if cfg.seed is not None:
            self.rng = random.Random(cfg.seed)


def _classes(value: Any) -> tuple[type[BaseException], ...]:
    if isinstance(value, type):
        return (value,)
    return tuple(value)


def qualified(cls: type) -> str:
    """``module.QualName`` (bare for builtins), as a worker process reports classes."""
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"
