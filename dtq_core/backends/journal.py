"""What a local backend does with each change once applied: nothing, or log it.

:class:`~dtq_core.backends.local.LocalBackend` hands every change record to a
:class:`Journal` through its :class:`WritePath`: ``memory://`` uses :class:`NoJournal`,
the embedded store its write-ahead log
(:class:`~dtq_core.backends.embedded.journal.WalJournal`).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from dtq_core.backends.base import NewTask
from dtq_core.backends.changes import Change, TaskSpec
from dtq_core.backends.memory_state import StateMachine
from dtq_core.gil_locks import Held, take


class Journal(Protocol):
    """Where a backend's changes go once applied (the embedded store's log)."""

    @property
    def failed(self) -> bool:
        """Whether the journal failed stop (changes are refused from then on)."""

    def check(self) -> None:
        """Raise :class:`~dtq_core.errors.StoreFailed` once the journal failed."""

    def encode(self, change: Change) -> bytes:
        """The record's bytes; raises :class:`~dtq_core.errors.SerializationError`."""

    def submit(self, raw: bytes) -> int:
        """Append an encoded record (lock held); its position, or 0 if not kept."""

    def wait(self, lsn: int) -> None:
        """Return once ``lsn`` is durable (lock not held)."""

    def wait_written(self, lsn: int) -> None:
        """Return once ``lsn`` is written to the OS (lock not held)."""


class NoJournal:
    """The journal of ``memory://``: changes are applied and forgotten."""

    failed = False

    def check(self) -> None:
        """Never failed."""

    def encode(self, change: Change) -> bytes:
        """Nothing to encode."""
        return b""

    def submit(self, raw: bytes) -> int:
        """Nothing kept."""
        return 0

    def wait(self, lsn: int) -> None:
        """Nothing to wait for."""

    def wait_written(self, lsn: int) -> None:
        """Nothing to wait for."""


def spec_of(t: NewTask) -> TaskSpec:
    """A new task as its change record holds it.

    The payload is copied: the store keeps it as long as the task, and the encoder that
    made it (msgspec's) leaves spare capacity in the bytes object, about a third of a
    small payload's size, which a copy of exactly its length drops.
    """
    return TaskSpec(
        t.id,
        t.name,
        t.queue,
        t.priority,
        bytes(memoryview(t.payload)),
        t.eta,
        t.max_retries,
        t.time_limit,
        t.dedup_key,
        t.replayed_from,
        t.workflow,
    )


class WritePath:
    """The state machine, the lock and condition it is changed under, and its journal.

    Every change of a local backend goes through :meth:`change` (or
    :meth:`change_locked`): encoded, applied and submitted under the one lock, so the
    journal's order is the state's order; the wait for durability happens outside it.

    Args:
        journal: Where applied changes go.
    """

    def __init__(self, journal: Journal) -> None:
        self.lock = threading.Lock()
        #: The lock for the hot paths (enqueue, claim, ack): see :mod:`dtq_core.gil_locks`.
        self.held = Held(self.lock)
        # Claimers blocked in sleep() that nobody woke yet, each on a lock of its own
        # (a Condition's waiters, kept here so that an enqueue with nobody to wake costs
        # one test, and one with a sleeper wakes it once: Condition.notify is Python code
        # run for every enqueue until the woken claimer gets the lock).
        self._sleepers: deque[Any] = deque()
        self.state = StateMachine(self.wake)
        self.journal = journal
        # memory://: nothing to encode, log or wait for (an enqueue is on every task's path).
        self._plain = isinstance(journal, NoJournal)

    def sleep(self, timeout: float) -> None:
        """Wait (the lock held) until :meth:`wake` or ``timeout``; the lock is held again after."""
        waiter = threading.Lock()
        waiter.acquire()
        self._sleepers.append(waiter)
        self.lock.release()
        woken = False
        try:
            woken = waiter.acquire(True, timeout)
        finally:
            self.lock.acquire()
            if not woken:  # timed out (or interrupted): still listed, unless woken since
                with contextlib.suppress(ValueError):
                    self._sleepers.remove(waiter)

    def wake(self, everyone: bool) -> None:
        """A task became ready (or a queue resumed): wake one sleeping claimer, or all.

        Called with the lock held.
        """
        sleepers = self._sleepers
        if sleepers:
            if everyone:
                while sleepers:
                    sleepers.popleft().release()
            else:
                sleepers.popleft().release()

    def change(
        self,
        change: Change,
        *,
        wait: bool = True,
        precondition: Callable[[], bool] | None = None,
    ) -> Any:
        """Encode, apply and submit ``change``; wait for durability unless told not to.

        The record is encoded before anything changes, so a record the journal refuses
        refuses the change. A change whose result is falsy changed nothing and is not
        logged. ``precondition`` is asked under the lock: false, nothing is changed and
        the result is ``[]`` (a compare-and-set; not logged: it changed nothing).
        """
        if self._plain and precondition is None:
            lock = self.lock  # (not ``with self.held``: this is every enqueue)
            if not lock.acquire(False):
                take(lock)
            try:
                return self.state.apply(change)
            finally:
                lock.release()
        j = self.journal
        raw = j.encode(change)
        j.check()
        with self.lock:
            j.check()  # again under the lock: no change after a failure
            if precondition is not None and not precondition():
                return []
            out = self.state.apply(change)
            lsn = j.submit(raw) if out else 0
        if wait:
            j.wait(lsn)
        return out

    def change_locked(self, change: Change, *, always: bool = False) -> tuple[Any, int]:
        """Apply and submit ``change`` with the lock held (no wait): result and lsn.

        ``always``: log it even if its result is falsy (a promotion of PENDING tasks
        moves them without a state transition to report).
        """
        j = self.journal
        raw = j.encode(change)
        out = self.state.apply(change)
        return out, (j.submit(raw) if out or always else 0)
