"""What every pool shares: per-worker state and the pool interface."""

from __future__ import annotations

import logging
import os
import socket
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dtq_core.errors import StoreFailed

log = logging.getLogger("dtq.worker")

if TYPE_CHECKING:
    from dtq_core.backends.base import Delivery
    from dtq_core.broker import Broker
    from dtq_core.workers.acks import AckBuffer


class WorkerShutdown(BaseException):
    """Raised into a worker thread by a hard stop: the task is requeued, not failed."""


def worker_prefix() -> str:
    """``host:pid``: identifies this process among the workers of a system."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(slots=True)
class WorkerInfo:
    """One worker's live state (read by heartbeats and the snapshot)."""

    id: str
    pool: str
    state: str = "idle"
    current: Delivery | None = None
    current_started: float | None = None
    processed: int = 0
    failed: int = 0
    started_at: float = 0.0
    last_seen: float = 0.0
    #: Times this worker's loop died of an unexpected error and was started again.
    restarts: int = 0

    def to_dict(self, now: float) -> dict[str, Any]:
        """What a heartbeat publishes."""
        cur = self.current
        return {
            "id": self.id,
            "pool": self.pool,
            "state": self.state,
            "task_id": cur.task_id if cur else None,
            "task_name": cur.name if cur else None,
            "task_started": self.current_started,
            "processed": self.processed,
            "failed": self.failed,
            "restarts": self.restarts,
            "started_at": self.started_at,
            "heartbeat": now,
        }


class Pool(ABC):
    """A set of workers claiming from the backend and running tasks through the runner."""

    kind = "base"

    def __init__(self, broker: Broker, size: int) -> None:
        self.broker = broker
        self.size = size
        self.workers: list[WorkerInfo] = []
        self.stopping = threading.Event()
        #: Successes waiting to be stored together (pools on batching backends).
        self.acks: AckBuffer | None = None

    @abstractmethod
    def start(self) -> None:
        """Start the workers."""

    @abstractmethod
    def stop(self, drain_timeout: float) -> None:
        """Stop claiming, let in-flight tasks finish up to ``drain_timeout``, requeue the rest."""

    def in_flight(self) -> list[tuple[str, int]]:
        """``(task_id, token)`` of every running task (for lease renewal)."""
        out = []
        for w in self.workers:
            cur = w.current
            if cur is not None:
                out.append((cur.task_id, cur.token))
        if self.acks is not None:
            out.extend(self.acks.leases())
        return out


#: Adaptive prefetch: claim about this many seconds of work per round trip...
PREFETCH_BUDGET_S = 0.02
#: ...but never more than this many tasks per worker thread.
PREFETCH_MAX = 64


def adaptive_prefetch(avg_runtime: float | None) -> int:
    """How many tasks to claim next, given the moving average of their run time."""
    if avg_runtime is None:
        return 1  # unknown yet: a long task must not hold others back
    return max(1, min(PREFETCH_MAX, int(PREFETCH_BUDGET_S / max(avg_runtime, 1e-6))))


#: Longest pause before a worker loop that died is started again, seconds (the pause
#: doubles from 0.1 s with each death, so a loop that dies at once does not spin).
RESTART_MAX_S = 5.0


def supervised(info: WorkerInfo, stopping: threading.Event, loop: Callable[[], None]) -> None:
    """Run a worker's ``loop``; when it dies of an unexpected error, start it again.

    A worker must never vanish silently (a process going on at reduced concurrency with
    nothing said): each death is logged with its traceback, counted in
    ``info.restarts`` (published by the heartbeat, shown by the console and
    ``dtq health``), and the loop is replaced after a short pause.
    """
    while True:
        try:
            loop()
            return
        except Exception:
            info.restarts += 1
            info.current, info.current_started, info.state = None, None, "idle"
            log.exception(
                "worker %s died of an unexpected error and was replaced (%d restart(s))",
                info.id,
                info.restarts,
            )
            if stopping.wait(min(RESTART_MAX_S, 0.1 * 2 ** (info.restarts - 1))):
                info.state = "stopped"
                return


#: A claimed task that waited longer than this fraction of its lease before starting
#: has its lease renewed first (or is skipped when the store took it back).
LEASE_CHECK = 0.5


def lease_ok(broker: Broker, d: Delivery) -> bool:
    """Whether claimed task ``d`` may start now: its lease is surely still held.

    A task that waited since its claim (prefetched, or claimed across a stall of the
    store) for more than :data:`LEASE_CHECK` of its lease has the lease renewed first.
    When the store no longer leases it to this worker (it ran out and was reclaimed,
    perhaps handed to another worker already) the task is left untouched: starting it
    would run it twice at once.

    Raises:
        BackendError: The store could not be asked (the caller backs off; the lease
            runs out and the task is delivered again).
    """
    cfg = broker.config
    now = broker.clock.now()
    since = d.started_at if d.leased_at is None else d.leased_at
    if now - since < cfg.lease_s * LEASE_CHECK:
        return True
    if broker.backend.renew_lease(d.task_id, d.token, cfg.lease_s, now):
        return True
    log.warning(
        "task %s not started: its lease ran out %.1fs ago while it waited to start "
        "and the store took it back",
        d.task_id,
        now - since - cfg.lease_s,
    )
    return False


class Backoff:
    """Sleeps between attempts after backend errors: 0.1 s doubling to 5 s; reset on success.

    A worker must outlive a backend outage (a Redis restart): it logs once per outage
    and keeps trying instead of dying.
    """

    def __init__(
        self,
        stopping: threading.Event,
        fatal: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.stopping = stopping
        self.delay = 0.0
        #: Called instead of waiting when the store failed stop (nothing to retry).
        self.fatal = fatal

    def failed(self, exc: BaseException) -> None:
        """Record a failure and wait before the next attempt.

        A store that failed stop (:class:`~dtq_core.errors.StoreFailed`) is not retried:
        ``fatal`` is told, which stops the broker.
        """
        if isinstance(exc, StoreFailed) and self.fatal is not None:
            self.fatal(exc)
            self.stopping.wait(0.1)
            return
        if self.delay == 0.0:
            log.warning("backend error, retrying: %s", exc)
        self.delay = min(5.0, max(0.1, self.delay * 2))
        self.stopping.wait(self.delay)

    def ok(self) -> None:
        """The backend answered again."""
        if self.delay:
            log.warning("backend reachable again")
        self.delay = 0.0
