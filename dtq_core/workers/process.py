"""The process pool: each slot is a thread in the parent driving one child process.

The parent never forks: it runs threads, and a ``fork()`` of a threaded process can
deadlock the child (Python 3.12+ warns about it). Children come from multiprocessing's
fork server instead, a small single-threaded process started with fork+exec the first
time a pool needs a child; it has :mod:`dtq_core.workers.child` preloaded and forks each
child from there (see that module for how a child finds its tasks).

A script that runs a process pool must guard its entry point with
``if __name__ == "__main__":``, as with any multiprocessing start method but fork: each
child imports the script (as ``__mp_main__``) to find the tasks defined in it.

A task past its time limit, or a child that dies, costs the child: it is killed
(SIGKILL) and replaced, and the task fails with ``TimeLimitExceeded`` or
``WorkerCrashed`` and follows its retry policy.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from dtq_core.codec import dumps, loads
from dtq_core.errors import (
    BackendError,
    RemoteTaskError,
    Retry,
    TimeLimitExceeded,
    WorkerCrashed,
)
from dtq_core.task import ErrorInfo
from dtq_core.workers.base import (
    Backoff,
    Pool,
    WorkerInfo,
    WorkerShutdown,
    lease_ok,
    supervised,
    worker_prefix,
)
from dtq_core.workers.child import NOT_IMPORTABLE, READY_TIMEOUT_S, Child, context
from dtq_core.workers.runner import Runner

if TYPE_CHECKING:
    from dtq_core.backends.base import Delivery
    from dtq_core.broker import Broker

log = logging.getLogger("dtq.worker")


class ProcessPool(Pool):
    """``size`` child processes, one task at a time each."""

    kind = "process"

    def __init__(self, broker: Broker, size: int) -> None:
        super().__init__(broker, size)
        self.runner = Runner(broker)
        self._ctx = context()
        self._children: list[Child] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.replaced = 0

    def _modules(self) -> list[str]:
        """The modules defining the registered tasks: each child imports them first."""
        return sorted({t.fn.__module__ for t in self.broker.registry})

    def _spawn(self, count: int) -> list[Child]:
        """Start ``count`` children at once and wait until every one is ready."""
        modules = self._modules()
        children: list[Child] = []
        try:
            children.extend(Child(self._ctx, modules) for _ in range(count))
            for child in children:
                child.wait_ready(READY_TIMEOUT_S)
        except BaseException:
            for child in children:
                child.kill()
            raise
        return children

    def start(self) -> None:
        """Start the children and their driver threads.

        Raises:
            WorkerCrashed: A child died before it was ready (its error is on stderr).
        """
        prefix = worker_prefix()
        now = self.broker.clock.now()
        self._children = self._spawn(self.size)
        for i in range(self.size):
            info = WorkerInfo(f"{prefix}:p{i}", self.kind, started_at=now, last_seen=now)
            self.workers.append(info)
        for i, info in enumerate(self.workers):
            t = threading.Thread(
                target=supervised,
                args=(info, self.stopping, functools.partial(self._drive, i, info)),
                name=f"dtq-proc-{i}",
                daemon=True,
            )
            self._threads.append(t)
            t.start()

    def _replace(self, i: int) -> None:
        self._children[i].kill()
        [new] = self._spawn(1)
        with self._lock:
            self._children[i] = new
            self.replaced += 1
            if self._hard:  # the pool was stopped while the new child started
                new.kill()

    def _drive(self, i: int, info: WorkerInfo) -> None:
        b = self.broker
        cfg = b.config
        runner = self.runner
        backoff = Backoff(self.stopping, b.fail_stop)
        while not self.stopping.is_set():
            try:
                batch = b.backend.claim(cfg.queues, info.id, cfg.lease_s, 1, b.clock.now(), 0.5)
                backoff.ok()
            except BackendError as exc:
                backoff.failed(exc)
                continue
            for d in batch:
                if self.stopping.is_set():
                    runner.requeue(d, info.id, "worker stopping: requeued")
                    continue
                try:
                    if not lease_ok(b, d):
                        continue  # the store took it back: not ours to run or release
                except BackendError as exc:
                    backoff.failed(exc)
                    continue
                info.current, info.current_started, info.state = d, b.clock.now(), "busy"
                try:
                    self._run(i, d, info)
                except WorkerShutdown:
                    runner.requeue(d, info.id, "hard stop: requeued")
                except BackendError as exc:
                    backoff.failed(exc)
                finally:
                    info.current, info.current_started, info.state = None, None, "idle"
        # Tasks handed to this worker while it waited (Redis) are given back.
        with contextlib.suppress(BackendError):
            for d in b.backend.leave(cfg.queues, info.id, cfg.lease_s, b.clock.now()):
                runner.requeue(d, info.id, "worker stopping: requeued")
        info.state = "stopped"

    def _run(self, i: int, d: Delivery, info: WorkerInfo) -> None:
        runner = self.runner
        ctx = runner.prepare(d, info)
        if ctx is None:
            return
        limit = runner.time_limit(ctx)
        child = self._children[i]
        fn = ctx.task.fn
        call = {
            "name": d.name,
            "module": fn.__module__,
            "qualname": fn.__qualname__,
            "args": ctx.args,
            "kwargs": ctx.kwargs,
        }
        started = self.broker.clock.monotonic()
        result: Any = None
        exc: BaseException | None = None
        try:
            child.conn.send_bytes(dumps(call).encode())
            if not child.conn.poll(limit):
                if self.stopping.is_set() and not child.proc.is_alive():
                    raise WorkerShutdown
                self._replace(i)
                exc = TimeLimitExceeded(f"ran past its time limit of {limit}s; process killed")
            else:
                reply = loads(child.conn.recv_bytes())
                if reply["ok"]:
                    result = reply["result"]
                elif "missing" in reply:
                    self._bury_unimportable(d, info, reply["missing"])
                    return
                elif "retry" in reply:
                    exc = Retry(reply["retry"], reply.get("reason", "retry requested"))
                else:
                    exc = RemoteTaskError(
                        reply["type"], reply["mro"], reply["message"], reply["traceback"]
                    )
        except (EOFError, OSError, ConnectionError):
            if self.stopping.is_set() and self._hard:
                raise WorkerShutdown from None
            child.proc.join(1.0)  # reap it, so the exit code is known
            code = child.proc.exitcode
            self._replace(i)
            exc = WorkerCrashed(f"worker process died (exit code {code}) while running the task")
        ctx.runtime = self.broker.clock.monotonic() - started
        runner.settle(ctx, result, exc)

    def _bury_unimportable(self, d: Delivery, info: WorkerInfo, why: str) -> None:
        """Dead-letter a task its child cannot import: no retry would find it either."""
        b = self.broker
        error = ErrorInfo(
            "TaskNotImportable", f"task {d.name!r} cannot run in a worker process: {why}"
        )
        trs = b.backend.bury(d.task_id, d.token, error, NOT_IMPORTABLE, b.clock.now())
        if trs:
            info.failed += 1
        b.emit(trs, info.id)

    _hard = False

    def stop(self, drain_timeout: float) -> None:
        """Drain up to ``drain_timeout``; then kill busy children and requeue their tasks."""
        self.stopping.set()
        self.broker.backend_wakeup()
        deadline = time.monotonic() + drain_timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._kill_all()

    def hard_stop(self) -> None:
        """Kill every child now; running tasks are requeued."""
        self.stopping.set()
        self._kill_all()

    def _kill_all(self) -> None:
        with self._lock:
            self._hard = True
            children = list(self._children)
        for child in children:
            child.kill()
        for t in self._threads:
            t.join(2.0)
