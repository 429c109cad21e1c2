"""The keys, worker heartbeats and task names of a local backend.

:class:`LocalKeys` implements that part of the Backend protocol for
:class:`~dtq_core.backends.local.LocalBackend`: it decides each key change (a
set-if-absent that finds a live value changes nothing) and passes it, as a
:class:`~dtq_core.backends.changes.KeySet` or ``KeyDelete`` record, down the backend's
write path. It holds no state of its own.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from dtq_core.backends.changes import KeyDelete, KeySet, Names
from dtq_core.backends.journal import WritePath


class LocalKeys:
    """Keys with TTLs, count maps, GCRA buckets, worker heartbeats and task names.

    Args:
        write: The backend's write path (its state, lock and journal).
    """

    def __init__(self, write: WritePath) -> None:
        self._w = write
        self._kv = write.state.keys

    def set_if_absent(self, key: str, value: str, ttl_s: float, now: float) -> str | None:
        """Set ``key`` unless a live value exists; return the existing value if any."""
        self._w.journal.check()
        with self._w.lock:
            old = self._kv.live(key, now)
            lsn = (
                0 if old is not None else self._w.change_locked(KeySet(key, value, now + ttl_s))[1]
            )
        self._w.journal.wait(lsn)
        return old

    def set_key(self, key: str, value: str, ttl_s: float | None, now: float) -> None:
        """Set ``key`` unconditionally."""
        self._w.change(KeySet(key, value, None if ttl_s is None else now + ttl_s))

    def delete_key(self, key: str) -> None:
        """Remove ``key``."""
        self._w.change(KeyDelete(key))

    def compare_and_set(
        self, key: str, expected: str | None, value: str, ttl_s: float | None, now: float
    ) -> bool:
        """Set ``key`` to ``value`` only if its live value is ``expected``."""
        self._w.journal.check()
        with self._w.lock:
            if self._kv.live(key, now) != expected:
                return False
            change = KeySet(key, value, None if ttl_s is None else now + ttl_s)
            lsn = self._w.change_locked(change)[1]
        self._w.journal.wait(lsn)
        return True

    def add_counts(
        self,
        key: str,
        incr: dict[str, float],
        maxima: dict[str, float],
        ttl_s: float | None,
        now: float,
    ) -> None:
        """Add to a count map (kept as JSON in the key space); logged without a wait.

        Metrics: losing the last second of them in a machine crash is fine, and a
        publisher must not wait for an fsync.
        """
        self._w.journal.check()
        with self._w.lock:
            value = self._kv.counts_after(key, incr, maxima, now)
            self._w.change_locked(KeySet(key, value, None if ttl_s is None else now + ttl_s))

    def reserve(self, key: str, rate: float, burst: int, now: float) -> float:
        """GCRA token bucket: reserve one token; return the seconds to wait (no log wait)."""
        self._w.journal.check()
        with self._w.lock:
            wait, change = self._kv.reservation(key, rate, burst, now)
            self._w.change_locked(change)
        return wait

    def heartbeat(self, worker_id: str, info: dict[str, Any], now: float, ttl_s: float) -> None:
        """Publish a worker's state (not logged)."""
        with self._w.lock:
            self._kv.heartbeat(worker_id, info, now + ttl_s)

    def forget_worker(self, worker_id: str) -> None:
        """Remove a worker that stopped cleanly."""
        with self._w.lock:
            self._kv.forget_worker(worker_id)

    def register_names(self, names: Iterable[str]) -> None:
        """Record task names that a worker can run."""
        with self._w.lock:
            new = self._kv.new_names(names)
        if new:
            self._w.change(Names(new))

    def get_key(self, key: str, now: float) -> str | None:
        """The live value of ``key``."""
        with self._w.lock:
            return self._kv.live(key, now)

    def scan_keys(self, prefix: str, now: float, limit: int = 10_000) -> list[str]:
        """Live keys starting with ``prefix``."""
        with self._w.lock:
            found = self._kv.scan(prefix, now)
        found.sort()
        return found[:limit]

    def read_counts(self, keys: Sequence[str], now: float) -> list[dict[str, float]]:
        """The live count maps ``keys``."""
        with self._w.lock:
            raw = self._kv.read_counts(keys, now)
        return [json.loads(r) if r else {} for r in raw]

    def workers(self, now: float) -> list[dict[str, Any]]:
        """Live workers' last published states."""
        with self._w.lock:
            return self._kv.live_workers(now)

    def known_names(self) -> set[str]:
        """Task names some worker has registered."""
        with self._w.lock:
            return set(self._kv.names)
