"""The Broker: the facade that composes registry, backend, pool, hooks and events."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from dtq_core.backends import make_backend
from dtq_core.backends.base import Delivery, NewTask, Transition
from dtq_core.client import AsyncResult, Task
from dtq_core.codec import encode_message
from dtq_core.config import BrokerConfig
from dtq_core.errors import ConfigError, DTQError, TaskNotFound, TaskNotRegistered
from dtq_core.events import EventBus
from dtq_core.hooks import PER_CALL_OPTIONS, Hook
from dtq_core.ids import new_id
from dtq_core.maintenance import Maintenance
from dtq_core.monitoring.metrics import Metrics
from dtq_core.registry import default_registry
from dtq_core.task import TERMINAL, TaskRecord, TaskState

if TYPE_CHECKING:
    from dtq_core.control import LocalConsole
    from dtq_core.reliability.deadletter import DeadLetters
    from dtq_core.workers.base import Pool

log = logging.getLogger("dtq.broker")

H = TypeVar("H", bound=Hook)

_RUNNING = TaskState.RUNNING
_PENDING = TaskState.PENDING


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


class Broker:
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
        self.events.subscribe(self.metrics.on_event)
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
        self._server: Any = None
        self._forced = False
        #: The summary of the last stop (also after a stop made by a signal handler).
        self.last_stop: StopSummary | None = None
        self.started_at: float | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Open the backend and attach hooks (done by :meth:`start` and the first send)."""
        with self._lifecycle:
            if self._opened:
                return
            self.backend.open()
            for hook in self.hooks:
                hook.attach(self)
            self._opened = True
            sock = getattr(self.backend, "socket_path", None)
            if sock is not None:
                from dtq_core.control import LocalConsole
                from dtq_core.rpc import ConsoleServer

                self._server = ConsoleServer(LocalConsole(self), sock())
                self._server.start()

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
            if cfg.num_workers > 0:
                self.backend.register_names(self.registry.names())
                self.pool = self._make_pool()
                self.pool.start()
                self.maintenance.start()
            if cfg.install_signal_handlers:
                self.install_signal_handlers()
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
                self.backend.forget_worker(w.id)
        for hook in reversed(self.hooks):
            hook.detach(self)
        left = sum(q.ready + q.delayed for q in self.backend.queue_stats())
        with self._lifecycle:
            if self._server is not None:
                self._server.stop()
                self._server = None
            if self._opened:
                self.backend.close()
                self._opened = False
        summary = StopSummary(processed, failed, left, drained, self._forced)
        self.last_stop = summary
        self._stopped.set()
        return summary

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

    # -- producing ---------------------------------------------------------------------

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
        now = self.clock.now()
        due = self._due(now, countdown, eta)
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
            existing = hook.before_enqueue(self, nt, topts)
            if existing is not None:
                return AsyncResult(existing, self)
        self.emit(self.backend.enqueue(nt, now))
        for hook in self._after_enqueue:
            hook.after_enqueue(self, nt, topts)
        if due is not None:
            self.wake_scheduler(due)
        return AsyncResult(tid, self)

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
            payload = encode_message(tid, name, args, kwargs, None, codec)
            nt = NewTask(tid, name, q, prio, payload, None, max_retries, time_limit)
            existing = None
            for hook in self._before_enqueue:
                existing = hook.before_enqueue(self, nt, topts)
                if existing is not None:
                    break
            if existing is not None:
                results.append(AsyncResult(existing, self))
                continue
            batch.append(nt)
            results.append(AsyncResult(tid, self))
        if batch:
            self.emit(self.backend.enqueue_many(batch, self.clock.now()))
            for nt in batch:
                for hook in self._after_enqueue:
                    hook.after_enqueue(self, nt, topts)
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

    # -- results and events ------------------------------------------------------------

    def wait(self, task_id: str, timeout: float | None = None) -> TaskRecord:
        """Block until the task is final; return its record.

        Raises:
            TimeoutError: Not final in time.
            TaskNotFound: Unknown id or expired result.
        """
        backend = self.backend
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = 0.001 if backend.capabilities.cross_process else 0.25
        while True:
            state = backend.get_state(task_id)
            if state is None:
                raise TaskNotFound(
                    f"task {task_id} is unknown or its result expired "
                    f"(results are kept {self.config.result_ttl:g}s)"
                )
            if state in TERMINAL:
                rec = backend.get(task_id)
                if rec is not None:
                    return rec
                continue
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                with self._waiters_lock:
                    self._waiters.pop(task_id, None)
                raise TimeoutError(f"task {task_id} still {state.value} after {timeout}s")
            with self._waiters_lock:
                ev = self._waiters.setdefault(task_id, threading.Event())
            if backend.get_state(task_id) in TERMINAL:
                continue
            ev.wait(poll if remaining is None else min(poll, remaining))
            if backend.capabilities.cross_process:
                poll = min(poll * 2, 0.1)

    def emit(self, transitions: list[Transition], worker: str | None = None) -> None:
        """Publish one event per transition and wake result waiters."""
        if not transitions:
            return
        now = self.clock.now()
        publish = self.events.publish
        waiters = self._waiters
        for tr in transitions:
            publish(now, tr.task_id, tr.name, tr.queue, tr.old, tr.new, worker, tr.note)
            if waiters and tr.new in TERMINAL:
                ev = waiters.pop(tr.task_id, None)
                if ev is not None:
                    ev.set()

    def emit_started(self, d: Delivery, worker: str) -> None:
        """Publish the PENDING -> RUNNING event of a claimed task."""
        self.events.publish(d.started_at, d.task_id, d.name, d.queue, _PENDING, _RUNNING, worker)

    def wake_scheduler(self, when: float) -> None:
        """A delayed task is due at ``when``: make sure the scheduler looks by then."""
        if self._started:
            self.maintenance.wake(when)

    def backend_wakeup(self) -> None:
        """Wake blocked claimers (stopping)."""
        self.backend.wakeup()

    def heartbeat(self, now: float) -> None:
        """Renew the leases of running tasks and publish worker states."""
        pool = self.pool
        if pool is None:
            return
        cfg = self.config
        self.backend.extend_leases(pool.in_flight(), cfg.lease_s, now)
        for w in pool.workers:
            w.last_seen = now
            self.backend.heartbeat(w.id, w.to_dict(now), now, cfg.lease_s)

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
