"""A client of the owner's socket: pooled connections, one call at a time on each.

Used by :class:`~dtq_core.backends.embedded.store.EmbeddedStore` in attached processes
(role ``backend``) and by :class:`~dtq_core.rpc.RemoteConsole` (role ``console``).
A thread takes an idle connection for its call, or opens one: a worker blocked in a
claim holds only its own connection.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path
from typing import Any

from dtq_core import errors
from dtq_core.backends.embedded import wire

#: Seconds a call may take before the owner is taken for gone (a claim's or a result
#: wait's own time is added).
CALL_TIMEOUT = 30.0


class OwnerGone(errors.BackendUnavailable):
    """The owner did not answer; ``sent``: the request may have reached it."""

    def __init__(self, message: str, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


def raise_remote(kind: str, message: str) -> None:
    """Raise the error an owner reported, as the same :mod:`dtq_core.errors` type."""
    exc_type: Any = getattr(errors, kind, None)
    if kind == "TimeoutError":
        exc_type = TimeoutError
    if not (isinstance(exc_type, type) and issubclass(exc_type, Exception)):
        exc_type = errors.DTQError
    try:
        exc = exc_type(message)
    except TypeError:  # an error type whose constructor takes other arguments
        exc = errors.DTQError(message)
    raise exc


class Connection:
    """One connection to the owner, after a successful hello."""

    def __init__(self, path: Path, role: str, read_only: bool, timeout: float) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError as exc:
            sock.close()
            raise OwnerGone(
                f"no owner answers on {path}: {exc.strerror or exc}", sent=False
            ) from None
        self.sock = sock
        self.reader = sock.makefile("rb")
        self.timeout = timeout
        try:
            wire.send(sock, wire.hello(role, read_only, os.getpid()))
            frame = wire.recv(self.reader, 4096)
        except (OSError, EOFError, ValueError) as exc:
            self.close()
            raise OwnerGone(f"the owner at {path} dropped the connection: {exc}", False) from None
        if frame is None:
            self.close()
            raise OwnerGone(f"the owner at {path} closed the connection", sent=False)
        status, raw, message = wire.decode_reply(frame)
        if status != 0:
            self.close()
            raise_remote(wire.decode_str(raw), message)

    def call(self, method: wire.Method, packed: list[Any], timeout: float) -> Any:
        """Send one request and decode its reply."""
        try:
            body = wire.encode((method.name, packed))
        except (TypeError, OverflowError) as exc:
            raise errors.SerializationError(f"{method.name}: cannot send {exc}") from None
        try:
            wire.send(self.sock, body)
        except ValueError as exc:
            raise errors.SerializationError(f"{method.name}: {exc}") from None
        except OSError as exc:
            raise OwnerGone(f"the owner stopped answering: {exc}", sent=False) from None
        try:
            if timeout != self.timeout:
                self.sock.settimeout(timeout)
                self.timeout = timeout
            frame = wire.recv(self.reader)
        except (OSError, EOFError, ValueError) as exc:
            raise OwnerGone(
                f"the owner did not answer {method.name} ({exc}); it may or may not have run",
                sent=True,
            ) from None
        if frame is None:
            raise OwnerGone(
                f"the owner closed the connection during {method.name}; it may or may not have run",
                sent=True,
            )
        status, raw, message = wire.decode_reply(frame)
        if status != 0:
            raise_remote(wire.decode_str(raw), message)
        return method.result.decode(raw)

    def close(self) -> None:
        """Close the socket."""
        with contextlib.suppress(OSError):
            self.reader.close()
        with contextlib.suppress(OSError):
            self.sock.close()


class Client:
    """Pooled connections to an owner's socket for one role.

    Args:
        path: The socket file.
        role: ``backend`` or ``console``.
        read_only: Ask the owner to refuse every change.
        connect_timeout: Seconds a connect and hello may take.
    """

    def __init__(
        self, path: Path, role: str, read_only: bool = False, connect_timeout: float = 5.0
    ) -> None:
        self.path = path
        self.role = role
        self.read_only = read_only
        self.connect_timeout = connect_timeout
        self.methods = wire.backend_methods() if role == "backend" else wire.console_methods()
        self._idle: list[Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def check(self) -> None:
        """Open one connection now (raises :class:`OwnerGone` when nobody answers)."""
        self._give(self._take())

    def call(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], wait: float = 0.0
    ) -> Any:
        """Call ``name`` on the owner; ``wait``: seconds the owner may block on purpose."""
        method = self.methods[name]
        packed = method.pack(args, kwargs)
        conn = self._take()
        try:
            result = conn.call(method, packed, CALL_TIMEOUT + wait)
        except OwnerGone:
            conn.close()
            raise
        except BaseException:
            self._give(conn)  # the owner answered with an error: the connection is fine
            raise
        self._give(conn)
        return result

    def _take(self) -> Connection:
        with self._lock:
            if self._closed:
                raise OwnerGone(f"connection to {self.path} closed", sent=False)
            if self._idle:
                return self._idle.pop()
        return Connection(self.path, self.role, self.read_only, self.connect_timeout)

    def _give(self, conn: Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < 64:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close every idle connection; calls in flight end with their connection."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
