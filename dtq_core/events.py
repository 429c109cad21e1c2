"""The event bus: one event per state change, in one stream for every subscriber."""

from __future__ import annotations

import itertools
import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

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


class EventBus:
    """Publishes events to subscribers and keeps the last ``history`` for late readers.

    Publishing is a tuple, a deque append and one call per subscriber: subscribers run
    on the publishing thread, so they must be quick (queue work elsewhere if not). A
    subscriber that raises is logged and kept.

    Workers publish from many threads while consoles read: numbering and appending
    happen under one lock, so the ring is always in sequence order, and readers copy
    what they need under it (iterating a deque another thread appends to raises).

    Args:
        history: How many recent events :meth:`since` can return.
    """

    def __init__(self, history: int = 10_000) -> None:
        self._subs: tuple[Subscriber, ...] = ()
        self._ring: deque[Event] = deque(maxlen=history)
        self._seq = itertools.count(1)
        self._sub_lock = threading.Lock()
        self._ring_lock = threading.Lock()

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
        with self._ring_lock:
            ev = Event(next(self._seq), ts, task_id, name, queue, old, new, worker, note)
            self._ring.append(ev)
        for cb in self._subs:
            try:
                cb(ev)
            except Exception:
                log.exception("event subscriber %r failed", cb)
        return ev

    def subscribe(self, cb: Subscriber) -> Callable[[], None]:
        """Call ``cb`` for every future event; returns a function that unsubscribes."""
        with self._sub_lock:
            self._subs = (*self._subs, cb)

        def unsubscribe() -> None:
            with self._sub_lock:
                self._subs = tuple(s for s in self._subs if s is not cb)

        return unsubscribe

    def since(self, seq: int, limit: int = 1000) -> list[Event]:
        """Events with a sequence number above ``seq`` (oldest first, at most ``limit``)."""
        if limit <= 0:
            return []
        with self._ring_lock:
            ring = self._ring
            if not ring or ring[-1].seq <= seq:
                return []
            # Sequence numbers are consecutive in the ring: the index is arithmetic.
            first = max(0, seq - ring[0].seq + 1, len(ring) - limit)
            return list(itertools.islice(ring, first, None))

    @property
    def last_seq(self) -> int:
        """The sequence number of the newest event (0 when none)."""
        with self._ring_lock:
            ring = self._ring
            return ring[-1].seq if ring else 0
