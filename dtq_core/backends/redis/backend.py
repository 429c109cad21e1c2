"""The Redis backend: ``redis://[:password@]host:port/db[?prefix=dtq]`` (``rediss://``: TLS).

The password may also come from ``?password_file=PATH`` or ``DTQ_REDIS_PASSWORD`` (see
:mod:`.auth`); it never appears in an output: URLs are shown redacted and every error
message is scrubbed of it.

``redis+cluster://[:password@]host:port[?prefix=dtq]`` (``rediss+cluster://``: TLS) is a
Redis Cluster reached from one seed node: every script touches one slot (a queue's keys
share its hash tag) and what spans queues is read by fan-out (see ``keys.py``).
``?wait_replicas=N`` makes enqueues and acks wait for N replicas (``WAIT``).

Every task state change is one Lua script on its queue's slot (nothing is ever popped
into client memory only): claims lease tasks in a sorted set by deadline; acks carry the
lease token; expired leases are reclaimed by any worker; delayed tasks and retries wait
in a sorted set by due time. Durability is bounded by Redis persistence: with AOF
``appendfsync always`` nothing acknowledged is lost.

Connection loss: calls are retried with backoff for up to ``retry_s`` seconds (a Redis
restart is survived) and then raise :class:`BackendUnavailable`.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from dtq_core.backends.base import Backend, Capabilities, NewTask, Transition
from dtq_core.backends.redis import enqueue_scripts, fetch_scripts, scripts, sweep
from dtq_core.backends.redis.auth import password_for
from dtq_core.backends.redis.enqueue import EnqueueMixin
from dtq_core.backends.redis.keys import Keys
from dtq_core.backends.redis.kv import KeyValueMixin
from dtq_core.backends.redis.lane import Lane
from dtq_core.backends.redis.leases import LeaseMixin
from dtq_core.backends.redis.metrics import MetricsMixin
from dtq_core.backends.redis.pages import PageMixin
from dtq_core.backends.redis.queries import QueryMixin
from dtq_core.backends.redis.records import _s
from dtq_core.backends.redis.tally import Tally
from dtq_core.backends.redis.urls import (
    _LazyCluster,
    parse_url,
    split_cluster,
)
from dtq_core.clock import SYSTEM_CLOCK, Clock
from dtq_core.errors import BackendError, ConfigError, TaskNotFound
from dtq_core.redact import redact_text, redact_url
from dtq_core.task import TaskState

log = logging.getLogger("dtq.redis")
S = TaskState
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "")


class RedisBackend(
    EnqueueMixin, LeaseMixin, PageMixin, QueryMixin, KeyValueMixin, MetricsMixin, Backend
):
    """Queues, leases, dead letters and keys in Redis, shared by every process."""

    capabilities = Capabilities(
        durable=True, cross_process=True, blocking_claim=True, batch_acks=True
    )

    def __init__(self, url: str, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(url, clock)
        try:
            import redis
        except ImportError:
            raise ConfigError(
                "the redis backend needs the redis package: pip install -e '.[redis]' in a "
                "source checkout (pip install 'dtq[redis]' from an index)"
            ) from None
        self._redis_mod = redis
        base, self.cluster = split_cluster(url)
        plain, ours = parse_url(base)
        shown = redact_url(url)
        self.keys = Keys(ours.get("prefix", "dtq"))
        self._listed: set[str] = set()  # queues whose listing set is known complete
        try:
            self.maxlen = int(ours.get("maxlen", "10000"))
            self.retry_s = float(ours.get("retry_s", "30"))
            self.wait_replicas = int(ours.get("wait_replicas", "0"))
        except ValueError:
            raise ConfigError(
                f"bad redis URL {shown!r}: maxlen and wait_replicas must be whole numbers and "
                "retry_s a number of seconds"
            ) from None
        if self.maxlen < 1 or self.retry_s < 0 or self.wait_replicas < 0:
            raise ConfigError(
                f"bad redis URL {shown!r}: maxlen must be >= 1, retry_s >= 0 and wait_replicas >= 0"
            )
        parts = urlsplit(plain)
        given = unquote(parts.password) if parts.password else None
        password = password_for(given, ours.get("password_file"))
        #: The URL as every output shows it (password masked).
        self.safe_url = shown
        #: Texts never shown: server replies may echo the password.
        self.secrets = tuple(p for p in (password, parts.password) if p)
        if parts.hostname not in _LOOPBACK and not password:
            log.warning(
                "redis URL %s has no password and is not on loopback: anyone who reaches "
                "that port controls your queues",
                parts.hostname,
            )
        try:
            extra: dict[str, Any] = {} if parts.password or not password else {"password": password}
            self.r: Any = self._connect(redis, plain, extra)
            self._lane = None if self.cluster else Lane(self.r)
        except ValueError as exc:
            raise ConfigError(
                f"bad redis URL {shown!r}: {redact_text(str(exc), self.secrets)}"
            ) from None
        self._scripts = []

        def reg(text: str) -> Any:
            # Script(), not register_script(): the lazy cluster client is not made here.
            script = redis.commands.core.Script(self.r, text)
            self._scripts.append(script)
            return script

        self._enqueue = reg(enqueue_scripts.ENQUEUE)
        self._enqueue_one = reg(enqueue_scripts.ENQUEUE_ONE)
        self._claim = reg(fetch_scripts.CLAIM)
        self._idle = reg(fetch_scripts.IDLE)
        self._ack_many = reg(fetch_scripts.ACK_MANY)
        self._fail = reg(scripts.FAIL)
        self._bury = reg(scripts.BURY)
        self._release = reg(scripts.RELEASE)
        self._extend = reg(scripts.EXTEND)
        self._reclaim = reg(scripts.RECLAIM)
        self._promote = reg(scripts.PROMOTE)
        self._cancel = reg(scripts.CANCEL)
        self._expire = reg(scripts.EXPIRE)
        self._replay = reg(scripts.REPLAY)
        self._purge = reg(scripts.PURGE)
        self._sweep = reg(sweep.SWEEP)
        self._reserve = reg(scripts.RESERVE)
        self._cas = reg(scripts.CAS)
        self._kv_get = reg(scripts.KV_GET)
        self._kv_setnx = reg(scripts.KV_SETNX)
        self._kv_set = reg(scripts.KV_SET)
        self._add_counts_script = reg(scripts.ADD_COUNTS)
        self._owner_take = reg(scripts.OWNER_TAKE)
        self._owner_release = reg(scripts.OWNER_RELEASE)
        self._kv_del = reg(scripts.KV_DEL)
        self._queues_cache: tuple[float, list[str]] = (0.0, [])
        self._known: set[str] = set()
        self._lane_heads: dict[str, tuple[str | int, ...]] = {}
        # The single enqueue's `enqueued` counts, added in batches (one Redis: see tally).
        self._tally = None if self._lane is None else Tally(self._add_enqueued)
        self._lock = threading.Lock()
        # task id -> (queue, name) of tasks this process claimed: saves the index lookup
        # on ack/fail and names their transitions.
        self._claimed: dict[str, tuple[str, str]] = {}
        self._claimed_by: dict[str, tuple[str, int]] = {}
        self.connected = True

    def _connect(self, redis: Any, plain: str, extra: dict[str, Any]) -> Any:
        """A client of one Redis, or of a Redis Cluster reached from its seed node.

        The cluster client is built lazily: it asks the seed node for the slot map on
        the first command, so an unreachable cluster fails like an unreachable Redis
        (within ``retry_s``), not in this constructor.
        """
        opts: dict[str, Any] = {"socket_timeout": 10, "socket_connect_timeout": 5, **extra}
        if not self.cluster:
            return redis.Redis.from_url(plain, health_check_interval=15, **opts)
        return _LazyCluster(redis, plain, opts)

    # -- plumbing ----------------------------------------------------------------------

    def ping(self) -> float:
        """Round-trip time (seconds); :class:`BackendUnavailable` when down."""
        t0 = time.perf_counter()
        self._call(self.r.ping, retry=False)
        return time.perf_counter() - t0

    def info(self) -> dict[str, Any]:
        """Server facts for the snapshot (on a cluster: the seed's, and the masters)."""
        try:
            i = self._call(lambda: self.r.info("server"), retry=False)
            p = self._call(lambda: self.r.info("persistence"), retry=False)
        except BackendError:
            return {"connected": False}
        out = {
            "connected": True,
            "redis_version": i.get("redis_version"),
            "aof_enabled": bool(p.get("aof_enabled")),
            "prefix": self.keys.prefix,
        }
        if self.cluster:
            out["cluster_masters"] = len(self.r.get_primaries())
        return out

    def close(self) -> None:
        """Close the connection pool (and the threads of cluster waits)."""
        if self._tally is not None:
            self._tally.close()
        if self._lane is not None:
            self._lane.close()
        self.r.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    # -- queue -------------------------------------------------------------------------

    def reclaim_expired(self, now: float, max_deliveries: int) -> list[Transition]:
        """Requeue expired leases in every queue; DEAD (worker_lost) past the limit."""
        out = []
        for q, rows in self._per_queue(
            self._reclaim, [repr(now), max_deliveries, 1000, self.maxlen]
        ):
            for tid, name, new in rows:
                st = TaskState(_s(new))
                note = "worker_lost" if st is S.DEAD else "lease expired: requeued"
                out.append(Transition(_s(tid), _s(name), q, S.RUNNING, st, note))
        return out

    def promote_due(self, now: float, limit: int = 1000) -> list[Transition]:
        """Move due delayed tasks into their queues."""
        out = []
        for q, rows in self._per_queue(self._promote, [repr(now), limit, self.maxlen]):
            for tid, name, was_retry in rows:
                if int(was_retry):
                    out.append(Transition(_s(tid), _s(name), q, S.RETRY, S.PENDING))
        return out

    def next_due(self) -> float | None:
        """Earliest due time over every queue's delayed set."""
        names = self._known_queues()
        if not names:
            return None

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q in names:
                pipe.zrange(self.keys.queue(q)["delayed"], 0, 0, withscores=True)
            return pipe.execute()

        heads = [rows[0][1] for rows in self._call(run) if rows]
        return min(heads) if heads else None

    def cancel(self, task_id: str, now: float) -> list[Transition]:
        """PENDING/RETRY -> CANCELLED."""
        where = self._where(task_id)
        if where is None:
            return []
        q = where[0]
        old = self._call(
            lambda: self._cancel(
                keys=self.keys.script_keys(q),
                args=[task_id, repr(now), repr(now + self.result_ttl), self.maxlen],
            )
        )
        if not _s(old):
            return []
        return [Transition(task_id, where[1], q, TaskState(_s(old)), S.CANCELLED, "cancelled")]

    def set_paused(self, queue: str, paused: bool) -> None:
        """Pause (no claims anywhere) or resume a queue."""
        k = self.keys.queue(queue)

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            pipe.sadd(self.keys.queues, queue)
            if paused:
                pipe.set(k["paused"], 1)
            else:
                pipe.delete(k["paused"])
                pipe.rpush(k["notify"], 1)
            return pipe.execute()

        self._call(run)

    # -- records -----------------------------------------------------------------------

    def expire(self, now: float) -> int:
        """Drop finished records past their TTL in every queue."""
        ids: list[tuple[str, str]] = []
        for q, rows in self._per_queue(self._expire, [repr(now), 1000, self.max_results]):
            ids.extend((_s(i), q) for i in rows)
        self._release_ids(ids)
        return len(ids)

    def sweep_orphans(self, now: float) -> list[tuple[str, str]]:
        """Put back, or dead-letter, records that sit in no structure (see ``sweep``)."""
        return sweep.sweep_orphans(self, now)

    # -- dead letters ------------------------------------------------------------------

    def replay(
        self,
        task_id: str,
        new_task: NewTask,
        edit: dict[str, Any] | None,
        now: float,
        after: int | None = None,
    ) -> list[Transition]:
        """Enqueue ``new_task`` as the replay of dead ``task_id`` (same queue).

        ``after`` is checked by the script, atomically with the write (see the protocol).
        """
        q = self._q(task_id)
        if q is None:
            raise TaskNotFound(f"no dead task {task_id!r}")
        new_task.queue = q
        self._claim_ids([(new_task.id, q)], now)

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            self._in(
                pipe,
                self._replay,
                self.keys.script_keys(q),
                [
                    task_id,
                    json.dumps(edit) if edit else "",
                    repr(now),
                    self.maxlen,
                    *self._args(new_task),
                    "" if after is None else after,
                ],
            )
            return pipe.execute()

        try:
            out = self._call(run)
        except TaskNotFound:
            self._release_ids([(new_task.id, q)])
            raise
        if out is not None and int(out[0]) == 0:  # replayed by someone else meanwhile
            self._release_ids([(new_task.id, q)])
            return []
        return [Transition(new_task.id, new_task.name, q, None, S.PENDING)]

    def purge(self, task_ids: Sequence[str]) -> int:
        """Delete dead records."""
        if not task_ids:
            return 0
        by_q: dict[str, list[str]] = {}
        for tid, q in zip(task_ids, self._qs(task_ids), strict=True):
            if q is not None:
                by_q.setdefault(q, []).append(tid)
        n = 0
        for q, ids in by_q.items():
            keys = self.keys.script_keys(q)
            done = self._call(functools.partial(self._purge, keys=keys, args=ids))
            self._release_ids([(_s(i), q) for i in done])
            n += len(done)
        return n

    # -- lifecycle -----------------------------------------------------------------------

    def wakeup(self) -> None:
        """Wake claimers blocked on notify lists (ours stop at their timeout anyway)."""
