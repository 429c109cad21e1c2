"""The event bus: one event per state change, in one stream for every subscriber."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from itertools import count, islice
from typing import Any, NamedTuple

import msgspec

log = logging.getLogger("dtq.events")


class Event(NamedTuple):
    """A task changed state (``old`` is ``None`` when the task was created)."""

    seq: int
    ts: float
    task_id: str
    name: str
    queue: str
    old: str | None
    new: str
    worker: str | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return self._asdict()


Subscriber = Callable[[Event], None]

#: Builds an :class:`Event` from a plain tuple without its Python-level ``__new__``.
_make = tuple.__new__


class _Row(msgspec.Struct, gc=False):
    """One transition of a batch as the ring keeps it.

    The ring's entries are not tracked by the cyclic GC (they hold strings and states
    only): each task's events used to leave three tracked objects per event in the ring,
    every one of them promoted to the oldest generation before it fell off, which made
    full collections several times as frequent (a tenth of the CPU of a busy broker).
    """

    task_id: str
    name: str
    queue: str
    old: str | None
    new: str
    note: str | None


class _Kept(msgspec.Struct, gc=False):
    """A published batch of several in the ring: first number, time, worker, rows."""

    first: int
    ts: float
    worker: str | None
    n: int
    rows: tuple[_Row, ...]


class _One(msgspec.Struct, gc=False):
    """A published batch of one (an enqueue, a start): one object in the ring."""

    first: int
    ts: float
    worker: str | None
    task_id: str
    name: str
    queue: str
    old: str | None
    new: str
    note: str | None
    n = 1  # not a field: every batch of the ring has its size in ``n``


def _keep(
    first: int, ts: float, worker: str | None, transitions: Sequence[Sequence[Any]]
) -> _One | _Kept:
    """The ring's copy of a published batch."""
    if len(transitions) == 1:
        return _One(first, ts, worker, *transitions[0])
    rows = tuple([_Row(*t) for t in transitions])
    return _Kept(first, ts, worker, len(rows), rows)


#: Called once per published batch: ``(ts, transitions, worker)``; each transition is a
#: :class:`~dtq_core.backends.base.Transition` (or a tuple in its field order).
BatchSubscriber = Callable[[float, Sequence[Sequence[Any]], "str | None"], None]


