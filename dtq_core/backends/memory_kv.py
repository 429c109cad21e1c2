"""Keys, counters and workers of the in-memory backend, as a mixin of its class."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from typing import Any


class KeyValueMixin:
    """Keys with TTLs, GCRA reservations, worker heartbeats and registered task names.

    Mixed into :class:`~dtq_core.backends.memory.MemoryBackend`, which creates the state
    (``_lock``, ``_kv``, ``_workers``, ``_names``) in its constructor.
    """

    _lock: threading.Lock | threading.RLock
    _kv: dict[str, tuple[str, float | None]]
    _workers: dict[str, tuple[dict[str, Any], float]]
    _names: set[str]

    # -- keys and counters -------------------------------------------------------------

    def _live(self, key: str, now: float) -> str | None:
        item = self._kv.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= now:
            del self._kv[key]
            return None
        return item[0]

    def set_if_absent(self, key: str, value: str, ttl_s: float, now: float) -> str | None:
        """Set ``key`` unless a live value exists; return the existing value if any."""
        with self._lock:
            old = self._live(key, now)
            if old is None:
                self._kv[key] = (value, now + ttl_s)
            return old

    def get_key(self, key: str, now: float) -> str | None:
        """The live value of ``key``."""
        with self._lock:
            return self._live(key, now)

    def set_key(self, key: str, value: str, ttl_s: float | None, now: float) -> None:
        """Set ``key`` unconditionally."""
        with self._lock:
            self._kv[key] = (value, None if ttl_s is None else now + ttl_s)

    def delete_key(self, key: str) -> None:
        """Remove ``key``."""
        with self._lock:
            self._kv.pop(key, None)

    def compare_and_set(
        self, key: str, expected: str | None, value: str, ttl_s: float | None, now: float
    ) -> bool:
        """Set ``key`` to ``value`` only if its live value is ``expected``."""
        with self._lock:
            if self._live(key, now) != expected:
                return False
            self._kv[key] = (value, None if ttl_s is None else now + ttl_s)
            return True

    def scan_keys(self, prefix: str, now: float, limit: int = 10_000) -> list[str]:
        """Live keys starting with ``prefix``."""
        with self._lock:
            # list(): _live() deletes an expired key, which would break a live iteration
            keys = [k for k in list(self._kv) if k.startswith(prefix)]
            found = [k for k in keys if self._live(k, now) is not None]
        found.sort()
        return found[:limit]

    def add_counts(
        self,
        key: str,
        incr: dict[str, float],
        maxima: dict[str, float],
        ttl_s: float | None,
        now: float,
    ) -> None:
        """Add to a count map (kept as JSON in the key space, so it is checkpointed)."""
        with self._lock:
            old = self._live(key, now)
            counts: dict[str, float] = json.loads(old) if old else {}
            for f, v in incr.items():
                counts[f] = counts.get(f, 0) + v
            for f, v in maxima.items():
                if v > counts.get(f, float("-inf")):
                    counts[f] = v
            self._kv[key] = (
                json.dumps(counts, separators=(",", ":")),
                None if ttl_s is None else now + ttl_s,
            )

    def read_counts(self, keys: Sequence[str], now: float) -> list[dict[str, float]]:
        """The live count maps ``keys``."""
        with self._lock:
            raw = [self._live(k, now) for k in keys]
        return [json.loads(r) if r else {} for r in raw]

    def reserve(self, key: str, rate: float, burst: int, now: float) -> float:
        """GCRA token bucket: reserve one token; return the seconds to wait."""
        interval = 1.0 / rate
        with self._lock:
            raw = self._live(key, now)
            tat = max(float(raw) if raw is not None else now, now)
            wait = max(0.0, tat - now - (burst - 1) * interval)
            new_tat = tat + interval
            self._kv[key] = (repr(new_tat), new_tat + 1.0)
            return wait

    # -- workers -----------------------------------------------------------------------

    def heartbeat(self, worker_id: str, info: dict[str, Any], now: float, ttl_s: float) -> None:
        """Publish a worker's state."""
        with self._lock:
            self._workers[worker_id] = (info, now + ttl_s)

    def workers(self, now: float) -> list[dict[str, Any]]:
        """Live workers' last published states."""
        with self._lock:
            for wid in [w for w, (_, exp) in self._workers.items() if exp <= now]:
                del self._workers[wid]
            return [dict(info) for info, _ in self._workers.values()]

    def forget_worker(self, worker_id: str) -> None:
        """Remove a worker that stopped cleanly."""
        with self._lock:
            self._workers.pop(worker_id, None)

    def register_names(self, names: Iterable[str]) -> None:
        """Record task names that a worker can run."""
        with self._lock:
            self._names.update(names)

    def known_names(self) -> set[str]:
        """Task names some worker has registered."""
        with self._lock:
            return set(self._names)
