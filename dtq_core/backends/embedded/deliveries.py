"""What an attached process's workers received, so that a lost claim reply costs no lease.

The owner logs a claim before it replies. When it dies between the two, the lease is in
the log, held by a worker that never got the task. A new owner keeps the leases of live
processes (their workers run those tasks and settle them with it), so such a lease would
wait out its whole length before anyone ran the task: late, though not lost.

So an attached :class:`~dtq_core.backends.embedded.store.EmbeddedStore` records here
the ids of the workers that claim through it and every delivery (task id, lease token)
they received. When the owner dies:

- if this process takes the store over, its recovery keeps a lease of one of those
  workers only if it was received (:class:`Received`), and requeues the others at once;
- if it reattaches (to another process that took over, or to the same owner after a
  lost connection), it tells that owner what its workers received
  (:meth:`Deliveries.tell`), and the owner requeues their other leases at once
  (``reclaim_unreceived``).

Either way the requeue counts a delivery, as any reclaim does. The store records a
claim's reply under the lock its switch of owner takes: a reply read while the switch
runs is recorded before it (and its leases kept), or refused after it (its leases
requeued by the new owner, or given back) and the worker claims again.

Worker ids name a process, not a broker: two brokers of one process have workers of the
same ids (``host:pid:t0``). A worker id that another store of this process on the same
directory claimed with is left out (its leases are kept as a live holder's, as before),
and an owner ignores what a store of its own process tells it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from dtq_core.backends.base import Delivery
from dtq_core.backends.embedded.client import Client, OwnerGone
from dtq_core.errors import DTQError
from dtq_core.task import TaskRecord

log = logging.getLogger("dtq.embedded")

#: Protocol methods that end the lease of one delivery, named by their first two arguments.
_SETTLES = frozenset({"ack", "fail", "bury", "release"})


@dataclass(frozen=True, slots=True)
class Received:
    """The workers of one process that claimed through its socket, and what they got."""

    workers: frozenset[str]
    #: ``(task id, lease token)`` of every delivery those workers received.
    leases: frozenset[tuple[str, int]]

    def knows(self, rec: TaskRecord) -> bool:
        """Whether the lease's worker is one of these (its deliveries are all known)."""
        return rec.worker in self.workers

    def holds(self, rec: TaskRecord) -> bool:
        """Whether the lease was received by its worker (under this very token)."""
        return (rec.id, rec.lease_token) in self.leases

    def lost(self, rec: TaskRecord) -> bool:
        """A lease of one of these workers that no worker received: its reply was lost."""
        return self.knows(rec) and not self.holds(rec)


class Deliveries:
    """The leases the workers of one attached store received and have not settled yet.

    Args:
        key: The store's directory (resolved): the trackers of one key in one process
            belong to stores whose worker ids may be the same.
    """

    #: Every tracker of this process.
    _every: ClassVar[weakref.WeakSet[Deliveries]] = weakref.WeakSet()

    def __init__(self, key: str) -> None:
        self.key = key
        self._lock = threading.Lock()
        self._workers: set[str] = set()
        self._leases: set[tuple[str, int]] = set()
        Deliveries._every.add(self)

    def claiming(self, worker_id: str) -> None:
        """``worker_id`` is about to claim (noted first: a claim lost in flight counts)."""
        with self._lock:
            self._workers.add(worker_id)

    def add(self, batch: Iterable[Delivery]) -> None:
        """Deliveries a claim's reply brought (the store checked no switch came between)."""
        with self._lock:
            self._leases.update((d.task_id, d.token) for d in batch)

    def settled(self, name: str, args: Sequence[Any]) -> None:
        """A call ``name(*args)`` returned: the leases it settled are no longer held.

        Only once it returned: a settling call that dies with the owner is retried with
        the next one, whose recovery must keep the lease meanwhile.
        """
        if name == "ack_many":
            done = [(a[0], a[1]) for a in args[0]]
        elif name in _SETTLES:
            done = [(args[0], args[1])]
        else:
            return
        with self._lock:
            self._leases.difference_update(done)

    def snapshot(self) -> Received:
        """What recovery, or a new owner, needs to tell a lost reply from a held lease.

        Without the workers that another store of this process on the same directory
        claimed with: their leases may be that store's (the same id), received or not.
        """
        with self._lock:
            workers, leases = set(self._workers), frozenset(self._leases)
        for other in list(Deliveries._every):
            if other is not self and other.key == self.key:
                with other._lock:
                    workers -= other._workers
        return Received(frozenset(workers), leases)

    def clear(self) -> None:
        """Forget everything (the store is owned here, or closed)."""
        with self._lock:
            self._workers.clear()
            self._leases.clear()

    def tell(self, client: Client, now: float, path: Path) -> None:
        """Tell a new owner what this process's workers hold; it requeues their other leases.

        Only the workers named ``host:pid:...`` after this process: a worker id of
        another form (``inline``) may be another process's too, whose leases are not
        this process's to give up.

        Raises:
            OwnerGone: The new owner stopped answering too.
        """
        got = self.snapshot()
        mine = f"{socket.gethostname()}:{os.getpid()}:"
        workers = sorted(w for w in got.workers if w.startswith(mine))
        if not workers:
            return
        try:
            lost = client.call("reclaim_unreceived", (workers, sorted(got.leases), now), {})
        except OwnerGone:
            raise
        except DTQError as exc:  # an owner of an older version: they wait out their leases
            log.warning("embedded store %s: the new owner kept our lost claims: %s", path, exc)
            return
        if lost:
            log.warning(
                "embedded store %s: %d claims whose reply was lost requeued by the owner",
                path,
                len(lost),
            )


__all__ = ["Deliveries", "Received"]
