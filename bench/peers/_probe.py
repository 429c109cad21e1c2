"""Measurement shared by every worker app and the bench: round trips and task starts.

Round trips are counted client-side: redis-py's sync and asyncio ``send_packed_command``
are wrapped, and one call is one request written to the socket (a pipeline packs all its
commands into one call), so one call is one round trip. The counter lives in an anonymous
shared memory page, so processes forked after :func:`install` (RQ's work horses, Celery
children) add to the same count.

Each task calls :func:`record` at its start: it appends ``(i, wall time, round trips so
far)`` as 24 bytes to the file named by ``BENCH_OUT`` (``O_APPEND``: whole records).
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import time

REC = struct.Struct("<qdq")
_page = mmap.mmap(-1, 8)
_lock = threading.Lock()
_fd: int | None = None
_installed = False


def count() -> int:
    """Round trips counted so far (this process and its forks)."""
    return int(struct.unpack_from("<q", _page, 0)[0])


def _bump() -> None:
    with _lock:
        struct.pack_into("<q", _page, 0, struct.unpack_from("<q", _page, 0)[0] + 1)


def install() -> None:
    """Wrap redis-py's connections (sync and asyncio) to count round trips."""
    global _installed
    if _installed:
        return
    _installed = True
    import redis.connection as sync_conn

    base = getattr(sync_conn, "AbstractConnection", sync_conn.Connection)
    orig = base.send_packed_command

    def send_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        _bump()
        return orig(self, command, check_health)

    base.send_packed_command = send_packed_command  # type: ignore[method-assign]
    try:
        import redis.asyncio.connection as async_conn
    except ImportError:
        return
    abase = getattr(async_conn, "AbstractConnection", async_conn.Connection)
    aorig = abase.send_packed_command

    async def asend_packed_command(self, command, check_health=True):  # type: ignore[no-untyped-def]
        _bump()
        return await aorig(self, command, check_health)

    abase.send_packed_command = asend_packed_command  # type: ignore[method-assign]


def record(i: int) -> None:
    """Note that task ``i`` starts now."""
    global _fd
    if _fd is None:
        _fd = os.open(os.environ["BENCH_OUT"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(_fd, REC.pack(i, time.time(), count()))


def read(path: str) -> list[tuple[int, float, int]]:
    """Every record in the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return []
    n = len(raw) // REC.size
    return [REC.unpack_from(raw, k * REC.size) for k in range(n)]


def url() -> str:
    """The Redis URL every app uses."""
    return os.environ["BENCH_REDIS_URL"]


def concurrency() -> int:
    """Tasks run at once by one worker process."""
    return int(os.environ.get("BENCH_CONCURRENCY", "8"))
