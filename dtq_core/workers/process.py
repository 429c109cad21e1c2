"""The process pool: each slot is a thread in the parent driving one child process.

The parent never forks: it runs threads, and a ``fork()`` of a threaded process can
deadlock the child (Python 3.12+ warns about it). Children come from multiprocessing's
fork server instead, a small single-threaded process started with fork+exec the first
time a pool needs a child; it has this module preloaded and forks each child from there.

A child therefore inherits nothing from the parent's memory: it finds a task by importing
the module that defines it and looking up its qualified name (``fn.__module__`` and
``fn.__qualname__`` of the task the parent's registry holds under the message's name: a
message still never names what is imported). A task defined inside a function, or
whose module does not import in the child, cannot run there: its message is
dead-lettered (reason ``task not importable``) with a one-line error naming the cause.
A script that runs a process pool must guard its entry point with
``if __name__ == "__main__":``, as with any multiprocessing start method but fork: each
child imports the script (as ``__mp_main__``) to find the tasks defined in it. Children
get the parent's ``sys.path`` and working directory, and the environment the fork server
was started with.

A task past its time limit, or a child that dies, costs the child: it is killed
(SIGKILL) and replaced, and the task fails with ``TimeLimitExceeded`` or
``WorkerCrashed`` and follows its retry policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import importlib
import inspect
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
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
from dtq_core.workers.runner import Runner

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext, ForkServerProcess

    from dtq_core.backends.base import Delivery
    from dtq_core.broker import Broker

log = logging.getLogger("dtq.worker")

#: Seconds a new child may take to start and import the task modules before the pool
#: gives up on it (a cold start of a large app under load, not a task's run time).
READY_TIMEOUT_S = 60.0

#: The dead-letter reason of a task that its worker process cannot import.
NOT_IMPORTABLE = "task not importable"

_preload_lock = threading.Lock()
_preload_set = False


def _context() -> ForkServerContext:
    """The fork server context, with this module preloaded in the server (set once)."""
    global _preload_set
    ctx = multiprocessing.get_context("forkserver")
    with _preload_lock:
        if not _preload_set:
            # Without "__main__": a script that forgot its main guard then fails in each
            # child (with multiprocessing's own message) rather than killing the server.
            # This is the process-wide fork server, so this replaces the default preload.
            ctx.set_forkserver_preload([__name__])
            _preload_set = True
    return ctx


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Resolver:
    """Finds task functions in a child by module and qualified name, importing once."""

    def __init__(self) -> None:
        self._found: dict[tuple[str, str], Callable[..., Any]] = {}
        self._failed: dict[str, str] = {}

    def import_module(self, name: str) -> str | None:
        """Import ``name``; the one-line reason when it cannot be imported."""
        if name in self._failed:
            return self._failed[name]
        try:
            importlib.import_module(name)
        except (Exception, SystemExit) as exc:
            self._failed[name] = _one_line(exc)
            return self._failed[name]
        return None

    def find(self, name: str, module: str, qualname: str) -> Callable[..., Any] | str:
        """The function of task ``name``, or why it cannot be found here."""
        key = (module, qualname)
        fn = self._found.get(key)
        if fn is not None:
            return fn
        where = f"{module}.{qualname}"
        if "<locals>" in qualname or "<lambda>" in qualname:
            return (
                f"{where} is defined inside a function; define it at module level so that "
                "a worker process can import it"
            )
        failed = self.import_module(module)
        if failed is not None:
            return f"importing its module {module!r} failed in the worker process: {failed}"
        found = _lookup(sys.modules[module], name, qualname)
        if found is None:
            return f"{where} is not defined when the worker process imports {module!r}"
        self._found[key] = found
        return found


def _lookup(module: Any, name: str, qualname: str) -> Callable[..., Any] | None:
    """The function behind ``qualname`` in ``module`` (a Task gives its ``fn``)."""
    from dtq_core.client import Task

    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            break
    if isinstance(obj, Task):
        return obj.fn
    if callable(obj):
        return obj  # type: ignore[no-any-return]
    # Registered under another attribute name: task(name=...)(fn) assigned elsewhere.
    for value in vars(module).values():
        if isinstance(value, Task) and value.name == name:
            return value.fn
    return None


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent (the fork server) dies.

    The fork server exits when the pool's process does (even on a kill -9: it reads EOF
    on a pipe), so an orphaned child never keeps the pool's pipes (and the owner's files)
    open.
    """
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(0)


def _child_main(conn: Connection, modules: list[str]) -> None:
    """The child's loop: import the task modules, say ready, then run calls one by one."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    resolver = _Resolver()
    failed = {m: why for m in modules if (why := resolver.import_module(m)) is not None}
    conn.send_bytes(dumps({"ready": True, "failed": failed}).encode())
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            os._exit(0)
        call = loads(raw)
        found = resolver.find(call["name"], call["module"], call["qualname"])
        if isinstance(found, str):
            conn.send_bytes(dumps({"ok": False, "missing": found}).encode())
            continue
        try:
            out = found(*call["args"], **call["kwargs"])
            if inspect.iscoroutine(out):
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
    """One child process and the parent's end of its pipe."""

    __slots__ = ("conn", "proc")

    def __init__(self, ctx: ForkServerContext, modules: list[str]) -> None:
        parent, child = ctx.Pipe()
        self.proc: ForkServerProcess = ctx.Process(
            target=_child_main, args=(child, modules), daemon=True
        )
        self.proc.start()
        child.close()
        self.conn: Connection = parent

    def wait_ready(self, timeout: float) -> None:
        """Wait for the child's ready message; log the task modules it could not import.

        Raises:
            WorkerCrashed: The child died or stayed silent before it was ready.
        """
        died = False
        try:
            ready = wait([self.conn], timeout) and loads(self.conn.recv_bytes())
        except (EOFError, OSError):
            ready, died = None, True
        if not ready:
            if died:
                self.proc.join(2.0)  # reap it, so that its exit code is known
            alive = self.proc.is_alive()
            self.kill()
            cause = (
                f"did not become ready within {timeout:g}s"
                if alive
                else f"exited (code {self.proc.exitcode}) before it was ready"
            )
            raise WorkerCrashed(
                f"worker process {cause}; its error is on stderr (a script that runs a "
                "process pool must guard its entry point with `if __name__ == '__main__':`)"
            )
        for module, why in ready["failed"].items():
            log.warning(
                "worker process %s cannot import task module %r: %s; its tasks will be "
                "dead-lettered as %r",
                self.proc.pid,
                module,
                why,
                NOT_IMPORTABLE,
            )

    def kill(self) -> None:
        """SIGKILL the child (if still running), reap it and close the pipe."""
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
        self._ctx = _context()
        self._children: list[_Child] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self.replaced = 0

    def _modules(self) -> list[str]:
        """The modules defining the registered tasks: each child imports them first."""
        return sorted({t.fn.__module__ for t in self.broker.registry})

    def _spawn(self, count: int) -> list[_Child]:
        """Start ``count`` children at once and wait until every one is ready."""
        modules = self._modules()
        children: list[_Child] = []
        try:
            children.extend(_Child(self._ctx, modules) for _ in range(count))
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
