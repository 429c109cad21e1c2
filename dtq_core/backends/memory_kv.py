"""Keys, worker heartbeats and task names of the in-memory state machine.

:class:`KeyValueStore` owns them. Like :class:`~dtq_core.backends.memory_tasks.TaskTable`
it never locks; its owner calls it with its lock held. Key changes reach it as
:class:`~dtq_core.backends.changes.KeySet` and
:class:`~dtq_core.backends.changes.KeyDelete` records (the embedded store logs them);
heartbeats are not logged: a restarted store learns its workers again from their next
beat.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from dtq_core.backends.changes import KeyDelete, KeySet, Names

#: Seconds between sweeps of expired keys (otherwise dropped when read).
SWEEP_S = 60.0


class KeyValueStore:
    """Keys with expiry times, worker heartbeats and registered task names."""

    def __init__(self) -> None:
        #: key -> (value, expiry time or ``None``)
        self.kv: dict[str, tuple[str, float | None]] = {}
        #: worker id -> (published info, expiry time)
        self.workers: dict[str, tuple[dict[str, Any], float]] = {}
        self.names: set[str] = set()
        self._swept = 0.0

    # -- changes -------------------------------------------------------------------------

    def set(self, c: KeySet) -> bool:
        """Apply a :class:`KeySet`."""
        self.kv[c.key] = (c.value, c.expires_at)
        return True

    def delete(self, c: KeyDelete) -> bool:
        """Apply a :class:`KeyDelete`; always a change (it is logged even when absent)."""
        self.kv.pop(c.key, None)
        return True

    def add_names(self, c: Names) -> bool:
        """Apply a :class:`Names`."""
        self.names.update(c.names)
        return True

    # -- reads (an expired key is dropped when read) -------------------------------------

    def live(self, key: str, now: float) -> str | None:
        """The value of ``key`` unless it expired."""
        item = self.kv.get(key)
        if item is None:
            return None
        if item[1] is not None and item[1] <= now:
            del self.kv[key]
            return None
        return item[0]

    def scan(self, prefix: str, now: float) -> list[str]:
        """Live keys starting with ``prefix``, unsorted."""
        # list(): live() deletes an expired key, which would break a live iteration
        keys = [k for k in list(self.kv) if k.startswith(prefix)]
        return [k for k in keys if self.live(k, now) is not None]

    def sweep(self, now: float) -> None:
        """Drop expired keys, at most once a minute."""
        if now - self._swept >= SWEEP_S:
            self._swept = now
            for key in list(self.kv):
                self.live(key, now)

    # -- values computed from the current one --------------------------------------------

    def counts_after(
        self, key: str, incr: dict[str, float], maxima: dict[str, float], now: float
    ) -> str:
        """The JSON count map of ``key`` after adding ``incr`` and raising to ``maxima``."""
        old = self.live(key, now)
        counts: dict[str, float] = json.loads(old) if old else {}
        for f, v in incr.items():
            counts[f] = counts.get(f, 0) + v
        for f, v in maxima.items():
            if v > counts.get(f, float("-inf")):
                counts[f] = v
        return json.dumps(counts, separators=(",", ":"))

    def read_counts(self, keys: Sequence[str], now: float) -> list[str | None]:
        """The raw count maps of ``keys``."""
        return [self.live(k, now) for k in keys]

    def reservation(self, key: str, rate: float, burst: int, now: float) -> tuple[float, KeySet]:
        """GCRA token bucket: the wait for one token, and the bucket's new state."""
        interval = 1.0 / rate
        raw = self.live(key, now)
        tat = max(float(raw) if raw is not None else now, now)
        wait = max(0.0, tat - now - (burst - 1) * interval)
        new_tat = tat + interval
        return wait, KeySet(key, repr(new_tat), new_tat + 1.0)

    # -- workers -------------------------------------------------------------------------

    def heartbeat(self, worker_id: str, info: dict[str, Any], expires_at: float) -> None:
        """Publish a worker's state until ``expires_at``."""
        self.workers[worker_id] = (info, expires_at)

    def live_workers(self, now: float) -> list[dict[str, Any]]:
        """Copies of the live workers' states (the expired ones are dropped)."""
        for wid in [w for w, (_, exp) in self.workers.items() if exp <= now]:
            del self.workers[wid]
        return [dict(info) for info, _ in self.workers.values()]

    def forget_worker(self, worker_id: str) -> None:
        """Remove a worker that stopped cleanly."""
        self.workers.pop(worker_id, None)

    def new_names(self, names: Iterable[str]) -> list[str]:
        """Of ``names``, those not registered yet, sorted."""
        return sorted(set(names) - self.names)
