"""A ready queue: task ids by priority (lower first), first in first out among equals.

The structure behind each queue's ready tasks in the in-memory state
(:class:`~dtq_core.backends.memory_tasks.TaskTable`). A queue holds millions of ids, so
an id costs one pointer in a ``deque`` of its priority: no entry object, no sequence
number, no index by id (an :class:`~dtq_core.queue.IndexedHeap` entry costs about 150
bytes). Pushing and taking the head are O(1).

Removing an id from the middle (a cancel) leaves it where it is, counted as stale under
``(priority, id)``: the walks skip it and the head is cleaned as it comes up; when the
stale ids outnumber the live ones the deques are rebuilt. Callers must know an id is in
the queue before they remove it (the table does: a PENDING task not in ``delayed``).

Invariants: an id has at most one live place; its stale places are older than its live
one (so the first of its places at a priority are the stale ones); ``len`` counts the
live ids; ``taken`` counts the ids ever taken off (popped or removed).
"""

from __future__ import annotations

from bisect import insort
from collections import deque
from collections.abc import Iterator

#: Stale places tolerated before a rebuild (and never more than the live ids).
STALE_MIN = 64


class ReadyQueue:
    """Ready task ids by ``(priority, arrival)``."""

    __slots__ = ("_dead", "_keys", "_len", "_levels", "_stale", "taken")

    def __init__(self) -> None:
        self._levels: dict[float, deque[str]] = {}
        self._keys: list[float] = []  # the priorities of ``_levels``, sorted
        self._stale: dict[tuple[float, str], int] = {}
        self._dead = 0  # stale places in all
        self._len = 0
        #: Ids taken off so far: the head's turn in the queue's order of service, by
        #: which the heads of several queues of one priority take turns.
        self.taken = 0

    def __len__(self) -> int:
        return self._len

    def __bool__(self) -> bool:
        return self._len > 0

    def push(self, task_id: str, priority: float) -> None:
        """Add ``task_id`` (not in the queue) behind the others of its priority."""
        level = self._levels.get(priority)
        if level is None:
            level = self._levels[priority] = deque()
            insort(self._keys, priority)
        level.append(task_id)
        self._len += 1

    def _first(self) -> tuple[float, deque[str]] | None:
        """The first priority with a live id at the head of its deque (stale heads go)."""
        keys, levels, stale = self._keys, self._levels, self._stale
        while keys:
            key = keys[0]
            level = levels[key]
            if stale:
                self._clean(key, level)
            if level:
                return key, level
            del levels[key]
            keys.pop(0)
        return None

    def _clean(self, key: float, level: deque[str]) -> None:
        stale = self._stale
        while level and (place := (key, level[0])) in stale:
            level.popleft()
            self._dead -= 1
            if stale[place] == 1:
                del stale[place]
            else:
                stale[place] -= 1

    def pop(self) -> str | None:
        """Take the first id off, or ``None`` when the queue is empty."""
        first = self._first()
        if first is None:
            return None
        self._len -= 1
        self.taken += 1
        return first[1].popleft()

    def remove(self, task_id: str, priority: float) -> None:
        """Take ``task_id`` (in the queue at ``priority``) off: O(1) at the head.

        Raises:
            KeyError: Nothing is queued at ``priority``.
        """
        level = self._levels[priority]
        if self._stale:
            self._clean(priority, level)
        self._len -= 1
        self.taken += 1
        if level and level[0] == task_id:
            level.popleft()
            return
        place = (priority, task_id)
        self._stale[place] = self._stale.get(place, 0) + 1
        self._dead += 1
        if self._dead > STALE_MIN and self._dead > self._len:
            self._rebuild()

    def _rebuild(self) -> None:
        stale = self._stale
        for key, level in self._levels.items():
            keep: deque[str] = deque()
            for task_id in level:
                n = stale.get((key, task_id))
                if n:
                    stale[(key, task_id)] = n - 1
                else:
                    keep.append(task_id)
            self._levels[key] = keep
        self._stale = {}
        self._dead = 0

    def walk(self) -> Iterator[tuple[float, str]]:
        """``(priority, id)`` of the live ids in the order they will be taken.

        The queue must not change while the iterator is used (callers hold the lock).
        """
        stale = dict(self._stale)
        for key in self._keys:
            for task_id in self._levels[key]:
                if stale and (n := stale.get((key, task_id))):
                    stale[(key, task_id)] = n - 1
                    continue
                yield key, task_id

    def smallest(self, n: int) -> list[tuple[str, float]]:
        """The first ``n`` ``(id, priority)`` in order, without taking them."""
        out: list[tuple[str, float]] = []
        if n <= 0:
            return out
        for key, task_id in self.walk():
            out.append((task_id, key))
            if len(out) >= n:
                break
        return out

    def entries(self) -> list[tuple[str, float]]:
        """Every ``(id, priority)`` in order (a checkpoint's)."""
        return [(task_id, key) for key, task_id in self.walk()]

    def __iter__(self) -> Iterator[str]:
        """The live ids, in order."""
        return (task_id for _, task_id in self.walk())
