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
from dtq_core.backends.redis import fetch_scripts, scripts, sweep
from dtq_core.backends.redis.auth import password_for
from dtq_core.backends.redis.keys import Keys
from dtq_core.backends.redis.kv import KeyValueMixin
from dtq_core.backends.redis.leases import LeaseMixin
from dtq_core.backends.redis.metrics import MetricsMixin
from dtq_core.backends.redis.pages import PageMixin
from dtq_core.backends.redis.queries import QueryMixin
from dtq_core.backends.redis.records import _opt, _s
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
#: Seconds an id's claim by a queue is honoured even though that queue holds no record
#: of it yet (its script is on its way); after that, a claim without a record is stale.
OWNER_GRACE_S = 60.0
S = TaskState
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "")


class RedisBackend(LeaseMixin, PageMixin, QueryMixin, KeyValueMixin, MetricsMixin, Backend):
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

        self._enqueue = reg(scripts.ENQUEUE)
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
        self.r.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None

    def _ensure_queue(self, queue: str, pipe: Any) -> None:
        if queue not in self._known:
            pipe.sadd(self.keys.queues, queue)
            pipe.rpush(self.keys.new_queues, queue)
            pipe.ltrim(self.keys.new_queues, -64, -1)
            self._known.add(queue)

    def _args(self, t: NewTask) -> list[Any]:
        return [
            t.id,
            t.name,
            t.queue,
            t.priority,
            t.payload,
            _opt(t.eta),
            t.max_retries,
            _opt(t.time_limit),
            t.dedup_key or "",
            t.replayed_from or "",
            t.workflow or "",
        ]

    # -- queue -------------------------------------------------------------------------

    def enqueue(self, task: NewTask, now: float) -> list[Transition]:
        """Store a new task (one round trip with its index entry)."""
        return self.enqueue_many([task], now)

    def enqueue_many(self, tasks: Sequence[NewTask], now: float) -> list[Transition]:
        """Store tasks: claim their ids, then one script per queue (two round trips).

        Each id's owner key (its own slot, see :meth:`Keys.owner`) is claimed with
        ``SET NX`` first; an id owned by another queue is refused before anything is
        written (see :meth:`_claim_ids`). The queue scripts then create the records,
        one per queue, all in one pipeline.
        """
        by_q: dict[str, list[NewTask]] = {}
        for t in tasks:
            by_q.setdefault(t.queue, []).append(t)
        self._claim_ids([(t.id, t.queue) for t in tasks], now)
        waits = self._n_waits(by_q)

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q, ts in by_q.items():
                self._ensure_queue(q, pipe)
                argv: list[Any] = [repr(now), self.maxlen]
                for t in ts:
                    argv.extend(self._args(t))
                self._in(pipe, self._enqueue, self.keys.script_keys(q), argv)
            self._wait_replicas(pipe, by_q)
            return pipe.execute()

        # A reply lost to a dropped connection, then a DUP on the retry: it was stored.
        out = self._call(run, idempotent_dup=True)
        if out is not None:
            self._check_waited(out, waits)
        return [Transition(t.id, t.name, t.queue, None, S.PENDING) for t in tasks]

    def _claim_ids(self, ids: Sequence[tuple[str, str]], now: float) -> None:
        """Claim each id's owner key (``<claimed at>|<queue>``) for its queue, or refuse.

        An id already owned by its own queue passes (that queue's script refuses a live
        duplicate, and a retry after a lost reply is recognised). One owned by another
        queue is refused, unless the claim is stale: older than :data:`OWNER_GRACE_S`
        and that queue holds no record of the id (the owner key outlived a purge or an
        expiry that died half way, or a producer died between the claim and its
        script). A stale claim is taken over with a compare-and-set. The grace keeps a
        claim whose script is still on its way from being taken: the id is never held
        by two queues.

        Raises:
            BackendError: An id is held by another queue (nothing was stored).
        """
        mark = f"{now!r}|"

        def claim() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for tid, q in ids:
                pipe.set(self.keys.owner(tid), mark + q, nx=True, get=True)
            return pipe.execute()

        held: list[tuple[str, str, str, str, float]] = []
        for (tid, q), old in zip(ids, self._call(claim), strict=True):
            if old is not None:
                at, _, other = _s(old).partition("|")
                if other != q:
                    held.append((tid, q, other, _s(old), float(at or 0)))
        if not held:
            return

        def check() -> Any:
            # Does the other queue still hold the record? If not, the claim may be stale.
            pipe = self.r.pipeline(transaction=False)
            for tid, _, other, _, _ in held:
                pipe.exists(self.keys.record(other, tid))
            return pipe.execute()

        live: list[tuple[str, str, str, str, float]] = []
        stale: list[tuple[str, str, str, str, float]] = []
        for h, there in zip(held, self._call(check), strict=True):
            (live if there or now - h[4] < OWNER_GRACE_S else stale).append(h)
        if stale:

            def take() -> Any:
                pipe = self.r.pipeline(transaction=False)
                for tid, q, _, raw, _ in stale:
                    self._in(pipe, self._owner_take, [self.keys.owner(tid)], [raw, mark + q])
                return pipe.execute()

            live += [h for h, ok in zip(stale, self._call(take), strict=True) if not int(ok)]
        if live:
            refused = {h[0] for h in live}
            self._release_ids([(tid, q) for tid, q in ids if tid not in refused])
            tid, q, other = live[0][:3]
            raise BackendError(
                f"task id {tid!r} exists in queue {other!r}: a task id is unique across "
                f"queues (refused for queue {q!r})"
            )

    def _release_ids(self, ids: Sequence[tuple[str, str]]) -> None:
        """Delete the owner keys of ``ids`` that their queue still owns (one pipeline)."""
        if not ids:
            return

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for tid, q in ids:
                self._in(pipe, self._owner_release, [self.keys.owner(tid)], [q])
            return pipe.execute()

        self._call(run)

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
        self, task_id: str, new_task: NewTask, edit: dict[str, Any] | None, now: float
    ) -> list[Transition]:
        """Enqueue ``new_task`` as the replay of dead ``task_id`` (same queue)."""
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
                ],
            )
            return pipe.execute()

        try:
            self._call(run)
        except TaskNotFound:
            self._release_ids([(new_task.id, q)])
            raise
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
