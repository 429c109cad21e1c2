"""A connection kept aside for one command at a time: the single enqueue's short way.

redis-py's ``execute_command`` costs about 15 µs of Python per call before the socket
(a connection taken from the pool and given back, retry and observability wrappers,
each argument encoded in Python): as much as the rest of an ``apply_async``. A lane
holds a connection of its own, made and set up by the client's pool (same options:
password, database, TLS), and sends a command packed in C by hiredis straight on its
socket, then reads the reply with a hiredis reader of its own: redis-py's reading
layers cost about as much again (the send is the connection's own method). The pool's
connections stay for everything else.

One thread uses the lane at a time; a caller that finds it busy is told so
(:data:`BUSY`) and takes the usual way, so concurrent producers never wait on each
other. Errors are redis-py's own (a reply that is an error, ``ConnectionError``,
``TimeoutError``), so the backend's retry loop treats both ways alike: a connection
error closes the connection and the next call connects again. A forked child takes a
connection of its own.

The lane's socket is blocking, its timeout kept by the kernel (``SO_RCVTIMEO`` and
``SO_SNDTIMEO``) rather than by Python: a socket with a Python timeout polls before
each send and each receive, two more system calls per command, and a system call on
this kind of virtual machine costs as much as the enqueue's Python. RESP3 pushes (server
notices) are passed over. Without hiredis, or on a TLS connection, the lane sends and
reads through the connection's own methods instead.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import sys
import threading
import weakref
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse
from redis.exceptions import TimeoutError as RedisTimeoutError

_hiredis_pack: Any
_Reader: Any
_Push: Any
try:
    from hiredis import Reader as _Reader
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is in the redis extra
    _hiredis_pack = _Reader = None
try:
    from hiredis import PushNotification as _Push
except ImportError:  # pragma: no cover - hiredis < 3.2: the lane reads RESP2 alone
    _Push = None

__all__ = ["BUSY", "Lane", "pack"]

#: Returned by :meth:`Lane.call` when another thread is using the lane.
BUSY: Any = object()

#: Every lane of this process, reset in a forked child (see :func:`_after_fork`).
_LANES: weakref.WeakSet[Lane] = weakref.WeakSet()


def pack(conn: Any, args: tuple[Any, ...]) -> list[bytes]:
    """One command in Redis's protocol, as ``send_packed_command`` takes it (chunks).

    ``str`` arguments in UTF-8, as redis-py's encoder does. hiredis packs it in C;
    without hiredis, the connection's packer does.
    """
    if _hiredis_pack is not None:
        return [_hiredis_pack(args)]
    return conn.pack_command(*args)  # type: ignore[no-any-return]


class Lane:
    """A connection made by ``client``'s pool, for one command at a time.

    Args:
        client: A redis-py ``Redis`` (one server, not a cluster).
    """

    def __init__(self, client: Any) -> None:
        self._pool = client.connection_pool
        self._lock = threading.Lock()
        self._conn: Any = None
        #: The connection's socket as this lane set it up (``None``: not connected).
        self._sock: Any = None
        #: This lane's reply reader (``None``: the connection's methods are used).
        self._reader: Any = None
        self._buf = bytearray(65536)
        _LANES.add(self)

    def call(self, args: tuple[Any, ...]) -> Any:
        """Send command ``args`` and return its reply, or :data:`BUSY`.

        Raises:
            redis.exceptions.RedisError: As ``execute_command`` would (a reply that is
                an error, a lost connection, a timeout).
        """
        if not self._lock.acquire(blocking=False):
            return BUSY
        try:
            conn = self._conn
            if conn is None:
                conn = self._conn = self._pool.make_connection()
            sock = self._sock
            if sock is not None and conn._sock is sock:
                # redis-py's periodic PING (health_check_interval), done here: the send
                # below skips it, since the reply must be read from the socket the
                # command went on. A connection that died idle is made again.
                try:
                    conn.check_health()
                except (RedisConnectionError, RedisTimeoutError):
                    self._disconnect()
                    sock = None
            if sock is None or conn._sock is not sock:
                sock = self._connect(conn)
            reader = self._reader
            try:
                # Sent by the connection (one cheap method, which tools that count round
                # trips wrap); the reply read here when the lane has its own reader.
                conn.send_packed_command(pack(conn, args), check_health=False)
                if reader is None:
                    return conn.read_response()
            except RedisConnectionError as exc:
                if isinstance(exc.__context__, BlockingIOError):
                    # The kernel's timeout ran out (EAGAIN on a blocking socket): redis-py
                    # disconnected and calls it an error; it is the timeout it would
                    # have raised with a Python timeout.
                    raise RedisTimeoutError(
                        f"Timeout {'reading from' if 'read' in str(exc) else 'writing to'} socket"
                    ) from None
                raise
            try:
                buf = self._buf
                while True:
                    n = sock.recv_into(buf)
                    if not n:
                        raise RedisConnectionError("Connection closed by server.")
                    reader.feed(buf, 0, n)
                    reply = reader.gets()
                    # A RESP3 push (a server notice, not a reply) is passed over.
                    while _Push is not None and isinstance(reply, _Push):
                        reply = reader.gets()
                    if reply is not False:
                        break
            except BaseException as exc:
                # A reply cut anywhere leaves this connection out of step: the next call
                # makes another.
                self._disconnect()
                if isinstance(exc, (socket.timeout, BlockingIOError)):
                    # BlockingIOError: the kernel's timeout ran out (EAGAIN).
                    raise RedisTimeoutError("Timeout reading from socket") from None
                if isinstance(exc, OSError):
                    raise RedisConnectionError(f"Error while reading from socket: {exc}") from None
                raise
            if isinstance(reply, Exception):
                # As redis-py's reading does: a reply that is a ConnectionError (LOADING,
                # an authentication error) ends the connection; another error reply
                # leaves it usable. Either is raised, never returned.
                if isinstance(reply, RedisConnectionError):
                    self._disconnect()
                raise reply
            return reply
        finally:
            self._lock.release()

    def _connect(self, conn: Any) -> Any:
        """Connect ``conn`` (redis-py sets it up) and make its socket this lane's."""
        if conn._sock is None:
            conn.connect()
        sock = self._sock = conn._sock
        self._reader = None
        resp = str(getattr(conn, "protocol", 2) or 2)
        if (
            _Reader is not None
            and _hiredis_pack is not None
            and not isinstance(sock, ssl.SSLSocket)
            and (resp == "2" or (resp == "3" and _Push is not None))
        ):
            if sys.platform != "win32":  # (Windows takes its timeouts in another form)
                _kernel_timeouts(sock, conn.socket_timeout)
            enc = conn.encoder
            opts: dict[str, Any] = {
                "protocolError": InvalidResponse,
                "replyError": conn._parser.parse_error,
                "errors": enc.encoding_errors,
            }
            if enc.decode_responses:
                opts["encoding"] = enc.encoding
            self._reader = _Reader(**opts)
        return sock

    def _disconnect(self) -> None:
        conn, self._sock, self._reader = self._conn, None, None
        if conn is not None:
            conn.disconnect()

    def close(self) -> None:
        """Close the lane's connection (a later call connects again)."""
        with self._lock:
            self._disconnect()
            self._conn = None

    def _forked(self) -> None:
        # The child leaves the parent's socket alone (it makes its own on its first
        # call) and takes a new lock: another thread may have held this one at the fork.
        self._conn = self._sock = self._reader = None
        self._lock = threading.Lock()


def _kernel_timeouts(sock: socket.socket, timeout: float | None) -> None:
    """Make ``sock`` blocking, with ``timeout`` (seconds; None: none) kept by the kernel."""
    sock.settimeout(None)
    if timeout:
        whole = int(timeout)
        tv = struct.pack("ll", whole, int((timeout - whole) * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def _after_fork() -> None:
    for lane in list(_LANES):
        lane._forked()


os.register_at_fork(after_in_child=_after_fork)
