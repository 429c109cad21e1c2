"""Whether the process holding a lease still runs, judged from its worker id.

Worker ids start with ``host:pid`` (:func:`dtq_core.workers.base.worker_prefix`). When a
new owner recovers the store, a lease whose process is gone is requeued at once; a lease
of a live process is kept: that is an attached worker whose owner died while it ran or
held the task prefetched, and it settles the task with the new owner.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


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
