"""The thread pool (default): N threads claim and run tasks; async tasks run on a loop."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from dtq_core.backends.base import Delivery
from dtq_core.errors import BackendError
from dtq_core.workers.base import (
    LEASE_CHECK,
    Backoff,
    Pool,
    WorkerInfo,
    WorkerShutdown,
    adaptive_prefetch,
    lease_ok,
    log,
    supervised,
    worker_prefix,
)
from dtq_core.workers.loop import LoopThread
from dtq_core.workers.runner import Runner
from dtq_core.workers.timelimit import Watchdog, raise_in_thread

if TYPE_CHECKING:
    from dtq_core.broker import Broker
    from dtq_core.hooks import RunContext


#: Builds a named tuple from a plain one without its Python-level ``__new__``.
_make = tuple.__new__

#: Longest an idle thread waits in the pool for the claiming thread before it looks
#: again (a stop wakes it at once).
IDLE_WAIT_S = 1.0


class ThreadPool(Pool):
    """``size`` threads; each claims ``prefetch`` tasks at a time and runs them."""

    kind = "thread"

    def __init__(self, broker: Broker, size: int) -> None:
        super().__init__(broker, size)
        self.runner = Runner(broker)
        # On a store in this process the pool stores successes itself when a thread
        # runs out of work (_take_local), and arms the buffer otherwise (_work, _take).
        self.runner.batch_acks(lazy=not broker.backend.capabilities.cross_process)
        self.acks = self.runner.acks
        self.watchdog = Watchdog()
        self._threads: list[threading.Thread] = []
        # Tasks claimed ahead (prefetch), taken by whichever thread is free first.
        self._ahead: deque[Delivery] = deque()
        # On a store in this process, one idle thread at a time claims (the others wait
        # here for what it claims ahead): see _take_local.
        self._handoff_lock = threading.Lock()
        self._handoff = threading.Condition(self._handoff_lock)
        self._claiming = False
        self._idle = 0
        self._avg_runtime: float | None = None
        self._loop: LoopThread | None = None
        self._loop_lock = threading.Lock()
        self._hard = False
        # Threads inside a task's call -> whether a stop interrupted it.
        self._in_call: dict[int, bool] = {}
        # A lock per thread (by ident) around leaving a call and a stop's marking of
        # it: one lock for all was taken by every thread per task, and contended.
        self._call_locks: dict[int, threading.Lock] = {}

    def start(self) -> None:
        """Start the threads."""
        prefix = worker_prefix()
        now = self.broker.clock.now()
        for i in range(self.size):
            info = WorkerInfo(f"{prefix}:t{i}", self.kind, started_at=now, last_seen=now)
            self.workers.append(info)
            t = threading.Thread(
                target=supervised,
                args=(info, self.stopping, functools.partial(self._work, info)),
                name=f"dtq-worker-{i}",
                daemon=True,
            )
            self._threads.append(t)
            t.start()

    def _take(self, info: WorkerInfo, limit: int) -> Delivery | None:
        """The next task: from the tasks this process claimed ahead, else a new claim.

        Tasks claimed ahead wait in one queue shared by the pool's threads, so a long
        task holds up only its own thread: the others take the rest.
        """
        if not self.broker.backend.capabilities.cross_process:
            return self._take_local(info, limit)
        try:
            d = self._ahead.popleft()
        except IndexError:
            pass
        else:
            return self._from_ahead(d)
        if self.acks is not None:
            self.acks.arm()  # the claim may block: the waiting successes must not
        cfg = self.broker.config
        batch = self.broker.backend.claim(
            cfg.queues, info.id, cfg.lease_s, limit, self.broker.clock.now(), 0.5
        )
        if not batch:
            return None
        self._ahead.extend(batch[1:])
        return batch[0]

    def _take_local(self, info: WorkerInfo, limit: int) -> Delivery | None:
        """:meth:`_take` on a store in this process (memory, the embedded owner).

        One idle thread at a time claims, a batch at once, and blocks in the store when
        nothing is ready; the other idle threads wait in the pool for the tasks it
        claimed ahead. So a producer wakes a thread only when one is idle (the one
        waiting in the store), a busy pool takes the store's lock once per batch, and
        the claimer wakes one waiting thread per task claimed ahead, plus one to claim
        next. A thread that runs out of tasks first stores the successes waiting in
        the ack buffer, so a pool that runs out of work leaves no result waiting.
        """
        ahead = self._ahead
        if ahead:
            # A busy pool: the next task claimed ahead, without the pool's lock (a
            # deque's popleft is atomic). Every thread takes one per task, and a lock
            # held by a thread that loses the GIL holds up all the others.
            try:
                return self._from_ahead(ahead.popleft())
            except IndexError:
                pass  # another thread took the last one
        handoff = self._handoff
        lock = self._handoff_lock  # entered directly: the Condition's enter is a Python call
        acks = self.acks
        while True:
            with lock:
                if self._ahead:
                    return self._from_ahead(self._ahead.popleft())
                if self.stopping.is_set():
                    return None
                if not self._claiming:
                    self._claiming = True
                    break
                if acks is None or not len(acks):
                    self._idle += 1
                    try:
                        handoff.wait(IDLE_WAIT_S)
                    finally:
                        self._idle -= 1
                    continue
            acks.flush()  # about to wait: outside the pool's lock
        batch: list[Delivery] = []
        try:
            if acks is not None and len(acks):
                acks.flush()
            cfg = self.broker.config
            batch = self.broker.backend.claim(
                cfg.queues, info.id, cfg.lease_s, limit, self.broker.clock.now(), 0.5
            )
        finally:
            with lock:
                self._claiming = False
                if batch:
                    self._ahead.extend(batch[1:])
                    # One per task claimed ahead, and one to claim next. Nobody after a
                    # claim that found nothing (this thread claims again) or failed
                    # (this thread backs off; a waiting one looks within IDLE_WAIT_S).
                    if self._idle:
                        handoff.notify(min(self._idle, len(batch)))
        return batch[0] if batch else None

    def _from_ahead(self, d: Delivery) -> Delivery:
        # Its wait is measured to when it starts, not to when it was claimed (the lease
        # still counts from the claim). A plain tuple made a Delivery: ``_replace`` costs
        # 3x, and even the named tuple's own ``__new__`` is a Python call.
        return _make(
            Delivery,
            (
                *d[:8],
                self.broker.clock.now(),
                d[9],
                d[10],
                d.started_at if d.leased_at is None else d.leased_at,
            ),
        )

    def _work(self, info: WorkerInfo) -> None:
        broker = self.broker
        cfg = broker.config
        clock = broker.clock
        runner = self.runner
        stopping = self.stopping
        backoff = Backoff(stopping, broker.fail_stop)
        # prefetch=None adapts where a claim is a round trip or takes a local store's
        # lock: batches of about PREFETCH_BUDGET_S of work, by the moving average of
        # run times.
        caps = broker.backend.capabilities
        adaptive = cfg.prefetch is None and (caps.batch_acks or not caps.cross_process)
        limit = cfg.prefetch or 1
        acks = self.acks
        take = self._take if caps.cross_process else self._take_local  # (a call less)
        # A task taken from those claimed ahead has its start time just read: when it
        # waited less than this since its claim, lease_ok would say yes (no call).
        fresh = cfg.lease_s * LEASE_CHECK
        while not stopping.is_set():
            try:
                d = take(info, limit)
                if acks is not None:
                    acks.arm()  # on to another task while successes wait: time them
                if (
                    d is not None
                    and (d.leased_at is None or d.started_at - d.leased_at >= fresh)
                    and not lease_ok(broker, d)
                ):
                    self._drop(d)
                    continue
                if backoff.delay:
                    backoff.ok()
            except BackendError as exc:
                backoff.failed(exc)
                continue
            if d is None:
                continue
            if stopping.is_set():
                runner.requeue(d, info.id, "worker stopping: requeued")
                break
            info.current = d
            info.current_started = d.started_at  # when this thread took it
            info.state = "busy"
            try:
                took = self._run_one(runner, d, info)
                if adaptive and took is not None:
                    avg = self._avg_runtime
                    avg = took if avg is None else 0.8 * avg + 0.2 * took
                    self._avg_runtime = avg
                    if not self._ahead:  # the next take claims: size it now
                        limit = adaptive_prefetch(avg)
            except WorkerShutdown:
                runner.requeue(d, info.id, "hard stop: requeued")
            except BackendError as exc:
                # The outcome could not be stored: the lease runs out and the task is
                # delivered again (at least once).
                backoff.failed(exc)
            except Exception:
                # A bug outside the task (a hook, a subscriber, a bad option): the
                # worker lives on; the task is given back rather than left RUNNING.
                log.exception("worker %s: unexpected error around task %s", info.id, d.task_id)
                with contextlib.suppress(Exception):
                    runner.requeue(d, info.id, "worker error: requeued")
            finally:
                info.current = None
                info.current_started = None
                info.state = "idle"
        # Tasks handed to this worker while it waited (Redis) are given back.
        with contextlib.suppress(BackendError):
            for d in broker.backend.leave(cfg.queues, info.id, cfg.lease_s, clock.now()):
                runner.requeue(d, info.id, "worker stopping: requeued")
        info.state = "stopped"

    def _drop(self, d: Delivery) -> None:
        """Forget a delivery the store took back (its release is refused: stale token)."""
        with contextlib.suppress(BackendError):
            self.broker.backend.release(d.task_id, d.token, self.broker.clock.now())

    def in_flight(self) -> list[tuple[str, int]]:
        """Running tasks, successes waiting to be stored and tasks claimed ahead."""
        return [*super().in_flight(), *((d.task_id, d.token) for d in list(self._ahead))]

    def _requeue_ahead(self, note: str) -> None:
        while True:
            try:
                d = self._ahead.popleft()
            except IndexError:
                return
            with contextlib.suppress(Exception):
                self.runner.requeue(d, "", note)

    def _run_one(self, runner: Runner, d: Any, info: WorkerInfo) -> float | None:
        """Run one delivery; its run time (``None`` when it did not run)."""
        ctx = runner.prepare(d, info)
        if ctx is None:
            return None
        result, exc = self._invoke(runner, ctx)
        if isinstance(exc, WorkerShutdown):
            raise exc
        runner.settle(ctx, result, exc)
        return ctx.runtime

    def _invoke(self, runner: Runner, ctx: RunContext) -> tuple[Any, BaseException | None]:
        limit = runner.time_limit(ctx)
        task = ctx.task
        started = self.broker.clock.monotonic()
        ident = threading.get_ident()
        try:
            # No lock to enter: a dict's setitem is atomic, and a stop that looks in
            # between either sees this thread in its call or not at all. (Leaving takes
            # the lock: a stop must not mark a thread that just left its call.)
            self._in_call[ident] = False  # False: not interrupted (yet)
            if task.is_async:
                result = self._async_loop().run(task.fn(*ctx.args, **ctx.kwargs), limit)
            elif limit is None:
                result = task.fn(*ctx.args, **ctx.kwargs)
            else:
                armed = self.watchdog.arm(limit)
                try:
                    result = task.fn(*ctx.args, **ctx.kwargs)
                finally:
                    self.watchdog.disarm(armed)
            return result, None
        except (Exception, WorkerShutdown) as exc:
            return None, exc
        except BaseException as exc:  # SystemExit, KeyboardInterrupt raised by a task
            return None, exc
        finally:
            lock = self._call_locks.get(ident)
            if lock is None:
                lock = self._call_locks.setdefault(ident, threading.Lock())
            with lock:
                interrupted = self._in_call.pop(ident, False)
            if interrupted:
                # A stop's WorkerShutdown may still be pending: it must not land in the
                # settle, a hook or a subscriber that follows the task.
                raise_in_thread(ident, None)
            ctx.runtime = self.broker.clock.monotonic() - started

    def _async_loop(self) -> LoopThread:
        with self._loop_lock:
            if self._loop is None:
                self._loop = LoopThread()
            return self._loop

    def stop(self, drain_timeout: float) -> None:
        """Stop claiming, drain up to ``drain_timeout``, then interrupt and requeue."""
        self.stopping.set()
        self.broker.backend_wakeup()
        with self._handoff:
            self._handoff.notify_all()
        deadline = time.monotonic() + drain_timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._interrupt_stragglers()
        self._requeue_ahead("worker stopping: requeued")
        self.runner.close()
        self.watchdog.stop()
        if self._loop is not None:
            self._loop.stop()

    def hard_stop(self) -> None:
        """Interrupt every running task now (it is requeued)."""
        self.stopping.set()
        with self._handoff:
            self._handoff.notify_all()
        self._interrupt_stragglers()
        self._requeue_ahead("hard stop: requeued")
        self.runner.close()

    def _interrupt_stragglers(self) -> None:
        alive = [(t, w) for t, w in zip(self._threads, self.workers, strict=True) if t.is_alive()]
        for t, _ in alive:
            # Only threads inside a task's own call: never one settling or in a hook.
            if t.ident is None:
                continue
            lock = self._call_locks.setdefault(t.ident, threading.Lock())
            with lock:
                if t.ident in self._in_call:
                    self._in_call[t.ident] = True
                    raise_in_thread(t.ident, WorkerShutdown)
        for t, w in alive:
            t.join(1.0)
            d = w.current
            if t.is_alive() and d is not None:
                # Stuck in C code: give the task back; the thread's late ack will be stale.
                self.runner.requeue(d, w.id, "worker stuck at shutdown: requeued")
