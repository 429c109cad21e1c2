"""A sorted sequence of task ids, in blocks, ordered by a key that is not stored.

The index behind sorted task listings (:mod:`dtq_core.backends.memory_index`). Ids are
kept in blocks of at most ``2 * LOAD`` ids, each sorted, blocks in order; ``_maxes``
holds the key of each block's last id. Adding or removing an id is two bisections and
one ``list.insert``/``del`` on a block of at most ``2 * LOAD`` references, so it stays
cheap at millions of ids. The key is computed on demand (from the task's record, which
outlives its index entry) and only one key per block is kept, so an id costs the index
about one pointer: no tuple per entry, as a ``SortedKeyList`` would keep.

Invariants: keys are unique (they end with the id); a key never changes while its id
is in the sequence (callers key on immutable fields only); no block is empty.

A sequence whose key order is also the order of the ids themselves (tasks of one
producer: ids and enqueue times grow together) can be read by id as well, with no
second copy: :meth:`OrderedIds.by_id` is a view of the same blocks.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator
from typing import Any, overload

#: Target block size: a block splits in two at twice this.
LOAD = 1000


class OrderedIds:
    """Task ids sorted by ``key(id)`` (the id itself when ``key`` is ``None``)."""

    __slots__ = ("_blocks", "_key", "_len", "_maxes")

    def __init__(self, key: Callable[[str], Any] | None = None) -> None:
        self._blocks: list[list[str]] = []
        self._maxes: list[Any] = []
        self._key = key
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def last(self) -> str | None:
        """The last id in order (``None`` when empty)."""
        blocks = self._blocks
        return blocks[-1][-1] if blocks else None

    def append(self, item: str, key: Any) -> None:
        """Add ``item``, whose key ``key`` is above every key held (not checked)."""
        blocks = self._blocks
        self._len += 1
        if not blocks:
            blocks.append([item])
            self._maxes.append(key)
            return
        blk = blocks[-1]
        blk.append(item)
        self._maxes[-1] = key
        if len(blk) > 2 * LOAD:
            blocks[-1:] = [blk[:LOAD], blk[LOAD:]]
            self._maxes[-1:] = [self._k(blk[LOAD - 1]), key]

    def by_id(self) -> OrderedIds:
        """A read-only view of these ids ordered by id, sharing the blocks.

        Valid only while the key order is also the id order (the caller keeps it so);
        reads by id (``chunks``, ``between``, ``count_between``) then see every change
        made here.
        """
        return _ById(self)

    def _k(self, item: str) -> Any:
        return item if self._key is None else self._key(item)

    def add(self, item: str) -> None:
        """Insert ``item`` at its place (it must not be present)."""
        k = self._k(item)
        blocks, maxes = self._blocks, self._maxes
        self._len += 1
        if not blocks:
            blocks.append([item])
            maxes.append(k)
            return
        i = bisect_left(maxes, k)
        if i == len(maxes):  # past every id: the common case of a new task
            i -= 1
            blk = blocks[i]
            blk.append(item)
            maxes[i] = k
        else:
            blk = blocks[i]
            blk.insert(bisect_left(blk, k, key=self._key), item)
        if len(blk) > 2 * LOAD:
            blocks[i : i + 1] = [blk[:LOAD], blk[LOAD:]]
            maxes[i : i + 1] = [self._k(blk[LOAD - 1]), maxes[i]]

    def remove(self, item: str) -> None:
        """Remove ``item``.

        Raises:
            KeyError: It is not in the sequence.
        """
        k = self._k(item)
        i = bisect_left(self._maxes, k)
        if i == len(self._maxes):
            raise KeyError(item)
        blk = self._blocks[i]
        j = bisect_left(blk, k, key=self._key)
        if j == len(blk) or blk[j] != item:
            raise KeyError(item)
        del blk[j]
        self._len -= 1
        if not blk:
            del self._blocks[i]
            del self._maxes[i]
        elif j == len(blk):
            self._maxes[i] = self._k(blk[-1])

    def chunks(self, after: Any = None, descending: bool = False) -> Iterator[list[str]]:
        """The ids in order, a block at a time, starting strictly after key ``after``.

        Each chunk is a copy; the sequence must not change while the iterator is used
        (callers hold the backend lock).
        """
        blocks, maxes, key = self._blocks, self._maxes, self._key
        if not blocks:
            return
        if not descending:
            if after is None:
                i, j = 0, 0
            else:
                i = bisect_right(maxes, after)
                if i == len(maxes):
                    return
                j = bisect_right(blocks[i], after, key=key)
            yield blocks[i][j:]
            for b in blocks[i + 1 :]:
                yield b[:]
            return
        if after is None:
            i, j = len(blocks) - 1, len(blocks[-1])
        else:
            i = bisect_left(maxes, after)
            if i == len(maxes):
                i, j = i - 1, len(blocks[-1])
            else:
                j = bisect_left(blocks[i], after, key=key)
        yield blocks[i][:j][::-1]
        for b in reversed(blocks[:i]):
            yield b[::-1]

    def between(self, lo: Any, hi: Any) -> list[str]:
        """Ids whose key ``k`` has ``lo <= k < hi``, in order."""
        out: list[str] = []
        blocks, maxes, key = self._blocks, self._maxes, self._key
        i = bisect_left(maxes, lo)
        while i < len(blocks):
            blk = blocks[i]
            a = bisect_left(blk, lo, key=key)
            b = bisect_left(blk, hi, key=key)
            out.extend(blk[a:b])
            if b < len(blk):
                break
            i += 1
        return out

    def count_between(self, lo: Any, hi: Any) -> int:
        """How many ids :meth:`between` would return (reads one key per block)."""
        n = 0
        blocks, maxes, key = self._blocks, self._maxes, self._key
        i = bisect_left(maxes, lo)
        first = True
        while i < len(blocks):
            blk = blocks[i]
            a = bisect_left(blk, lo, key=key) if first else 0
            first = False
            if maxes[i] < hi:
                n += len(blk) - a
                i += 1
                continue
            n += bisect_left(blk, hi, key=key) - a
            break
        return n

    @classmethod
    def from_sorted(cls, items: list[str], key: Callable[[str], Any] | None = None) -> OrderedIds:
        """A sequence of ``items``, unique and already in key order (loading a checkpoint)."""
        out = cls(key)
        out._blocks = [items[i : i + LOAD] for i in range(0, len(items), LOAD)]
        out._maxes = [out._k(b[-1]) for b in out._blocks]
        out._len = len(items)
        return out

    def __iter__(self) -> Iterator[str]:
        for b in self._blocks:
            yield from b


class _LastIds:
    """The last id of each block, read on demand: the block maxima of an id-order view."""

    __slots__ = ("_blocks",)

    def __init__(self, blocks: list[list[str]]) -> None:
        self._blocks = blocks

    def __len__(self) -> int:
        return len(self._blocks)

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [b[-1] for b in self._blocks[i]]
        return self._blocks[i][-1]


class _ById(OrderedIds):
    """:meth:`OrderedIds.by_id`: the same blocks, keyed by the ids themselves."""

    __slots__ = ("_base",)

    def __init__(self, base: OrderedIds) -> None:
        super().__init__()
        self._base = base
        self._blocks = base._blocks  # the same list: changes in place are seen here
        self._maxes = _LastIds(base._blocks)  # type: ignore[assignment]

    def __len__(self) -> int:
        return len(self._base)

    def add(self, item: str) -> None:
        """Refused: a view changes through its base."""
        raise TypeError("an id-order view is read-only")

    def remove(self, item: str) -> None:
        """Refused: a view changes through its base."""
        raise TypeError("an id-order view is read-only")
