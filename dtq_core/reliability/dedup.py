"""Deduplication: a duplicate inside the window answers with the original task.

The key is ``dedup_key=`` per call, or derived from the task name and arguments when the
task option ``dedup=True``. The exact map (backend keys with a TTL, shared by every
process, durable on the embedded store and Redis) always decides, with one atomic
set-if-absent, so neither a bloom false positive nor a restart can drop a new task or
let a duplicate through. A rotating bloom filter beside it (rebuilt from the map at
start) gives the console the filter's fill ratio and false-positive estimate; it does
not save the lookup, because in a shared store only the map knows other producers' keys.
"""

from __future__ import annotations

import hashlib
import threading
from typing import TYPE_CHECKING, Any

from dtq_core.backends.base import NewTask
from dtq_core.codec import decode_message, dumps
from dtq_core.hooks import Hook
from dtq_core.reliability.bloom import RotatingBloom
from dtq_core.snapshot import DedupSnapshot

if TYPE_CHECKING:
    from dtq_core.broker import Broker

#: Prefix of the backend keys of the exact map.
PREFIX = "dtq:dd:"


def derive_key(name: str, args: Any, kwargs: Any) -> str:
    """A key from the task name and its arguments (canonical JSON, hashed)."""
    raw = dumps([name, args, sorted((kwargs or {}).items())])
    return f"{name}:{hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()}"


class DedupHook(Hook):
    """Drops duplicates at enqueue (options ``dedup``, ``dedup_ttl``)."""

    options = frozenset({"dedup", "dedup_ttl"})

    def __init__(self) -> None:
        # The bloom filter is not thread-safe; producers' threads and snapshots share it.
        self._lock = threading.Lock()
        self.bloom: RotatingBloom | None = None
        self.dropped = 0
        self.keys = 0
        self.fresh = 0
        self.ttl = 3600.0

    def attach(self, broker: Broker) -> None:
        """Size the bloom filter from the broker config."""
        cfg = broker.config
        self.ttl = cfg.dedup_ttl
        self.bloom = RotatingBloom(cfg.dedup_capacity, cfg.dedup_error_rate, cfg.dedup_ttl)
        now = broker.clock.now()
        for k in broker.backend.scan_keys(PREFIX, now, cfg.dedup_capacity):
            with self._lock:
                self.bloom.add(k[len(PREFIX) :], now)  # keys live in the store survive a restart

    def before_enqueue(self, broker: Broker, task: NewTask, options: dict[str, Any]) -> str | None:
        """Return the original task id for a duplicate."""
        key = task.dedup_key
        if key is None:
            if not options.get("dedup"):
                return None
            msg = decode_message(task.payload)
            key = task.dedup_key = derive_key(task.name, msg["args"], msg["kwargs"])
        ttl = float(options.get("dedup_ttl", self.ttl))
        now = broker.clock.now()
        bloom = self.bloom
        assert bloom is not None
        with self._lock:
            if not bloom.might_contain(key, now):
                self.fresh += 1  # the filter's "never seen here"; the exact map decides
        existing = broker.backend.set_if_absent(PREFIX + key, task.id, ttl, now)
        with self._lock:
            bloom.add(key, now)
        # Our own id: an earlier try of this write was stored and its reply lost (a
        # resent call after a Redis reconnect or an embedded owner's failover). The task
        # is not a duplicate of itself.
        if existing is None or existing == task.id:
            with self._lock:
                self.keys += 1
            return None
        with self._lock:
            self.dropped += 1
        broker.metrics.incr("deduped")
        return existing

    def snapshot(self, broker: Broker) -> dict[str, Any]:
        """``dedup``: keys, filter fill ratio and estimated false-positive rate."""
        if self.bloom is None:
            return {}
        now = broker.clock.now()
        with self._lock:
            return {
                "dedup": DedupSnapshot(
                    keys=self.keys,
                    capacity=self.bloom.capacity,
                    fill_ratio=self.bloom.fill_ratio(now),
                    est_fp_rate=self.bloom.estimated_fp_rate(now),
                    dropped=self.dropped,
                    ttl_s=self.ttl,
                )
            }
