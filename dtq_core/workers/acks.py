"""Acknowledgements stored in batches: one round trip for many successful tasks.

On a backend where every call crosses the network (Redis), a worker that acknowledges
each task on its own spends most of its time waiting for replies. Successful outcomes
are gathered here instead and stored together by :meth:`Backend.ack_many` when the
oldest has waited ``delay`` seconds (or the batch is full); their events and
``after_run`` hooks follow the store, as they would after a single ack.

Nothing is lost by waiting: the tasks stay RUNNING under their leases, which heartbeats
renew (:meth:`leases`), until the batch is stored. A process that dies first has its
tasks delivered again, as with a crash in the middle of a task.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from dtq_core.errors import BackendError, SerializationError, StoreFailed
from dtq_core.gil_locks import Held

if TYPE_CHECKING:
    from dtq_core.backends.base import Backend, Transition
    from dtq_core.hooks import RunContext

log = logging.getLogger("dtq.worker")

#: Called for each stored ack: ``(context, transitions)``.
Finish = Callable[["RunContext", "list[Transition]"], None]
#: Called once per stored batch with every ``(context, transitions)`` of it, in order.
FinishMany = Callable[["list[tuple[RunContext, list[Transition]]]"], None]
#: Called for a success whose result the store refused to hold: ``(context, why)``.
Refused = Callable[["RunContext", SerializationError], None]


class AckBuffer:
    """Successful outcomes waiting to be stored together, and the thread that stores them."""

    def __init__(
        self,
        backend: Backend,
        now: Callable[[], float],
        finish: Finish,
        delay: float,
        max_batch: int = 256,
        fatal: Callable[[BaseException], None] | None = None,
        finish_many: FinishMany | None = None,
        lazy: bool = False,
        refused: Refused | None = None,
    ) -> None:
        self.backend = backend
        #: Told of a success whose result the store cannot hold (an integer past 64
        #: bits in the embedded log, a result over its record limit): the task must
        #: fail with the reason. Without it, such a success is logged and dropped (its
        #: lease runs out and it runs again).
        self.refused = refused
        self.now = now
        self.finish = finish
        #: When set, called once per batch instead of ``finish`` per ack (one event
        #: batch for the whole of it); it handles its own errors per ack.
        self.finish_many = finish_many
        #: Told when the store failed stop (the acks waiting can never be stored here).
        self.fatal = fatal
        self.delay = delay
        self.max_batch = max_batch
        #: The thread sleeps until :meth:`arm` (not woken by each first success): for a
        #: pool that stores the successes itself when it runs out of work, and arms the
        #: buffer only when a thread goes on to another task while successes wait.
        self.lazy = lazy
        self._armed = False
        # Appended to without the lock by a lazy buffer's adders (a deque's append is
        # atomic) and taken from the front by one flush at a time: never replaced.
        self._items: deque[tuple[RunContext, Any]] = deque()
        # Some waiting acks were in a call that failed: it may have stored them.
        self._retry = False
        self._oldest = 0.0
        # Entered through the lock itself on the hot paths: a Condition's own
        # __enter__/__exit__ are Python calls around it.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._flushing = threading.Lock()
        self._flushing_held = Held(self._flushing)
        self._closed = False
        self._thread: threading.Thread | None = None

    def add(self, ctx: RunContext, result: Any) -> None:
        """Queue the success of ``ctx`` (its result already in JSON form)."""
        items = self._items
        if self.lazy and self._thread is not None:
            # Nobody to wake (the pool arms the buffer): no lock, which every worker
            # thread took once per task. Appended before ``_closed`` is read, as close()
            # sets it before its last flush: one of the two stores this success.
            if not items:
                self._oldest = time.monotonic()
            items.append((ctx, result))
            if self._closed or len(items) >= self.max_batch:
                self.flush()
            return
        with self._lock:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="dtq-acks", daemon=True)
                self._thread.start()
            if not self._items:
                self._oldest = time.monotonic()
                if not self.lazy:
                    self._cond.notify()
            self._items.append((ctx, result))
            now_please = self._closed or len(self._items) >= self.max_batch
        if now_please:
            self.flush()

    def arm(self) -> None:
        """Have the waiting successes stored within ``delay`` (a lazy buffer's thread)."""
        if not self.lazy or self._armed or not self._items:  # the common case, no lock
            return
        with self._lock:
            if self._items and not self._armed:
                self._armed = True
                self._cond.notify()

    def leases(self) -> list[tuple[str, int]]:
        """``(task_id, token)`` of every waiting ack: their leases must be renewed."""
        waiting = list(self._items)  # one C call: adders append without the lock
        return [(c.delivery.task_id, c.delivery.token) for c, _ in waiting]

    def __len__(self) -> int:
        return len(self._items)

    def flush(self) -> None:
        """Store every waiting ack now, in one round trip.

        Raises :class:`BackendError` when the backend cannot be reached, leaving them
        queued for the next attempt.
        """
        # One batch at a time: acks stay in order. The pool's threads flush as they run
        # out of work, often together: they hand the GIL to the flush in progress
        # rather than park on its lock (dtq_core.gil_locks).
        with self._flushing_held:
            with self._lock:
                # Only the ones there now: adders append meanwhile (to the next batch).
                waiting = self._items
                items = [waiting.popleft() for _ in range(len(waiting))]
                retry, self._retry = self._retry, False
                self._armed = False
            if not items:
                return
            d = [(c.delivery.task_id, c.delivery.token, r) for c, r in items]
            try:
                try:
                    results = self._store(d, retry)
                except SerializationError:
                    # A result the store cannot hold: nothing of the batch was written.
                    # The others are stored one by one; that task fails with the reason.
                    items, results = self._apart(items, retry)
            except StoreFailed:
                # Never stored by this process: dropped (their tasks were RUNNING in the
                # log, so a restart's recovery requeues them).
                raise
            except Exception:
                # Kept, in order, for the next attempt (which may find some stored).
                with self._cond:
                    self._items.extendleft(reversed(items))
                    self._oldest = time.monotonic()
                    self._retry = True
                    # The thread retries them (with its backoff), whoever failed here.
                    self._armed = True
                    self._cond.notify()
                raise
        if self.finish_many is not None:
            try:
                self.finish_many([(ctx, trs) for (ctx, _), trs in zip(items, results, strict=True)])
            except Exception:
                log.exception("after the acks of %d tasks", len(items))
            return
        for (ctx, _), trs in zip(items, results, strict=True):
            try:
                self.finish(ctx, trs)
            except Exception:
                log.exception("after the ack of task %s", ctx.delivery.task_id)

    def _store(self, d: list[tuple[str, int, Any]], retry: bool) -> list[list[Transition]]:
        if retry:
            return self.backend.ack_many(d, self.now(), retry=True)
        return self.backend.ack_many(d, self.now())

    def _apart(
        self, items: list[tuple[RunContext, Any]], retry: bool
    ) -> tuple[list[tuple[RunContext, Any]], list[list[Transition]]]:
        """Store ``items`` one by one; hand those the store refuses to ``refused``."""
        kept: list[tuple[RunContext, Any]] = []
        results: list[list[Transition]] = []
        for ctx, r in items:
            try:
                trs = self._store([(ctx.delivery.task_id, ctx.delivery.token, r)], retry)[0]
            except SerializationError as exc:
                if self.refused is not None:
                    self.refused(ctx, exc)
                else:
                    log.error("task %s: its result cannot be stored: %s", ctx.delivery.task_id, exc)
                continue
            kept.append((ctx, r))
            results.append(trs)
        return kept, results

    def _run(self) -> None:
        backoff = 0.0
        while True:
            with self._cond:
                while (not self._items or (self.lazy and not self._armed)) and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                wait = self._oldest + max(self.delay, backoff) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                self.flush()
                backoff = 0.0
            except StoreFailed as exc:
                if self.fatal is not None:
                    self.fatal(exc)
            except BackendError as exc:
                if not backoff:
                    log.warning("storing acknowledgements failed, retrying: %s", exc)
                backoff = min(5.0, max(0.1, backoff * 2))
            except Exception:
                log.exception("storing acknowledgements")
                backoff = min(5.0, max(0.1, backoff * 2))

    def close(self, timeout: float = 10.0) -> None:
        """Store what is waiting (retrying up to ``timeout``), then stop the thread.

        Successes added from now on are stored at once.
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        deadline = time.monotonic() + timeout
        while self._items:
            try:
                self.flush()
            except Exception as exc:
                if time.monotonic() >= deadline:
                    log.error(
                        "%d acknowledgements not stored (%s): their tasks run again "
                        "when their leases expire",
                        len(self._items),
                        exc,
                    )
                    return
                time.sleep(0.1)
