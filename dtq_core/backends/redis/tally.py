"""Single enqueues counted in the producer, added to Redis's counters in batches.

Every enqueue counts itself under ``enqueued`` in its second's hash and in the totals
(``tick`` in the scripts): two commands, an eighth of the single enqueue's script. A
single enqueue (``ENQUEUE_ONE``) leaves them to its producer instead: the process counts
its enqueues per queue and second, and a thread of its own adds them to the same hashes
half a second after the first one, in one pipeline. Readers in other processes see
them up to that late (in the right second); a reader in this process is given them
first (a flush under way is waited for). A process that exits adds what it counted (an
``atexit`` flush); one that is killed loses at most that half second of counts, never a
task. A flush that cannot reach Redis is kept and tried again (a reply lost after the
counts were added may count them twice: these are rates, not records).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

__all__ = ["FLUSH_AFTER_S", "Tally"]

log = logging.getLogger("dtq.redis")

#: Seconds from the first count of a batch to its flush.
FLUSH_AFTER_S = 0.5

#: Every tally of this process, reset in a forked child (see :func:`_after_fork`).
_TALLIES: weakref.WeakSet[Tally] = weakref.WeakSet()

Counts = dict[tuple[str, int], int]


class Tally:
    """Counts per ``(queue, second)`` not yet added to Redis.

    Args:
        flush: Adds a batch of counts to Redis (raises when it cannot).
        after_s: Seconds from the first count of a batch to its flush.
    """

    def __init__(self, flush: Callable[[Counts], None], after_s: float = FLUSH_AFTER_S) -> None:
        # A bound method is held weakly: the thread must not keep its backend (and the
        # backend's connections) alive; when the backend goes, the thread ends.
        owner = getattr(flush, "__self__", None)
        self._send_ref: Callable[[], Callable[[Counts], None] | None]
        if owner is not None:
            self._send_ref = weakref.WeakMethod(flush)
            weakref.finalize(owner, _stop_quietly, weakref.ref(self))
        else:
            self._send_ref = lambda: flush
        self._after_s = after_s
        self._lock = threading.Lock()
        #: Held across a flush's send, so that a reader's flush waits for one under way.
        self._sending = threading.Lock()
        self._counts: Counts = {}
        self._wake = threading.Event()
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None
        _TALLIES.add(self)

    def add(self, queue: str, second: int) -> None:
        """Count one enqueue to ``queue`` in ``second`` (flushed within ``after_s``)."""
        key = (queue, second)
        with self._lock:
            counts = self._counts
            first = not counts
            counts[key] = counts.get(key, 0) + 1
            if first:
                if self._thread is None:
                    self._start()
                self._wake.set()

    def flush(self) -> None:
        """Add what is counted to Redis now; kept for the next flush when it fails.

        Raises:
            Exception: What the flush raised.
        """
        with self._sending:
            with self._lock:
                counts, self._counts = self._counts, {}
            if not counts:
                return
            send = self._send_ref()
            if send is None:
                return  # the backend is gone, and its connections with it
            try:
                send(counts)
            except BaseException:
                with self._lock:
                    for key, n in counts.items():
                        self._counts[key] = self._counts.get(key, 0) + n
                    self._wake.set()
                raise

    def close(self) -> None:
        """Stop the thread and flush (a failure is logged: those counts are lost).

        A later :meth:`add` starts a thread again.
        """
        self._halt()
        try:
            self.flush()
        except Exception as exc:
            log.warning("enqueue counts not added to redis at close: %s", exc)

    def _start(self) -> None:
        stop = self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(stop,), name="dtq-redis-tally", daemon=True
        )
        self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        while True:
            self._wake.wait()
            if stop.is_set():
                return
            # Counts made from now on wait for this flush: the next batch sets it again.
            self._wake.clear()
            if stop.wait(self._after_s):
                return  # closed: close() flushes
            try:
                self.flush()
            except Exception as exc:  # kept and tried again: the thread goes on
                log.debug("enqueue counts not added to redis yet: %s", exc)
                if stop.wait(self._after_s):
                    return

    def _halt(self) -> None:
        """Stop the thread without flushing (its backend is gone)."""
        with self._lock:
            stop, self._stop, self._thread = self._stop, None, None
        if stop is not None:
            stop.set()
            self._wake.set()

    def _forked(self) -> None:
        # The parent flushes its counts; the child starts with none and no thread.
        self._lock = threading.Lock()
        self._sending = threading.Lock()
        self._counts = {}
        self._wake = threading.Event()
        self._stop = None
        self._thread = None


def _stop_quietly(ref: Any) -> None:
    tally = ref()
    if tally is not None:
        tally._halt()


def _after_fork() -> None:
    for tally in list(_TALLIES):
        tally._forked()


def _at_exit() -> None:
    """Add what every tally of this process counted (a script that enqueues and exits)."""
    for tally in list(_TALLIES):
        try:
            tally.flush()
        except Exception as exc:
            log.warning("enqueue counts not added to redis at exit: %s", exc)


os.register_at_fork(after_in_child=_after_fork)
atexit.register(_at_exit)
