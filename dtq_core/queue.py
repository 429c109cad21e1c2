"""An indexed binary heap: O(log n) push/pop, O(1) lookup and removal by id.

Used for the ready queues (key = priority, lower first, FIFO among equals), for delayed
tasks (key = due time) and for leases (key = deadline). Removal marks the heap entry dead
(lazy deletion); the heap is compacted when dead entries outnumber live ones, so cancel
never scans.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator


class IndexedHeap:
    """A min-heap of ids by ``(key, insertion order)`` with an id index."""

    __slots__ = ("_dead", "_heap", "_index", "_seq")

    def __init__(self) -> None:
        self._heap: list[list[object]] = []
        self._index: dict[str, list[object]] = {}
        self._seq = itertools.count()
        self._dead = 0

    def __len__(self) -> int:
        return len(self._index)

    def __bool__(self) -> bool:
        return bool(self._index)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._index

    def push(self, item_id: str, key: float) -> None:
        """Add ``item_id`` with sort ``key``; an id already present is re-keyed."""
        if item_id in self._index:
            self.remove(item_id)
        entry: list[object] = [key, next(self._seq), item_id]
        self._index[item_id] = entry
        heapq.heappush(self._heap, entry)

    def pop(self) -> str | None:
        """Remove and return the id with the smallest key, or ``None`` when empty."""
        heap = self._heap
        while heap:
            entry = heapq.heappop(heap)
            item_id = entry[2]
            if item_id is not None:
                del self._index[item_id]  # type: ignore[arg-type]
                return item_id  # type: ignore[return-value]
            self._dead -= 1
        return None

    def peek(self) -> tuple[str, float] | None:
        """The smallest ``(id, key)`` without removing it."""
        heap = self._heap
        while heap:
            entry = heap[0]
            if entry[2] is not None:
                return entry[2], entry[0]  # type: ignore[return-value]
            heapq.heappop(heap)
            self._dead -= 1
        return None

    def peek_key(self) -> float | None:
        """The smallest key, or ``None`` when empty."""
        top = self.peek()
        return None if top is None else top[1]

    def head_order(self) -> tuple[float, int] | None:
        """``(key, insertion order)`` of the head: compares heads of several heaps fairly."""
        if self.peek() is None:
            return None
        entry = self._heap[0]
        return entry[0], entry[1]  # type: ignore[return-value]

    def key_of(self, item_id: str) -> float | None:
        """The key of ``item_id`` in O(1), or ``None`` if absent."""
        entry = self._index.get(item_id)
        return None if entry is None else entry[0]  # type: ignore[return-value]

    def remove(self, item_id: str) -> bool:
        """Remove ``item_id`` in O(1) (amortised); return whether it was present."""
        entry = self._index.pop(item_id, None)
        if entry is None:
            return False
        entry[2] = None
        self._dead += 1
        if self._dead > 64 and self._dead > len(self._index):
            self._compact()
        return True

    def pop_until(self, key: float, limit: int) -> list[str]:
        """Pop up to ``limit`` ids whose key is ``<= key`` (e.g. due times up to now)."""
        out: list[str] = []
        while len(out) < limit:
            top = self.peek()
            if top is None or top[1] > key:
                break
            popped = self.pop()
            assert popped is not None
            out.append(popped)
        return out

    def smallest(self, n: int) -> list[tuple[str, float]]:
        """The ``n`` smallest ``(id, key)`` in order, without removing them (O(n log size))."""
        live = (e for e in self._heap if e[2] is not None)
        return [(e[2], e[0]) for e in heapq.nsmallest(n, live)]  # type: ignore[misc]

    def __iter__(self) -> Iterator[str]:
        """Ids in no particular order."""
        return iter(list(self._index))

    def clear(self) -> None:
        """Remove everything."""
        self._heap.clear()
        self._index.clear()
        self._dead = 0

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if e[2] is not None]
        heapq.heapify(self._heap)
        self._dead = 0
