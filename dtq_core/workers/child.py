"""A process pool's child: started from the fork server, it imports and runs tasks.

A child inherits nothing from the parent's memory: it finds a task by importing the
module that defines it and looking up its qualified name (``fn.__module__`` and
``fn.__qualname__`` of the task the parent's registry holds under the message's name: a
message still never names what is imported). A task defined inside a function, or
whose module does not import in the child, cannot run there: its message is
dead-lettered (reason ``task not importable``) with a one-line error naming the cause.
Children get the parent's ``sys.path`` and working directory, and the environment the
fork server was started with.

The parent's side of each child is :class:`Child` (used by
:class:`~dtq_core.workers.process.ProcessPool`); the child's side is :func:`_child_main`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib
import inspect
import logging
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import TYPE_CHECKING, Any

from dtq_core.codec import check_json, dumps, loads
from dtq_core.errors import Retry, WorkerCrashed
from dtq_core.reliability.retry import qualified
from dtq_core.text import valid_utf8

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext, ForkServerProcess

log = logging.getLogger("dtq.worker")

#: Seconds a new child may take to start and import the task modules before the pool
#: gives up on it (a cold start of a large app under load, not a task's run time).
READY_TIMEOUT_S = 60.0

#: The dead-letter reason of a task that its worker process cannot import.
NOT_IMPORTABLE = "task not importable"

_preload_lock = threading.Lock()
_preload_set = False


def context() -> ForkServerContext:
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
            check_json(out, f"result of task {call['name']!r}")  # the threads' own words
            reply = dumps({"ok": True, "result": out})
        except Retry as exc:
            reply = dumps({"ok": False, "retry": exc.countdown, "reason": exc.reason})
        except BaseException as exc:
            reply = dumps(
                {
                    "ok": False,
                    "type": qualified(type(exc)),
                    "mro": [qualified(c) for c in type(exc).__mro__],
                    # As text the pipe's JSON takes (a lone surrogate escaped).
                    "message": valid_utf8(str(exc)),
                    "traceback": valid_utf8("".join(traceback.format_exception(exc))),
                }
            )
        conn.send_bytes(reply.encode())


class Child:
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
