"""The event bus: one event per state change, in one stream for every subscriber."""

from __future__ import annotations

import logging
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from itertools import chain, compress, count, islice, repeat
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


#: Whether one C call runs without another thread running Python code meanwhile (a
#: build with the GIL): :meth:`EventBus.publish_many` then numbers and keeps a batch
#: without a lock. A free-threaded build takes the lock.
_ATOMIC_CALLS = getattr(sys, "_is_gil_enabled", lambda: True)()
_NEVER = repeat(False)


def _number_and_append(ring: deque[_One | _Kept], kept: _One | _Kept, numbers: count[int]) -> None:
    """Give ``kept`` the next ``kept.n`` numbers and append it to ``ring``, in one C call.

    ``ring.extend`` drains the iterator in C, running no Python code, so with the GIL
    no other thread numbers or appends in between: the ring stays in sequence order
    without a lock. The iterator sets ``kept.first`` to the next number (``setattr``
    returns ``None``, which the filter drops), consumes the batch's other numbers
    (``compress`` with false selectors yields none of them), then yields ``kept``.
    """
    ring.extend(
        filter(
            None,
            chain(
                map(setattr, (kept,), ("first",), numbers),
                compress(islice(numbers, kept.n - 1), _NEVER),  # type: ignore[arg-type]
                (kept,),
            ),
        )
    )


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

    Workers publish from many threads while consoles read: a batch is numbered and
    appended in one C call (atomic with the GIL; under a lock on a free-threaded build),
    so the ring is always in sequence order, and readers copy what they need in one C
    call too (iterating a deque another thread appends to raises).

    Args:
        history: How many recent events :meth:`since` can return.
    """

    def __init__(self, history: int = 10_000) -> None:
        self._subs: tuple[Subscriber, ...] = ()
        self._batch_subs: tuple[BatchSubscriber, ...] = ()
        # Batches as published, oldest first (copied into untracked rows), numbered
        # and appended in one C call (_number_and_append): every thread publishes two
        # or three times per task, and a lock for it was the most contended of a busy
        # broker (its holder, losing the GIL, held up every other publisher).
        self._ring: deque[_One | _Kept] = deque()
        self._numbers = count(1)  # the next event's number (consumed atomically)
        self._history = max(0, history)
        self._sub_lock = threading.Lock()
        # Numbering and appending on a free-threaded build (not atomic there).
        self._ring_lock = threading.Lock()
        # One thread at a time trims the ring's front; the others never wait for it.
        self._trim_lock = threading.Lock()

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
            t = transitions[0]
            kept: _One | _Kept = _One(0, ts, worker, t[0], t[1], t[2], t[3], t[4], t[5])
        else:
            kept = _keep(0, ts, worker, transitions)
        first = self._place(kept)
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
        return self._place(_keep(0, ts, worker, transitions))

    def _place(self, kept: _One | _Kept) -> int:
        """Number ``kept`` and keep it in the ring (in sequence order); its first number."""
        n = kept.n
        if not self._history:  # nothing kept: numbers only (islice consumes n at once)
            kept.first = next(islice(self._numbers, n - 1, None)) - n + 1
            return kept.first
        ring = self._ring
        if _ATOMIC_CALLS:
            _number_and_append(ring, kept, self._numbers)
        else:
            with self._ring_lock:
                _number_and_append(ring, kept, self._numbers)
        # Keep at least ``history`` events; whole batches fall off the front. Checked
        # against this batch's end (newer ones only make the front older): trimmed by
        # one thread at a time, which no publisher waits for.
        last = kept.first + n - 1
        head = ring[0]
        if last - head.first + 1 - head.n >= self._history and self._trim_lock.acquire(False):
            try:
                history = self._history
                while True:
                    head = ring[0]  # only a trimmer takes from the front
                    if last - head.first + 1 - head.n < history:
                        break
                    ring.popleft()
            finally:
                self._trim_lock.release()
        return kept.first

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
        # The newest batches, newest first, copied in one C call while publishers
        # append: ``limit`` events are in at most ``limit`` batches. An append between
        # making the iterator and the copy makes the iterator raise: copied again.
        while True:
            try:
                picked = list(islice(reversed(self._ring), min(limit, self._history) + 1))
                break
            except RuntimeError:  # deque mutated during iteration
                continue
        if not picked:
            return []
        last = picked[0].first + picked[0].n - 1
        # The oldest kept: the last ``history`` events, at most ``limit`` of them.
        lo = max(seq, last - self._history, last - limit) + 1
        if lo > last:
            return []
        for i, chunk in enumerate(picked):
            if chunk.first <= lo:
                del picked[i + 1 :]
                break
        out: list[Event] = []
        for kept in reversed(picked):
            first, ts, worker = kept.first, kept.ts, kept.worker
            rows: Sequence[_One | _Row] = (kept,) if isinstance(kept, _One) else kept.rows
            for i in range(max(0, lo - first), len(rows)):
                r = rows[i]
                out.append(
                    Event(first + i, ts, r.task_id, r.name, r.queue, r.old, r.new, worker, r.note)
                )
        return out

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest event kept (0 when none)."""
        try:
            newest = self._ring[-1]
        except IndexError:
            return 0
        return newest.first + newest.n - 1
