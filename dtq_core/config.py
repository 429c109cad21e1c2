"""Broker configuration."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from dtq_core.clock import SYSTEM_CLOCK, Clock
from dtq_core.errors import ConfigError

if TYPE_CHECKING:
    from dtq_core.hooks import Hook
    from dtq_core.registry import Registry

#: The backend used when neither the config nor ``DTQ_BACKEND`` names one.
DEFAULT_BACKEND = "embedded://./dtq-data"

Pool = Literal["thread", "process", "async"]


def default_backend_url() -> str:
    """``DTQ_BACKEND`` from the environment, else :data:`DEFAULT_BACKEND`."""
    return os.environ.get("DTQ_BACKEND") or DEFAULT_BACKEND


@dataclass(slots=True)
class BrokerConfig:
    """Everything a :class:`~dtq_core.broker.Broker` is built from.

    Attributes:
        backend: Backend URL: ``memory://``, ``embedded://PATH`` or ``redis://...``.
        num_workers: Concurrent tasks run by this process; 0 makes a producer-only broker.
        pool: ``thread`` (default), ``process`` (CPU-bound work, hard time limits) or
            ``async`` (one event loop running ``async def`` tasks concurrently).
        queues: Queues this broker's workers serve, in strict priority order, or
            ``None`` for every queue (best task priority first).
        prefetch: Tasks a worker thread claims at once. ``None`` (the default) adapts:
            one at a time until the task's run time is known, then as many as make
            about 20 ms of work (at most 64), so short tasks share a round trip (Redis)
            or a lock (a store in this process) and long ones are never held back
            behind each other (tasks claimed ahead go to whichever thread is free).
            On a store that is neither (an attached store that does not batch)
            ``None`` means 1.
        ack_delay_s: Successful outcomes wait at most this long to be stored together:
            one round trip per batch on Redis and attached stores, one lock and one
            event batch on a store in this process (a thread pool that runs out of
            work stores them at once); 0 stores each at once.
        lease_s: Lease on a claimed task; renewed by heartbeat while the worker lives.
        heartbeat_s: How often live workers renew leases and publish their state.
        max_deliveries: Deliveries after which a task whose workers keep dying is
            dead-lettered with reason ``worker_lost``.
        result_ttl: Seconds finished records and results are kept.
        max_results: Finished records kept at most (the oldest expire early).
        drain_timeout: Seconds a graceful stop waits for in-flight tasks.
        install_signal_handlers: Make SIGTERM/SIGINT drain and stop (off when embedded).
        own: May this process own an ``embedded://`` store (hold its lock, write its
            log, serve its socket)? ``None`` (the default): only when it runs workers
            (``num_workers`` > 0). A process that does not own a store attaches to its
            owner's socket; an attached process that may own takes the store over when
            its owner dies. ``dtq worker`` and the demo set ``True``.
        attach_timeout: Seconds to wait for an embedded store's owner to answer, when
            attaching and after the owner died (producers and workers retry with
            backoff meanwhile; ``dtq`` and the console use a short one).
        max_retries, retry_backoff, retry_max_delay, retry_jitter: Retry defaults.
        codec: ``json`` or ``msgpack``.
        seed: Seeds the jitter random generator (tests, demos).
        clock: Time source; a ``FakeClock`` in tests.
        registry: Task registry (the global one by default).
        hooks: The hook chain; ``None`` builds the default chain.
        event_history: Recent events kept for late readers.
        rate_limits: Per-queue rate limits, e.g. ``{"emails": "5/s"}``.
        dedup_capacity, dedup_error_rate: Sizing of the deduplication bloom filter.
        dedup_ttl: Default deduplication window, seconds.
        redact: Argument key names whose values every view masks, besides the
            defaults of :data:`dtq_core.redact.REDACT_KEYS` (password, secret, token,
            api_key, authorization, cookie...); matched case-insensitively as parts of
            a key, at any depth of the arguments, results and edits.
    """

    backend: str = field(default_factory=default_backend_url)
    num_workers: int = 4
    pool: Pool = "thread"
    queues: tuple[str, ...] | None = None
    prefetch: int | None = None
    ack_delay_s: float = 0.002
    lease_s: float = 30.0
    heartbeat_s: float = 2.0
    max_deliveries: int = 5
    result_ttl: float = 600.0
    max_results: int = 100_000
    drain_timeout: float = 30.0
    install_signal_handlers: bool = False
    own: bool | None = None
    attach_timeout: float = 30.0
    max_retries: int = 3
    retry_backoff: float = 1.0
    retry_max_delay: float = 300.0
    retry_jitter: Literal["full", "equal", "none"] = "full"
    codec: Literal["json", "msgpack"] = "json"
    seed: int | None = None
    clock: Clock = SYSTEM_CLOCK
    registry: Registry | None = None
    hooks: list[Hook] | None = None
    event_history: int = 10_000
    rate_limits: dict[str, str | float] = field(default_factory=dict)
    dedup_capacity: int = 100_000
    dedup_error_rate: float = 0.001
    dedup_ttl: float = 3600.0
    redact: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.queues, list):
            self.queues = tuple(self.queues)
        if isinstance(self.redact, str):
            self.redact = (self.redact,)
        self.redact = tuple(self.redact)
        self.validate()

    def __repr__(self) -> str:
        # A config printed in a log or a traceback must not show the backend's password.
        from dataclasses import fields

        from dtq_core.redact import redact_url

        parts = (
            f"{f.name}={redact_url(self.backend)!r}"
            if f.name == "backend"
            else f"{f.name}={getattr(self, f.name)!r}"
            for f in fields(self)
        )
        return f"BrokerConfig({', '.join(parts)})"

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad value."""
        if self.num_workers < 0:
            raise ConfigError("num_workers must be >= 0 (0 = producer only)")
        if self.pool not in ("thread", "process", "async"):
            raise ConfigError(f"pool must be thread, process or async, not {self.pool!r}")
        if self.prefetch is not None and self.prefetch < 1:
            raise ConfigError("prefetch must be >= 1 (or None: adaptive)")
        if not 0 <= self.ack_delay_s <= 1:
            raise ConfigError("ack_delay_s must be between 0 and 1 second")
        if self.lease_s <= 0 or self.heartbeat_s <= 0 or self.heartbeat_s >= self.lease_s:
            raise ConfigError("need 0 < heartbeat_s < lease_s")
        if self.attach_timeout <= 0:
            raise ConfigError("attach_timeout must be > 0 seconds")
        if self.max_deliveries < 1:
            raise ConfigError("max_deliveries must be >= 1")
        if self.codec not in ("json", "msgpack"):
            raise ConfigError(f"codec must be json or msgpack, not {self.codec!r}")
        if self.queues is not None and not self.queues:
            raise ConfigError("queues must name at least one queue (or be None for all)")
