"""The app module of the fault suite's ``dtq worker`` subprocesses.

Every task appends a ``start`` line before its work and an ``end`` line after it to an
append-only journal file (one ``os.write`` of under 4 KiB per line on an ``O_APPEND``
descriptor, so lines from many processes never interleave), so the checker counts runs
and sees overlaps from outside the system. Settings come from the environment:

- ``DTQ_FAULT_JOURNAL``: the journal file.
- ``DTQ_TEST_CONFIG``: JSON object of :class:`~dtq_core.config.BrokerConfig` fields
  applied under ``dtq worker``'s own options (leases, heartbeats, delivery limits).
- ``DTQ_FAULT_ARM``: a path; once a file exists there, the fault named by
  ``DTQ_FAULT_KIND`` is injected into this process's write path: ``enospc`` (every
  write of the embedded log raises ``OSError(ENOSPC)``), ``fsync`` (every fsync
  raises ``OSError(EIO)``) or ``claim-reply`` (the owner of an embedded store SIGKILLs
  itself once it has logged a claim that leased tasks, before its reply leaves).
"""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from typing import Any

import dtq_core
from dtq_core import task
from dtq_core.config import BrokerConfig

OVERRIDES: dict[str, Any] = json.loads(os.environ.get("DTQ_TEST_CONFIG") or "{}")

if OVERRIDES:

    def _config(**options: Any) -> BrokerConfig:
        return BrokerConfig(**{**OVERRIDES, **options})

    dtq_core.BrokerConfig = _config  # type: ignore[misc,assignment]


def _armed() -> bool:
    arm = os.environ.get("DTQ_FAULT_ARM")
    return bool(arm) and os.path.exists(arm)  # type: ignore[arg-type]


def _inject() -> None:
    """Wrap the log's write and fsync so that they fail once the fault is armed."""
    kind = os.environ.get("DTQ_FAULT_KIND")
    if kind == "enospc":
        from dtq_core.backends.embedded import write_path

        real_write = write_path.write_all

        def write_all(fd: int, data: bytes | bytearray) -> None:
            if _armed():
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_write(fd, data)

        write_path.write_all = write_all  # type: ignore[assignment]
    elif kind == "fsync":
        from dtq_core.backends.embedded.write_path import WritePath

        real_fsync = WritePath._fsync

        def fsync(self: WritePath, fd: int) -> None:
            if _armed():
                raise OSError(errno.EIO, "injected fsync failure")
            real_fsync(self, fd)

        WritePath._fsync = fsync  # type: ignore[method-assign]
    elif kind == "claim-reply":
        from dtq_core.backends.embedded.server import StoreServer

        served = StoreServer._backend_call

        def then_die(self: StoreServer, name: str, args: Any, kwargs: Any) -> Any:
            out = served(self, name, args, kwargs)
            if name == "claim" and out and _armed():
                os.kill(os.getpid(), signal.SIGKILL)  # the claim is logged, its reply lost
            return out

        StoreServer._backend_call = then_die  # type: ignore[method-assign]


_inject()


def journal(kind: str, i: Any, **extra: Any) -> None:
    """Append one line (``kind``, task argument ``i``, pid, wall time) to the journal."""
    row = {"k": kind, "i": i, "pid": os.getpid(), "t": time.time(), **extra}
    line = (json.dumps(row) + "\n").encode()
    fd = os.open(os.environ["DTQ_FAULT_JOURNAL"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


@task(name="fa.rec")
def rec(i: int, sleep: float = 0.0) -> int:
    """Journal a start, sleep ``sleep`` seconds, journal the end; return ``i``."""
    journal("start", i)
    if sleep:
        time.sleep(sleep)
    journal("end", i)
    return i


@task(name="fa.poison")
def poison(i: int) -> None:
    """Journal a start, then kill this whole worker process (every thread of it)."""
    journal("start", i, poison=True)
    os._exit(17)


async def _arec(i: int, sleep: float) -> int:
    import asyncio

    journal("start", i)
    await asyncio.sleep(sleep)
    journal("end", i)
    return i


@task(name="fa.arec")
async def arec(i: int, sleep: float = 0.0) -> int:
    """``rec`` as a coroutine (the async pool)."""
    return await _arec(i, sleep)


#: Task names this module registers (producers in the test process do not import it).
NAMES = ("fa.arec", "fa.poison", "fa.rec")
