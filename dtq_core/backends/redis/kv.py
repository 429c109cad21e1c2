"""Keys, counters and workers of the Redis backend, as a mixin of its class."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from typing import Any

from dtq_core.backends.redis.client import RedisClient
from dtq_core.backends.redis.keys import KV_BUCKETS, kv_bucket, namespace
from dtq_core.backends.redis.records import _opt, _s

__all__ = ["KeyValueMixin", "namespace"]


class KeyValueMixin(RedisClient):
    """Keys with TTLs, GCRA reservations, worker heartbeats and registered task names.

    All are shared by every process; key TTLs are checked by scripts on the injected
    clock. The generic keys of a namespace are spread over :data:`KV_BUCKETS` hash tags
    (slots), each bucket with a sorted set of its keys by expiry in the same slot,
    written by the key's own script: :meth:`scan_keys` reads the buckets' sets (one
    pipeline) instead of scanning the whole keyspace, which on a shared Redis may hold
    millions of keys, and nothing is written across slots.
    Mixed into :class:`~dtq_core.backends.redis.backend.RedisBackend`, which registers
    the scripts in its constructor.
    """

    _kv_get: Any
    _kv_setnx: Any
    _kv_set: Any
    _kv_del: Any
    _cas: Any
    _reserve: Any
    _add_counts_script: Any

    # -- keys and counters -------------------------------------------------------------

    def _indexed(self, key: str, script: Any, args: list[Any]) -> Any:
        """Run a key's write script, which indexes the key in its bucket too."""
        ns = namespace(key)
        keys = [self.keys.kv(key)]
        if ns:
            keys.append(self.keys.kv_index(ns, kv_bucket(key)))
        return self._call(functools.partial(script, keys=keys, args=[*args, key]))

    def set_if_absent(self, key: str, value: str, ttl_s: float, now: float) -> str | None:
        """Set unless a live value exists; return the existing value if any."""
        old = self._indexed(key, self._kv_setnx, [value, repr(now), repr(ttl_s)])
        return _s(old) if old is not None else None

    def get_key(self, key: str, now: float) -> str | None:
        """The live value of ``key``."""
        v = self._call(functools.partial(self._kv_get, keys=[self.keys.kv(key)], args=[repr(now)]))
        return _s(v) if v is not None else None

    def set_key(self, key: str, value: str, ttl_s: float | None, now: float) -> None:
        """Set ``key``."""
        self._indexed(key, self._kv_set, [value, repr(now), _opt(ttl_s)])

    def add_counts(
        self,
        key: str,
        incr: dict[str, float],
        maxima: dict[str, float],
        ttl_s: float | None,
        now: float,
    ) -> None:
        """Add to a count map: one script on one key (a Redis hash)."""
        args: list[Any] = [_opt(ttl_s), len(incr)]
        for f, v in incr.items():
            args += [f, repr(float(v))]
        for f, v in maxima.items():
            args += [f, repr(float(v))]
        self._call(functools.partial(self._add_counts_script, keys=[self.keys.kv(key)], args=args))

    def read_counts(self, keys: Sequence[str], now: float) -> list[dict[str, float]]:
        """Count maps, read in one pipeline."""
        if not keys:
            return []

        def read() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for k in keys:
                pipe.hgetall(self.keys.kv(k))
            return pipe.execute()

        return [{_s(f): float(v) for f, v in h.items()} for h in self._call(read)]

    def delete_key(self, key: str) -> None:
        """Remove ``key``."""
        ns = namespace(key)
        if not ns:
            self._call(functools.partial(self.r.delete, self.keys.kv(key)))
            return
        index = self.keys.kv_index(ns, kv_bucket(key))
        self._call(functools.partial(self._kv_del, keys=[self.keys.kv(key), index], args=[key]))

    def compare_and_set(
        self, key: str, expected: str | None, value: str, ttl_s: float | None, now: float
    ) -> bool:
        """Atomic compare-and-set (a script)."""
        has = "0" if expected is None else "1"
        args = [has, expected or "", value, repr(now), _opt(ttl_s)]
        return bool(self._indexed(key, self._cas, args))

    def scan_keys(self, prefix: str, now: float, limit: int = 10_000) -> list[str]:
        """Live keys starting with ``prefix`` (from the indexes of the namespace's buckets)."""
        ns = namespace(prefix)
        if not ns:
            return self._verify(self._scan_names(prefix), now)[:limit]
        idxs = [self.keys.kv_index(ns, b) for b in range(KV_BUCKETS)]

        def read() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for idx in idxs:
                pipe.zremrangebyscore(idx, "-inf", f"({now!r}")
                pipe.zrangebyscore(idx, repr(now), "+inf")
            return pipe.execute()

        got = self._call(read)
        names = sorted(
            n for members in got[1::2] for n in (_s(m) for m in members) if n.startswith(prefix)
        )
        live = self._verify(names, now)
        dead = set(names) - set(live)
        if dead:

            def prune() -> Any:
                pipe = self.r.pipeline(transaction=False)
                for n in dead:
                    pipe.zrem(self.keys.kv_index(ns, kv_bucket(n)), n)
                return pipe.execute()

            self._call(prune)
        return live[:limit]

    def _scan_names(self, prefix: str) -> list[str]:
        """Generic key names starting with ``prefix``, by a scan of the keyspace.

        Only for a prefix with no namespace (no index to read): the keys of every
        namespace and bucket carry ``{prefix:kv:`` before their name's tag ends.
        """
        found = self._call(functools.partial(self._scan, self.keys.kv_pattern()))
        names = (_s(k).partition("}")[2] for k in found)
        return sorted(n for n in names if n.startswith(prefix))

    def _verify(self, names: list[str], now: float) -> list[str]:
        """The names whose keys hold a live value."""
        if not names:
            return []

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for n in names:
                self._in(pipe, self._kv_get, [self.keys.kv(n)], [repr(now)])
            return pipe.execute()

        return [n for n, v in zip(names, self._call(run), strict=True) if v is not None]

    def reserve(self, key: str, rate: float, burst: int, now: float) -> float:
        """GCRA reserve, shared by every worker."""
        return float(
            self._call(
                lambda: self._reserve(keys=[self.keys.kv(key)], args=[repr(rate), burst, repr(now)])
            )
        )

    # -- workers -------------------------------------------------------------------------

    def heartbeat(self, worker_id: str, info: dict[str, Any], now: float, ttl_s: float) -> None:
        """Publish a worker's state."""

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            pipe.hset(self.keys.workers, worker_id, json.dumps(info))
            pipe.zadd(self.keys.workers_seen, {worker_id: now + ttl_s})
            return pipe.execute()

        self._call(run)

    def workers(self, now: float) -> list[dict[str, Any]]:
        """Live workers (expired ones are removed)."""

        def run() -> Any:
            dead = self.r.zrangebyscore(self.keys.workers_seen, "-inf", repr(now))
            pipe = self.r.pipeline(transaction=False)
            if dead:
                pipe.zrem(self.keys.workers_seen, *dead)
                pipe.hdel(self.keys.workers, *dead)
            pipe.hgetall(self.keys.workers)
            return pipe.execute()[-1]

        return [json.loads(v) for v in self._call(run).values()]

    def forget_worker(self, worker_id: str) -> None:
        """Remove a worker that stopped cleanly."""

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            pipe.hdel(self.keys.workers, worker_id)
            pipe.zrem(self.keys.workers_seen, worker_id)
            return pipe.execute()

        self._call(run)

    def register_names(self, names: Iterable[str]) -> None:
        """Record task names workers can run."""
        names = list(names)
        if names:
            self._call(lambda: self.r.sadd(self.keys.names, *names))

    def known_names(self) -> set[str]:
        """Task names some worker has registered."""
        return {_s(n) for n in self._call(lambda: self.r.smembers(self.keys.names))}
