"""Who holds the store: the process with the directory's lock, and those with leases.

Worker ids start with ``host:pid`` (:func:`dtq_core.workers.base.worker_prefix`). When a
new owner recovers the store, a lease whose process is gone is requeued at once; a lease
of a live process is kept: that is an attached worker whose owner died while it ran or
held the task prefetched, and it settles the task with the new owner. The workers of
the process that took over are known better: their leases are kept only if they
received them (:mod:`.deliveries`).
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from pathlib import Path

from dtq_core.backends.embedded.deliveries import Received
from dtq_core.task import TaskRecord


def keep_lease(rec: TaskRecord, *, this_process: bool, received: Received | None) -> bool:
    """Whether recovery keeps a lease: its holder runs, and has the task.

    Args:
        rec: The RUNNING task's record (its worker and lease token).
        this_process: What to answer for this process's leases that ``received`` does
            not know: true when it took the store over while its workers kept running.
        received: What the workers of this process that claimed through the old owner's
            socket received (a takeover); a lease of theirs that they did not receive
            had its claim's reply lost with the old owner, and nobody runs it.
    """
    if received is not None and received.knows(rec):
        return received.holds(rec)
    return lease_holder_alive(rec.worker, this_process=this_process)


def lease_holder_alive(worker: str | None, *, this_process: bool) -> bool:
    """Whether the process named by ``worker`` (``host:pid[:...]``) is running here.

    Args:
        worker: The worker id recorded with the lease; anything else (an id that does
            not name a process of this host) counts as gone.
        this_process: What to answer for this process's own leases: true when it took
            the store over from a dead owner while its own workers kept running.
    """
    if not worker:
        return False
    host, _, rest = worker.partition(":")
    pid_text = rest.split(":", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return this_process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive, though not ours
        return True
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A killed child its parent has not reaped yet still answers ``kill(pid, 0)``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state follows the parenthesised command name, which may itself hold spaces.
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def lock_holder(path: Path) -> int | None:
    """The pid holding the directory's lock, or ``None`` when it is free."""
    try:
        fd = os.open(path / "LOCK", os.O_RDONLY)
    except OSError:
        return None
    try:
        # F_GETLK-style test without taking the lock: lockf(F_TEST) needs write access,
        # so ask the kernel through fcntl's struct flock instead.
        probe = struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0)
        got = fcntl.fcntl(fd, fcntl.F_GETLK, probe)
        kind, _, _, _, pid = struct.unpack("hhqqi", got)
        return None if kind == fcntl.F_UNLCK else pid
    except OSError:
        return None
    finally:
        os.close(fd)
