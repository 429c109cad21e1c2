"""Expiry for the in-memory state: finished records past their TTL, expired keys."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from dtq_core.backends.memory_index import TaskIndex
from dtq_core.task import TaskRecord, TaskState

_S = TaskState
#: Final states whose records expire (DEAD stays until purged).
_LIVE_END = frozenset({_S.SUCCESS, _S.FAILED, _S.CANCELLED})


class ExpiryMixin:
    """Mixed into :class:`~dtq_core.backends.memory.MemoryBackend`, which owns the state."""

    _lock: threading.Lock | threading.RLock
    _records: dict[str, TaskRecord]
    _index: TaskIndex
    _counts: dict[TaskState, int]
    _expiry: deque[tuple[float, str]]
    _kv: dict[str, tuple[str, float | None]]
    _kv_swept: float
    max_results: int

    if TYPE_CHECKING:

        def _live(self, key: str, now: float) -> Any:
            """Provided by :class:`~dtq_core.backends.memory_kv.KeyValueMixin`."""

    def expire(self, now: float) -> int:
        """Drop finished records past the result TTL (or over ``max_results``)."""
        with self._lock:
            return len(self._expire_ids(now))

    def _expire_ids(self, now: float) -> list[str]:
        """Drop due finished records and expired keys (lock held); return the task ids."""
        dropped: list[str] = []
        exp = self._expiry
        while exp and (exp[0][0] <= now or len(exp) > self.max_results):
            _, task_id = exp.popleft()
            dropped.extend(self.drop_finished([task_id]))
        if now - self._kv_swept >= 60.0:  # expired keys are otherwise only dropped on read
            self._kv_swept = now
            for key in list(self._kv):
                self._live(key, now)
        return dropped

    def drop_finished(self, task_ids: Sequence[str]) -> list[str]:
        """Delete these records if they are finished (SUCCESS, FAILED, CANCELLED)."""
        out = []
        records = self._records
        for task_id in task_ids:
            rec = records.get(task_id)
            if rec is not None and rec.state in _LIVE_END:
                self._index.discard(rec)
                del records[task_id]
                self._counts[rec.state] -= 1
                out.append(task_id)
        return out
