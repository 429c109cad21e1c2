"""The owner's socket: attached producers, workers and consoles reach the store here.

The owner of a data directory serves two protocols on ``DIR/dtq.sock``, chosen by the
role a peer names in its hello (see :mod:`.wire`):

- ``backend``: the :class:`~dtq_core.backends.base.Backend` methods, for brokers in
  other processes (producers and attached workers). Every transition such a call makes
  is also published on the owner broker's event bus, so the owner's metrics, result
  waiters and console see the whole system.
- ``console``: the Console API, for ``dtq`` and ``dtq-tui``.

Safety: the socket file is ``0600``; a peer whose uid differs from the owner's is
refused (``SO_PEERCRED``), frames are bounded (:data:`.wire.MAX_FRAME`), connections are
bounded (one thread each), and a read-only session is refused every call that changes
state, here on the owner's side. A peer that vanishes mid-call ends its thread quietly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from dtq_core import errors
from dtq_core.backends.base import Backend, Delivery
from dtq_core.backends.embedded import wire
from dtq_core.console_api import changes_state

if TYPE_CHECKING:
    from dtq_core.control import LocalConsole

log = logging.getLogger("dtq.embedded.server")

#: Connections served at once; more are refused with a one-line reason.
MAX_CONNECTIONS = 256
#: Longest a remote ``wait_final`` blocks one connection, seconds.
MAX_WAIT_S = 30.0

#: Backend methods whose result is a list of transitions to publish.
_TRANSITIONS = frozenset(
    {
        "enqueue",
        "enqueue_many",
        "ack",
        "fail",
        "bury",
        "release",
        "reclaim_expired",
        "reclaim_unreceived",
        "promote_due",
        "cancel",
        "replay",
    }
)
#: Backend methods that may add a delayed task (the owner's scheduler must look).
_DELAYS = frozenset({"enqueue", "enqueue_many", "fail", "release", "replay"})
_PEERCRED = struct.Struct("3i")


class StoreServer:
    """Serves an owned store's backend and Console API on its Unix socket.

    Args:
        backend: The owned store.
        console: The owner broker's Console API (``None``: backend calls only).
        path: The socket file.
        max_connections: Connections served at once.
    """

    def __init__(
        self,
        backend: Backend,
        console: LocalConsole | None,
        path: Path,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.backend = backend
        self.console = console
        self.path = path
        self.max_connections = max_connections
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._uid = os.getuid()
        #: Connections refused (peer uid, limit, bad hello), for tests and the snapshot.
        self.refused = 0

    def start(self) -> None:
        """Bind (replacing a stale socket file) and serve in a daemon thread."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(64)
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, name="dtq-store-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving: close every connection and remove the socket file."""
        self._stop.set()
        if self._sock is not None:  # a connection of our own wakes the blocked accept()
            with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as poke:
                poke.settimeout(0.2)
                poke.connect(str(self.path))
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    @property
    def connections(self) -> int:
        """Connections open now."""
        return len(self._conns)

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self._stop.is_set():
                conn.close()
                return
            reason = self._refusal(conn)
            if reason is not None:
                self.refused += 1
                log.warning("refused a connection to %s: %s", self.path, reason)
                with contextlib.suppress(OSError):
                    conn.settimeout(1.0)
                    wire.send(conn, wire.error("BackendUnavailable", reason))
                conn.close()
                continue
            with self._lock:
                self._conns.add(conn)
            threading.Thread(
                target=self._serve, args=(conn,), name="dtq-store-conn", daemon=True
            ).start()

    def _refusal(self, conn: socket.socket) -> str | None:
        try:
            _pid, uid, _gid = _PEERCRED.unpack(
                conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
            )
        except OSError as exc:
            return f"cannot check the peer's credentials: {exc}"
        if uid != self._uid:
            return f"peer runs as uid {uid}, the store's owner as uid {self._uid}"
        if len(self._conns) >= self.max_connections:
            return f"too many connections (limit {self.max_connections})"
        return None

    def _serve(self, conn: socket.socket) -> None:
        try:
            with conn, conn.makefile("rb") as reader:
                try:
                    self._session(conn, reader)
                except ValueError as exc:  # an oversized frame: answered, then closed
                    wire.send(conn, wire.error("ConfigError", str(exc)))
        except (OSError, EOFError):
            return  # the peer vanished (or we are stopping): nothing to answer
        finally:
            with self._lock:
                self._conns.discard(conn)

    def _session(self, conn: socket.socket, reader: Any) -> None:
        conn.settimeout(10.0)  # the hello comes at once
        first = wire.recv(reader, 4096)
        if first is None:
            return
        try:
            hello = wire.decode_hello(first)
        except msgspec.DecodeError:
            wire.send(conn, wire.error("ConfigError", "not a DTQ client (bad hello)"))
            return
        if hello.v != wire.VERSION or hello.role not in ("backend", "console"):
            wire.send(
                conn,
                wire.error(
                    "ConfigError",
                    f"protocol {hello.v}/{hello.role} not served here (this owner speaks "
                    f"{wire.VERSION}/backend|console): upgrade dtq on both sides",
                ),
            )
            return
        if hello.role == "console" and self.console is None:
            wire.send(conn, wire.error("BackendUnavailable", "no console served here"))
            return
        wire.send(conn, wire.ok({"v": wire.VERSION, "pid": os.getpid()}))
        conn.settimeout(None)
        methods = wire.backend_methods() if hello.role == "backend" else wire.console_methods()
        while not self._stop.is_set():
            frame = wire.recv(reader)
            if frame is None:
                return
            wire.send(conn, self._handle(frame, methods, hello.role, hello.read_only))

    def _handle(
        self, frame: bytes, methods: dict[str, wire.Method], role: str, read_only: bool
    ) -> bytes:
        name = "?"
        try:
            name, raw = wire.decode_request(frame)
            method = methods.get(name)
            if method is None:
                raise errors.ConfigError(f"unknown {role} method {name!r}")
            try:
                args, kwargs = method.unpack(raw)
            except msgspec.ValidationError as exc:
                raise errors.ConfigError(f"bad arguments for {name}: {exc}") from None
            if read_only and (
                name not in wire.BACKEND_READS
                if role == "backend"
                else changes_state(name, dict(zip(method.params, args, strict=False)) | kwargs)
            ):
                raise errors.ReadOnlyError(f"{name} changes state: this session is read-only")
            if role == "backend":
                return wire.ok(self._backend_call(name, args, kwargs))
            assert self.console is not None
            return wire.ok(getattr(self.console, name)(*args, **kwargs))
        except errors.DTQError as exc:
            return wire.error(type(exc).__name__, str(exc))
        except TimeoutError as exc:
            return wire.error("TimeoutError", str(exc))
        except msgspec.DecodeError as exc:
            return wire.error("ConfigError", f"malformed request: {exc}")
        except Exception as exc:
            # The method only: the request's bytes may hold a task's secret arguments.
            log.exception("a %s request %r from a peer failed", role, name)
            return wire.error("BackendError", f"the owner failed: {type(exc).__name__}: {exc}")

    def _backend_call(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> Any:
        if name == "wait_final":
            return self._wait_final(*args)
        result = getattr(self.backend, name)(*args, **kwargs)
        broker = None if self.console is None else self.console.broker
        if broker is None or not result:
            return result
        if name in _TRANSITIONS:
            broker.emit(result)
        elif name == "ack_many":
            for trs in result:
                broker.emit(trs)
        elif name == "claim":
            worker = args[1] if len(args) > 1 else kwargs.get("worker_id", "")
            started = broker.emit_started
            d: Delivery
            for d in result:
                started(d, worker)
        if name in _DELAYS:
            due = _due(name, args, kwargs)
            if due is not None:
                broker.wake_scheduler(due)
        return result

    def _wait_final(self, task_id: str, timeout: float) -> bool:
        """Block until the task is final, woken by the owner's own events."""
        if self.console is None:
            return False
        with contextlib.suppress(TimeoutError, errors.TaskNotFound):
            self.console.broker.wait_outcome(task_id, max(0.0, min(timeout, MAX_WAIT_S)))
        return True


def _due(name: str, args: list[Any], kwargs: dict[str, Any]) -> float | None:
    """When a delayed task this call stored is due (read from its arguments), if any.

    The owner's scheduler must look by then; reading it here costs nothing, where
    asking the store (``next_due``) would take its lock on every remote enqueue.
    """
    if name == "enqueue":
        return args[0].eta  # type: ignore[no-any-return]
    if name == "enqueue_many":
        return min((t.eta for t in args[0] if t.eta is not None), default=None)
    if name == "replay":
        return args[1].eta  # type: ignore[no-any-return]
    if name == "fail":
        return kwargs.get("retry_at")
    if name == "release":
        return args[3] if len(args) > 3 else None
    return None
