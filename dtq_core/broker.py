"""The Broker: the facade that composes registry, backend, pool, hooks and events."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from dtq_core.backends import make_backend
from dtq_core.broker_events import EventsMixin
from dtq_core.client import AsyncResult
from dtq_core.config import BrokerConfig
from dtq_core.errors import DTQError, StoreFailed
from dtq_core.events import EventBus
from dtq_core.hooks import Hook
from dtq_core.maintenance import Maintenance
from dtq_core.monitoring.metrics import Metrics
from dtq_core.monitoring.processes import ProcessMeter
from dtq_core.producer import ProducerMixin
from dtq_core.registry import default_registry

if TYPE_CHECKING:
    from dtq_core.control import LocalConsole
    from dtq_core.redact import Redactor
    from dtq_core.reliability.deadletter import DeadLetters
    from dtq_core.workers.base import Pool

log = logging.getLogger("dtq.broker")

H = TypeVar("H", bound=Hook)

#: Seconds running tasks get to finish once the store failed stop (their outcomes
#: cannot be stored; the restart runs them again).
FAIL_STOP_DRAIN_S = 2.0


def default_hooks() -> list[Hook]:
    """The default hook chain.

    In order: dedup, rate limit, breaker, retry, dead-letter, DAG, cron scheduler, latency.
    """
    from dtq_core.monitoring.latency import LatencyHook
    from dtq_core.reliability.circuit import BreakerHook
    from dtq_core.reliability.deadletter import DeadLetterHook
    from dtq_core.reliability.dedup import DedupHook
    from dtq_core.reliability.retry import RetryHook
    from dtq_core.scheduling.dag_store import DagHook
    from dtq_core.scheduling.periodic import PeriodicHook
    from dtq_core.scheduling.ratelimit import RateLimitHook

    return [
        DedupHook(),
        BreakerHook(),  # before the rate limit: a task held by an open breaker uses no token
        RateLimitHook(),
        RetryHook(),
        DeadLetterHook(),
        DagHook(),
        PeriodicHook(),
        LatencyHook(),
    ]


@dataclass(frozen=True, slots=True)
class StopSummary:
    """What a stop did: tasks run by this process and what was left queued."""

    processed: int
    failed: int
    left_queued: int
    drained: bool
    #: A second signal (or hard_stop) interrupted running tasks.
    forced: bool = False
    #: Why the store failed stop, when that is what stopped the broker.
    failure: str | None = None


class Broker(ProducerMixin, EventsMixin):
    """Runs and routes tasks.

    Args:
        config: The configuration; keyword overrides are applied on top.
        **overrides: Fields of :class:`BrokerConfig`.

    Example:
        >>> with Broker(BrokerConfig(backend="memory://")) as broker:  # doctest: +SKIP
        ...     add.apply_async((2, 3), broker=broker).get(timeout=10)
    """

    def __init__(self, config: BrokerConfig | None = None, **overrides: Any) -> None:
        cfg = config or BrokerConfig()
        if overrides:
            cfg = replace(cfg, **overrides)
        self.config = cfg
        self.clock = cfg.clock
        self.registry = cfg.registry if cfg.registry is not None else default_registry
        self.backend = make_backend(cfg.backend, self.clock)
        self.backend.result_ttl = cfg.result_ttl
        self.backend.max_results = cfg.max_results
        self.backend.max_deliveries = cfg.max_deliveries
        self.hooks: list[Hook] = list(cfg.hooks) if cfg.hooks is not None else default_hooks()
        self.events = EventBus(cfg.event_history)
        self.metrics = Metrics()
        #: CPU % and tasks/s of this process between two published process records.
        self.process_meter = ProcessMeter()
        self.events.subscribe_batch(self.metrics.on_batch)
        self.pool: Pool | None = None
        self.maintenance = Maintenance(self)
        self._waiters: dict[str, threading.Event] = {}
        self._waiters_lock = threading.Lock()
        self._before_enqueue = [
            h for h in self.hooks if type(h).before_enqueue is not Hook.before_enqueue
        ]
        self._after_enqueue = [
            h for h in self.hooks if type(h).after_enqueue is not Hook.after_enqueue
        ]
        self._opened = False
        self._started = False
        self._stopped = threading.Event()
        self._lifecycle = threading.Lock()
        self._signals = 0
        self._forced = False
        #: The summary of the last stop (also after a stop made by a signal handler).
        self.last_stop: StopSummary | None = None
        #: The store's fail-stop error, once a worker or the maintenance round met it.
        self.failure: BaseException | None = None
        self.started_at: float | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Open the backend and attach hooks (done by :meth:`start` and the first send).

        On ``embedded://``, a broker that may own the store (see ``BrokerConfig.own``)
        takes it when nobody owns it and serves it on its socket; any other attaches.
        """
        with self._lifecycle:
            if self._opened:
                return
            cfg = self.config
            backend = self.backend
            backend.may_own = cfg.own if cfg.own is not None else cfg.num_workers > 0
            backend.attach_timeout = cfg.attach_timeout
            from dtq_core.control import LocalConsole

            backend.serve_console(LocalConsole(self))
            backend.open()
            for hook in self.hooks:
                hook.attach(self)
            self._opened = True

    def start(self) -> Broker:
        """Open the backend and start the workers (none when ``num_workers`` is 0)."""
        self.open()
        with self._lifecycle:
            if self._started:
                return self
            self._started = True
            self._stopped.clear()
            self.started_at = self.clock.now()
            cfg = self.config
            if cfg.install_signal_handlers:
                # Before the workers: a signal in between must drain them, not kill the
                # process (the handler's stop waits for this start to finish).
                self.install_signal_handlers()
            if cfg.num_workers > 0:
                self.backend.register_names(self.registry.names())
                self.pool = self._make_pool()
                self.pool.start()
                self.maintenance.start()
        return self

    def _make_pool(self) -> Pool:
        cfg = self.config
        if cfg.pool == "thread":
            from dtq_core.workers.thread import ThreadPool

            return ThreadPool(self, cfg.num_workers)
        if cfg.pool == "process":
            from dtq_core.workers.process import ProcessPool

            return ProcessPool(self, cfg.num_workers)
        from dtq_core.workers.aio import AsyncPool

        return AsyncPool(self, cfg.num_workers)

    def stop(self, drain_timeout: float | None = None) -> StopSummary:
        """Stop taking work, drain in-flight tasks, requeue the rest, close the backend."""
        with self._lifecycle:
            if not self._started and not self._opened:
                return StopSummary(0, 0, 0, True)
            started = self._started
            self._started = False
        # First: a store that is gone (an owner died) must not hold the stop in a wait.
        self._quietly("wake blocked claimers", self.backend.wakeup)
        drained = True
        processed = failed = 0
        if started and self.pool is not None:
            t0 = time.monotonic()
            timeout = self.config.drain_timeout if drain_timeout is None else drain_timeout
            self.pool.stop(timeout)
            drained = time.monotonic() - t0 < timeout
            self.maintenance.stop()
            for w in self.pool.workers:
                processed += w.processed
                failed += w.failed
                self._quietly("forget a worker", self.backend.forget_worker, w.id)
        for hook in reversed(self.hooks):
            self._quietly(f"detach {type(hook).__name__}", hook.detach, self)
        stats = self._quietly("count what is left queued", self.backend.queue_stats) or []
        left = sum(q.ready + q.delayed for q in stats)
        with self._lifecycle:
            if self._opened:
                self._quietly("close the backend", self.backend.close)
                self._opened = False
        failure = None if self.failure is None else str(self.failure)
        summary = StopSummary(processed, failed, left, drained, self._forced, failure)
        self.last_stop = summary
        self._stopped.set()
        return summary

    @staticmethod
    def _quietly(what: str, fn: Any, *args: Any) -> Any:
        """Run one step of a stop; a store that is gone is logged and the stop goes on.

        An owner that died or a Redis that is down must not keep a stop from ending (a
        signalled worker would never exit).
        """
        try:
            return fn(*args)
        except DTQError as exc:
            if not isinstance(exc, StoreFailed):  # a failed store was reported already
                log.warning("stopping: could not %s: %s", what, exc)
            return None

    def fail_stop(self, exc: BaseException) -> None:
        """The store failed stop: stop claiming and stop this broker (once).

        Nothing can be stored any more, so waiting would only hide the failure: the
        workers stop claiming, running tasks get :data:`FAIL_STOP_DRAIN_S` to finish
        (their outcomes cannot be stored; they run again after a restart), and
        :attr:`failure` tells the process (``dtq worker`` exits non-zero with it).
        """
        with self._lifecycle:
            if self.failure is not None:
                return
            self.failure = exc
        log.error("stopping: %s", exc)
        if self.pool is not None:
            self.pool.stopping.set()
        drain = min(self.config.drain_timeout, FAIL_STOP_DRAIN_S)
        threading.Thread(target=self.stop, args=(drain,), name="dtq-fail-stop", daemon=True).start()

    def hard_stop(self) -> None:
        """Interrupt running tasks at once (they are requeued), then stop."""
        self._forced = True
        pool = self.pool
        if pool is not None and hasattr(pool, "hard_stop"):
            pool.hard_stop()
        self.stop(drain_timeout=0.0)

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: the first drains and stops, a second stops at once (requeueing)."""

        def handler(signum: int, frame: object) -> None:
            self._signals += 1
            if self._signals == 1:
                log.warning(
                    "%s: draining (send again to stop at once)", signal.Signals(signum).name
                )
                threading.Thread(target=self.stop, name="dtq-drain", daemon=True).start()
            else:
                log.warning("second signal: stopping now, running tasks are requeued")
                threading.Thread(target=self.hard_stop, name="dtq-stop", daemon=True).start()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def wait_until_stopped(self, timeout: float | None = None) -> StopSummary | None:
        """Block until :meth:`stop` finished (e.g. after a signal).

        Returns:
            The stop's summary, or ``None`` on timeout.
        """
        # Timed waits: a signal the kernel delivered to another thread runs its Python
        # handler only when the main thread executes bytecode again.
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._stopped.wait(
            0.2 if deadline is None else max(0.0, min(0.2, deadline - time.monotonic()))
        ):
            if deadline is not None and time.monotonic() >= deadline:
                return None
        return self.last_stop

    @property
    def running(self) -> bool:
        """Whether workers were started and not stopped."""
        return self._started

    @property
    def signals_received(self) -> int:
        """SIGTERM/SIGINT received by :meth:`install_signal_handlers`' handler.

        The first drains; a second stops at once, so above one, running tasks were
        cut short (requeued).
        """
        return self._signals

    @property
    def redactor(self) -> Redactor:
        """The argument-masking policy of this broker's views.

        ``BrokerConfig.redact`` with the defaults, and every task registered here with
        ``redact_args=True`` (older messages of it carry no flag of their own).
        """
        from dtq_core.redact import Redactor

        return Redactor(
            self.config.redact, (t.name for t in self.registry if t.options.get("redact_args"))
        )

    # -- operations ----------------------------------------------------------------------

    def cancel(self, task_id: str) -> bool:
        """Cancel a PENDING or RETRY task."""
        trs = self.backend.cancel(task_id, self.clock.now())
        self.emit(trs)
        return bool(trs)

    def result(self, task_id: str) -> AsyncResult:
        """An :class:`AsyncResult` for an existing task id."""
        return AsyncResult(task_id, self)

    def tick(self) -> float:
        """Run one maintenance round now (tests on a fake clock; producer-only brokers)."""
        if not self._opened:
            self.open()
        return self.maintenance.tick(self.clock.now())

    def work(self, max_tasks: int | None = None, queues: Sequence[str] | None = None) -> int:
        """Run due tasks in the calling thread until none is ready; return how many ran.

        For tests, scripts and producer-only brokers that want to process a burst.
        """
        from dtq_core.workers.base import WorkerInfo
        from dtq_core.workers.runner import Runner

        if not self._opened:
            self.open()
        runner = Runner(self)
        info = WorkerInfo("inline", "inline")
        n = 0
        cfg = self.config
        while max_tasks is None or n < max_tasks:
            self.emit(self.backend.promote_due(self.clock.now()))
            batch = self.backend.claim(
                queues or cfg.queues, info.id, cfg.lease_s, 1, self.clock.now()
            )
            if not batch:
                break
            ctx = runner.prepare(batch[0], info)
            n += 1
            if ctx is None:
                continue
            started = self.clock.monotonic()
            try:
                out = ctx.task.fn(*ctx.args, **ctx.kwargs)
                result, exc = (asyncio.run(out) if ctx.task.is_async else out), None
            except Exception as e:
                result, exc = None, e
            ctx.runtime = self.clock.monotonic() - started
            runner.settle(ctx, result, exc)
        return n

    def hook(self, kind: type[H]) -> H | None:
        """The hook of type ``kind`` in this broker's chain, if any."""
        for h in self.hooks:
            if isinstance(h, kind):
                return h
        return None

    @property
    def dlq(self) -> DeadLetters:
        """Dead-letter operations: list, group, replay, purge."""
        from dtq_core.reliability.deadletter import DeadLetters

        return DeadLetters(self)

    @property
    def control(self) -> LocalConsole:
        """The Console API served by this broker."""
        from dtq_core.control import LocalConsole

        return LocalConsole(self)


__all__ = ["Broker", "BrokerConfig", "DTQError", "StopSummary", "default_hooks"]