class EventBus:
    """Publishes events to subscribers and keeps the last ``history`` for late readers.

    Publishing a batch of transitions (:meth:`publish_many`) numbers the batch and keeps
    it as rows the cyclic GC never visits (a busy broker's ring churns through thousands
    of events a second): :class:`Event` objects are made only for subscribers of single
    events and for readers of :meth:`since`, so events nobody reads cost an append and
    one small object per transition, and no lock. Batch subscribers
    (:meth:`subscribe_batch`: the metrics, the DAG runs) receive the transitions
    themselves, once per batch.

    Subscribers run on the publishing thread, so they must be quick (queue work
    elsewhere if not). A subscriber that raises is logged and kept.

    Workers publish from many threads while consoles read, without a lock: a batch takes
    its numbers in one call and is stored under the first, and readers stop at the
    first number not stored yet, so they read the events in sequence, never one after a
    gap that is filled later.

    Args:
        history: How many recent events :meth:`since` can return.
    """

    def __init__(self, history: int = 10_000) -> None:
        self._subs: tuple[Subscriber, ...] = ()
        self._batch_subs: tuple[BatchSubscriber, ...] = ()
        # Batches as published (copied into untracked rows), by the number of their
        # first event. No lock: every thread publishes two or three times per task, and
        # a lock for it was the most contended of a busy broker (a holder that lost the
        # GIL held up every other publisher). A batch takes its numbers in one C call
        # (``next`` on a count, or on an islice of it for several) and is stored under
        # the first; every number belongs to one batch, so readers go from one batch to
        # the next by its size, and a number not stored yet (its publisher is between
        # the two steps) ends what they read: nothing after it is returned before it.
        # (This relies on the GIL: a count's ``next`` and a dict's setitem are then
        # atomic. A free-threaded build would need a lock around the two.)
        self._ring: dict[int, _One | _Kept] = {}
        self._numbers = count(1)
        self._history = max(0, history)
        self._head = 1  # the first number still kept (moved by the trimmer only)
        self._widest = 1  # the most events a batch has held (how far back a read looks)
        # Dropped from the front once this many events past ``history`` are kept, by one
        # thread at a time (the others never wait for it).
        self._slack = max(64, self._history // 8)
        self._trim_lock = threading.Lock()
        self._sub_lock = threading.Lock()

    def publish(
        self,
        ts: float,
        task_id: str,
        name: str,
        queue: str,
        old: str | None,
        new: str,
        worker: str | None = None,
        note: str | None = None,
    ) -> Event:
        """Create, record and deliver one event."""
        batch = ((task_id, name, queue, old, new, note),)
        ev = Event(
            self._record(ts, batch, worker), ts, task_id, name, queue, old, new, worker, note
        )
        self._deliver(ts, batch, worker, (ev,))
        return ev

    def publish_many(
        self, ts: float, transitions: Sequence[Sequence[Any]], worker: str | None = None
    ) -> int:
        """Record and deliver one event per transition, all at ``ts`` by ``worker``.

        Each transition is ``(task_id, name, queue, old, new, note)`` (a
        :class:`~dtq_core.backends.base.Transition`). Returns the sequence number of
        the first (0 when there was none).
        """
        n = len(transitions)
        if not n:
            return 0
        # _record and _deliver written out: two calls fewer for each of the two or three
        # events of every task (an enqueue and a start are batches of one).
        if n == 1:
            if self._history:
                t = transitions[0]
                kept: _One | _Kept = _One(0, ts, worker, t[0], t[1], t[2], t[3], t[4], t[5])
                # Numbered and stored with no call in between (see _place).
                first = kept.first = next(self._numbers)
                self._ring[first] = kept
                if first - self._head >= self._history + self._slack:
                    self._trim()
            else:
                first = next(self._numbers)
        else:
            first = self._place(ts, worker, transitions)
        for bcb in self._batch_subs:
            try:
                bcb(ts, transitions, worker)
            except Exception:
                log.exception("event subscriber %r failed", bcb)
        subs = self._subs
        if subs:
            for i, t in enumerate(transitions):
                ev = _make(Event, (first + i, ts, t[0], t[1], t[2], t[3], t[4], worker, t[5]))
                for cb in subs:
                    try:
                        cb(ev)
                    except Exception:
                        log.exception("event subscriber %r failed", cb)
        return first

    def _record(self, ts: float, transitions: Sequence[Sequence[Any]], worker: str | None) -> int:
        """Number a batch and keep a copy of it."""
        return self._place(ts, worker, transitions)

    def _place(self, ts: float, worker: str | None, transitions: Sequence[Sequence[Any]]) -> int:
        """Number a batch (one C call takes its numbers) and keep it; its first number."""
        n = len(transitions)
        if not self._history:
            return next(islice(self._numbers, n - 1, None)) - n + 1
        self._widest = max(self._widest, n)
        kept = _keep(0, ts, worker, transitions)
        # Made first, then numbered and stored with no call in between: a thread that
        # loses the GIL there leaves a number readers and the trimmer stop at until it
        # runs again, so that gap must stay rare and short.
        first = kept.first = next(islice(self._numbers, n - 1, None)) - n + 1
        self._ring[first] = kept
        if first - self._head >= self._history + self._slack:
            self._trim()
        return first

    def _trim(self) -> None:
        """Drop the oldest batches but at least ``history`` events (whole batches)."""
        if not self._trim_lock.acquire(False):
            return  # another thread trims
        try:
            ring, k, keep_from = self._ring, self._head, self.last_seq - self._history + 1
            while (kept := ring.get(k)) is not None and k + kept.n <= keep_from:
                del ring[k]
                k += kept.n
            self._head = k
        finally:
            self._trim_lock.release()

    def _deliver(
        self,
        ts: float,
        transitions: Sequence[Sequence[Any]],
        worker: str | None,
        events: Sequence[Event] | None,
    ) -> None:
        for bcb in self._batch_subs:
            try:
                bcb(ts, transitions, worker)
            except Exception:
                log.exception("event subscriber %r failed", bcb)
        if events is None:
            return
        for ev in events:
            for cb in self._subs:
                try:
                    cb(ev)
                except Exception:
                    log.exception("event subscriber %r failed", cb)

    def subscribe(self, cb: Subscriber) -> Callable[[], None]:
        """Call ``cb`` for every future event; returns a function that unsubscribes."""
        with self._sub_lock:
            self._subs = (*self._subs, cb)

        def unsubscribe() -> None:
            with self._sub_lock:
                self._subs = tuple(s for s in self._subs if s is not cb)

        return unsubscribe

    def subscribe_batch(self, cb: BatchSubscriber) -> Callable[[], None]:
        """Call ``cb(ts, transitions, worker)`` once per published batch.

        For subscribers that aggregate (counters): no :class:`Event` is made for them.
        Returns a function that unsubscribes.
        """
        with self._sub_lock:
            self._batch_subs = (*self._batch_subs, cb)

        def unsubscribe() -> None:
            with self._sub_lock:
                self._batch_subs = tuple(s for s in self._batch_subs if s is not cb)

        return unsubscribe

    def since(self, seq: int, limit: int = 1000) -> list[Event]:
        """Events with a sequence number above ``seq`` (oldest first, at most ``limit``)."""
        if limit <= 0 or not self._history:
            return []
        ring, history = self._ring, self._history
        last = self.last_seq
        lo = max(seq, last - history, last - limit, self._head - 1) + 1
        if lo > last:
            return []
        # The batch that holds ``lo``: stored under ``lo`` or at most a batch before it.
        k, kept = lo, ring.get(lo)
        j = lo - 1
        while kept is None and j >= max(self._head, lo - self._widest):
            got = ring.get(j)
            if got is not None:
                if j + got.n > lo:
                    k, kept = j, got
                break
            j -= 1
        out: list[Event] = []
        while kept is not None and k <= last:  # to the first number not stored yet
            ts, worker = kept.ts, kept.worker
            rows: Sequence[_One | _Row] = (kept,) if isinstance(kept, _One) else kept.rows
            for i in range(max(0, lo - k), len(rows)):
                r = rows[i]
                out.append(
                    Event(k + i, ts, r.task_id, r.name, r.queue, r.old, r.new, worker, r.note)
                )
            k += len(rows)
            kept = ring.get(k)
        return out

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest event (0 when none).

        The newest numbered: its batch may be a moment from being stored (readers
        get it and those after it once it is).
        """
        if not self._history:
            return 0
        # The count's next number, read without taking it (its repr is "count(N)").
        return int(repr(self._numbers)[6:-1]) - 1
