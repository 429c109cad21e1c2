"""The process pool: each slot is a thread in the parent driving one forked child.

Children are forked, so they inherit the task registry (tasks defined in ``__main__``
included); a message names a task and the child looks it up there, nothing is imported.
A task past its time limit, or a child that dies, costs the child: it is killed
(SIGKILL) and replaced, and the task fails with ``TimeLimitExceeded`` or
``WorkerCrashed`` and follows its retry policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

from dtq_core.codec import dumps, loads
from dtq_core.errors import (
    BackendError,
    RemoteTaskError,
    Retry,
    TimeLimitExceeded,
    WorkerCrashed,
)
from dtq_core.reliability.retry import qualified
from dtq_core.workers.base import (
    Backoff,
    Pool,
    WorkerInfo,
    WorkerShutdown,
    lease_ok,
    supervised,
    worker_prefix,
)
from dtq_core.workers.runner import Runner

if TYPE_CHECKING:
    from multiprocessing.context import ForkProcess

    from dtq_core.backends.base import Delivery
    from dtq_core.broker import Broker
    from dtq_core.registry import Registry


def _child_main(conn: Connection, registry: Registry) -> None:
    """The child's loop: receive a call, run it, answer; never imports by name."""
    if sys.platform == "linux":
        # Die with the parent: an orphaned child would keep the pool's pipes (and the
        # owner's files) open after a kill -9 of the owner.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() == 1:
            os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            os._exit(0)
        call = loads(raw)
        task = registry.get(call["name"])
        try:
            if task is None:
                raise LookupError(f"task {call['name']!r} is not registered in the worker")
            out = task.fn(*call["args"], **call["kwargs"])
            if task.is_async:
                out = asyncio.run(out)
            reply = dumps({"ok": True, "result": out})
        except Retry as exc:
            reply = dumps({"ok": False, "retry": exc.countdown, "reason": exc.reason})
        except BaseException as exc:
            reply = dumps(
                {
                    "ok": False,
                    "type": qualified(type(exc)),
                    "mro": [qualified(c) for c in type(exc).__mro__],
                    "message": str(exc),
                    "traceback": "".join(traceback.format_exception(exc)),
                }
            )
        conn.send_bytes(reply.encode())


class _Child:
    __slots__ = ("conn", "proc")

    def __init__(self, ctx: Any, registry: Registry) -> None:
        parent, child = ctx.Pipe()
        self.proc: ForkProcess = ctx.Process(
            target=_child_main, args=(child, registry), daemon=True
        )
        self.proc.start()
        child.close()
        self.conn: Connection = parent

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)
        self.conn.close()


class ProcessPool(Pool):
    """``size`` child processes, one task at a time each."""

    kind = "process"

    def __init__(self, broker: Broker, size: int) -> None:
        super().__init__(broker, size)
        self.runner = Runner(broker)
        self._ctx = multiprocessing.get_context("fork")
        self._children: list[_Child] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.replaced = 0

    def start(self) -> None:
        """Fork the children and start their driver threads."""
        prefix = worker_prefix()
        now = self.broker.clock.now()
        for i in range(self.size):
            self._children.append(_Child(self._ctx, self.broker.registry))
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
        with self._lock:
            self._children[i].kill()
            self._children[i] = _Child(self._ctx, self.broker.registry)
            self.replaced += 1

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
        started = self.broker.clock.monotonic()
        result: Any = None
        exc: BaseException | None = None
        try:
            child.conn.send_bytes(
                dumps({"name": d.name, "args": ctx.args, "kwargs": ctx.kwargs}).encode()
            )
            if not child.conn.poll(limit):
                if self.stopping.is_set() and not child.proc.is_alive():
                    raise WorkerShutdown
                self._replace(i)
                exc = TimeLimitExceeded(f"ran past its time limit of {limit}s; process killed")
            else:
                reply = loads(child.conn.recv_bytes())
                if reply["ok"]:
                    result = reply["result"]
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
        self._hard = True
        for child in self._children:
            child.kill()
        for t in self._threads:
            t.join(2.0)
