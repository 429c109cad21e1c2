"""The Redis backend: ``redis://[:password@]host:port/db[?prefix=dtq]`` (``rediss://``: TLS).

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
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from dtq_core.backends.base import (
    Backend,
    Capabilities,
    Delivery,
    NewTask,
    QueueStats,
    Transition,
)
from dtq_core.backends.redis import scripts
from dtq_core.backends.redis.keys import Keys
from dtq_core.clock import SYSTEM_CLOCK, Clock
from dtq_core.errors import BackendError, BackendUnavailable, ConfigError, TaskNotFound
from dtq_core.filters import TaskFilter
from dtq_core.task import Attempt, ErrorInfo, TaskRecord, TaskState

log = logging.getLogger("dtq.redis")
S = TaskState
R = TypeVar("R")
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "")


def _s(v: bytes | str | None) -> str:
    if v is None:
        return ""
    return v.decode() if isinstance(v, bytes) else v


def _f(v: bytes | str | None) -> float | None:
    s = _s(v)
    return float(s) if s else None


def _opt(v: Any) -> str:
    return "" if v is None else repr(v) if isinstance(v, float) else str(v)


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Split our options (prefix, maxlen, retry_s) from the redis-py URL."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for k, vals in parse_qs(parts.query).items():
        if k in ("prefix", "maxlen", "retry_s"):
            ours[k] = vals[-1]
        else:
            theirs.extend((k, v) for v in vals)
    return urlunsplit(parts._replace(query=urlencode(theirs))), ours


class RedisBackend(Backend):
    """Queues, leases, dead letters and keys in Redis, shared by every process."""

    capabilities = Capabilities(durable=True, cross_process=True, blocking_claim=True)

    def __init__(self, url: str, clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(url, clock)
        try:
            import redis
        except ImportError:
            raise ConfigError(
                "the redis backend needs the redis package: pip install 'dtq[redis]'"
            ) from None
        self._redis_mod = redis
        plain, ours = parse_url(url)
        self.keys = Keys(ours.get("prefix", "dtq"))
        self.maxlen = int(ours.get("maxlen", "10000"))
        self.retry_s = float(ours.get("retry_s", "30"))
        parts = urlsplit(plain)
        if parts.hostname not in _LOOPBACK and not parts.password:
            log.warning(
                "redis URL %s has no password and is not on loopback: anyone who reaches "
                "that port controls your queues",
                parts.hostname,
            )
        try:
            self.r: Any = redis.Redis.from_url(
                plain, socket_timeout=10, socket_connect_timeout=5, health_check_interval=15
            )
        except ValueError as exc:
            raise ConfigError(f"bad redis URL {url!r}: {exc}") from None
        reg = self.r.register_script
        self._enqueue = reg(scripts.ENQUEUE)
        self._claim = reg(scripts.CLAIM)
        self._ack = reg(scripts.ACK)
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
        self._reserve = reg(scripts.RESERVE)
        self._cas = reg(scripts.CAS)
        self._kv_get = reg(scripts.KV_GET)
        self._kv_setnx = reg(scripts.KV_SETNX)
        self._kv_set = reg(scripts.KV_SET)
        self._queues_cache: tuple[float, list[str]] = (0.0, [])
        self._known: set[str] = set()
        self._lock = threading.Lock()
        # task id -> (queue, name) of tasks this process claimed: saves the index lookup
        # on ack/fail and names their transitions.
        self._claimed: dict[str, tuple[str, str]] = {}
        self.connected = True

    # -- plumbing ----------------------------------------------------------------------

    def _call(self, fn: Callable[[], R], retry: bool = True) -> R:
        """Run ``fn``, retrying connection errors with backoff for up to ``retry_s``."""
        errors = self._redis_mod.exceptions
        deadline = time.monotonic() + (self.retry_s if retry else 0.0)
        delay = 0.05
        while True:
            try:
                out = fn()
                self.connected = True
                return out
            except (errors.ConnectionError, errors.TimeoutError) as exc:
                self.connected = False
                if time.monotonic() + delay > deadline:
                    raise BackendUnavailable(f"redis at {self.url} unreachable: {exc}") from None
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except errors.ResponseError as exc:
                msg = str(exc)
                if "DUP task id" in msg:
                    raise BackendError(msg[msg.index("DUP") + 4 :]) from None
                if "NOTDEAD" in msg:
                    raise TaskNotFound(msg[msg.index("NOTDEAD") + 8 :]) from None
                raise BackendError(f"redis error: {msg}") from None
            except errors.RedisError as exc:
                raise BackendError(f"redis error: {exc}") from None

    def _scan(self, pattern: str) -> list[Any]:
        return list(self.r.scan_iter(match=pattern, count=1000))

    def ping(self) -> float:
        """Round-trip time (seconds); :class:`BackendUnavailable` when down."""
        t0 = time.perf_counter()
        self._call(self.r.ping, retry=False)
        return time.perf_counter() - t0

    def info(self) -> dict[str, Any]:
        """Server facts for the snapshot."""
        try:
            i = self._call(lambda: self.r.info("server"), retry=False)
            p = self._call(lambda: self.r.info("persistence"), retry=False)
        except BackendError:
            return {"connected": False}
        return {
            "connected": True,
            "redis_version": i.get("redis_version"),
            "aof_enabled": bool(p.get("aof_enabled")),
            "prefix": self.keys.prefix,
        }

    def close(self) -> None:
        """Close the connection pool."""
        self.r.close()

    def _q(self, task_id: str) -> str | None:
        q = self._call(lambda: self.r.hget(self.keys.index, task_id))
        return _s(q) if q is not None else None

    def _known_queues(self, fresh: bool = False) -> list[str]:
        at, names = self._queues_cache
        now = time.monotonic()
        if fresh or now - at > 1.0:
            raw = self._call(lambda: self.r.smembers(self.keys.queues))
            names = sorted(_s(q) for q in raw)
            self._queues_cache = (now, names)
        return names

    def _ensure_queue(self, queue: str, pipe: Any) -> None:
        if queue not in self._known:
            pipe.sadd(self.keys.queues, queue)
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

    def _trs(
        self, task_id: str, name: str, queue: str, path: Sequence[Any], note: str | None = None
    ) -> list[Transition]:
        out = []
        old: TaskState = S.RUNNING
        for st in path:
            new = TaskState(_s(st))
            out.append(Transition(task_id, name, queue, old, new, note if new is S.DEAD else None))
            old = new
        return out

    # -- queue -------------------------------------------------------------------------

    def enqueue(self, task: NewTask, now: float) -> list[Transition]:
        """Store a new task (one round trip with its index entry)."""
        return self.enqueue_many([task], now)

    def enqueue_many(self, tasks: Sequence[NewTask], now: float) -> list[Transition]:
        """Store tasks: one script per queue, all in one pipeline (one round trip)."""
        by_q: dict[str, list[NewTask]] = {}
        for t in tasks:
            by_q.setdefault(t.queue, []).append(t)

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q, ts in by_q.items():
                self._ensure_queue(q, pipe)
                argv: list[Any] = [repr(now), self.maxlen]
                for t in ts:
                    argv.extend(self._args(t))
                self._enqueue(keys=[self.keys.tag(q)], args=argv, client=pipe)
                pipe.hset(self.keys.index, mapping={t.id: q for t in ts})
            return pipe.execute()

        self._call(run)
        return [Transition(t.id, t.name, t.queue, None, S.PENDING) for t in tasks]

    def claim(
        self,
        queues: Sequence[str] | None,
        worker_id: str,
        lease_s: float,
        limit: int,
        now: float,
        wait: float = 0.0,
    ) -> list[Delivery]:
        """Lease up to ``limit`` tasks; block up to ``wait`` on the queues' notify lists."""
        out = self._claim_any(queues, worker_id, lease_s, limit, now)
        names = list(queues) if queues is not None else self._known_queues()
        if out or wait <= 0 or not names:
            return out
        notify = [self.keys.queue(q)["notify"] for q in names]
        self._call(lambda: self.r.blpop(notify, timeout=max(0.01, wait)), retry=False)
        return self._claim_any(queues, worker_id, lease_s, limit, self.clock.now())

    def _claim_any(
        self,
        queues: Sequence[str] | None,
        worker_id: str,
        lease_s: float,
        limit: int,
        now: float,
    ) -> list[Delivery]:
        if queues is not None:
            return self._claim_from(list(queues), worker_id, lease_s, limit, now)
        # Every queue, best priority first: one task at a time from the best head while
        # several queues have work (one script per task), the rest in one go.
        out: list[Delivery] = []
        while len(out) < limit:
            names = self._by_head_priority()
            if not names:
                break
            take = 1 if len(names) > 1 else limit - len(out)
            got = self._claim_from(names[:1], worker_id, lease_s, take, now)
            if not got:
                break
            out.extend(got)
        return out

    def _by_head_priority(self) -> list[str]:
        """Queues with ready tasks, the one whose next task has the best priority first."""
        names = self._known_queues()
        if not names:
            return names

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q in names:
                pipe.zrange(self.keys.queue(q)["ready"], 0, 0, withscores=True)
                pipe.exists(self.keys.queue(q)["paused"])
            return pipe.execute()

        res = self._call(run)
        firsts = [
            (q, res[2 * i][0]) for i, q in enumerate(names) if res[2 * i] and not res[2 * i + 1]
        ]
        if len(firsts) < 2:
            return [q for q, _ in firsts]

        def enqueued() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q, (tid, _) in firsts:
                pipe.hget(self.keys.record(q, _s(tid)), "enqueued_at")
            return pipe.execute()

        # score = priority * 2**34 + per-queue sequence: priorities compare across
        # queues, sequences do not, so equal priorities go by the head's enqueue time.
        heads = sorted(
            (score // 17179869184, float(_s(at) or 0), q)
            for (q, (_, score)), at in zip(firsts, self._call(enqueued), strict=True)
        )
        return [q for _, _, q in heads]

    def _claim_from(
        self, names: list[str], worker_id: str, lease_s: float, limit: int, now: float
    ) -> list[Delivery]:
        out: list[Delivery] = []
        for q in names:
            if len(out) >= limit:
                break
            rows = self._call(
                functools.partial(
                    self._claim,
                    keys=[self.keys.tag(q)],
                    args=[worker_id, repr(now), repr(now + lease_s), limit - len(out), self.maxlen],
                )
            )
            for tid, token, name, payload, attempt, deliveries, enq, tl, mr in rows:
                d = Delivery(
                    _s(tid),
                    int(token),
                    _s(name),
                    q,
                    bytes(payload),
                    int(attempt),
                    int(deliveries),
                    float(enq),
                    now,
                    _f(tl),
                    int(mr),
                )
                self._claimed[d.task_id] = (q, d.name)
                out.append(d)
        return out

    def _where(self, task_id: str, settle: bool = False) -> tuple[str, str] | None:
        hit = self._claimed.pop(task_id, None) if settle else self._claimed.get(task_id)
        if hit is not None:
            return hit
        q = self._q(task_id)
        return None if q is None else (q, "")

    def _settle(self, script: Any, task_id: str, args: list[Any]) -> Any:
        where = self._where(task_id, settle=True)
        if where is None:
            return None
        q = where[0]
        return where, self._call(lambda: script(keys=[self.keys.tag(q)], args=args))

    def ack(self, task_id: str, token: int, result: Any, now: float) -> list[Transition]:
        """RUNNING -> SUCCESS; empty when the token is stale. One round trip."""
        res = self._settle(
            self._ack,
            task_id,
            [
                task_id,
                token,
                json.dumps(result),
                repr(now),
                repr(now + self.result_ttl),
                self.maxlen,
                "",
            ],
        )
        if not res or not res[1]:
            return []
        (q, name), _ = res
        return [Transition(task_id, name, q, S.RUNNING, S.SUCCESS)]

    def fail(
        self,
        task_id: str,
        token: int,
        error: ErrorInfo,
        now: float,
        *,
        retry_at: float | None = None,
        dead_reason: str | None = None,
    ) -> list[Transition]:
        """RUNNING -> FAILED -> RETRY (-> PENDING when due now) or DEAD."""
        note = f"{error.type}: {error.message}"[:200]
        res = self._settle(
            self._fail,
            task_id,
            [
                task_id,
                token,
                json.dumps(error.to_dict()),
                repr(now),
                _opt(retry_at),
                dead_reason or "",
                repr(now + self.result_ttl),
                self.maxlen,
                "",
                note,
            ],
        )
        if not res:
            return []
        (q, name), path = res
        return self._trs(task_id, name, q, path, dead_reason)

    def bury(
        self, task_id: str, token: int, error: ErrorInfo, reason: str, now: float
    ) -> list[Transition]:
        """RUNNING -> DEAD."""
        res = self._settle(
            self._bury,
            task_id,
            [
                task_id,
                token,
                json.dumps(error.to_dict()),
                reason,
                repr(now),
                self.maxlen,
                "",
            ],
        )
        if not res or not res[1]:
            return []
        (q, name), _ = res
        return [Transition(task_id, name, q, S.RUNNING, S.DEAD, reason)]

    def release(
        self, task_id: str, token: int, now: float, eta: float | None = None, note: str = ""
    ) -> list[Transition]:
        """RUNNING -> PENDING without counting an attempt."""
        res = self._settle(
            self._release, task_id, [task_id, token, repr(now), _opt(eta), note, self.maxlen]
        )
        if not res or not res[1]:
            return []
        (q, name), _ = res
        return [Transition(task_id, name, q, S.RUNNING, S.PENDING, note or None)]

    def extend_leases(self, leases: Iterable[tuple[str, int]], lease_s: float, now: float) -> None:
        """Renew live leases (one pipeline)."""
        items = list(leases)
        if not items:
            return

        def run() -> Any:
            qs = self.r.hmget(self.keys.index, [i for i, _ in items])
            by_q: dict[str, list[Any]] = {}
            for (tid, token), q in zip(items, qs, strict=True):
                if q is not None:
                    by_q.setdefault(_s(q), []).extend([tid, token])
            pipe = self.r.pipeline(transaction=False)
            for q, args in by_q.items():
                self._extend(
                    keys=[self.keys.tag(q)], args=[repr(now + lease_s), *args], client=pipe
                )
            return pipe.execute()

        self._call(run)

    def _per_queue(self, script: Any, args: list[Any]) -> list[tuple[str, Any]]:
        names = self._known_queues()

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q in names:
                script(keys=[self.keys.tag(q)], args=args, client=pipe)
            return pipe.execute()

        return list(zip(names, self._call(run), strict=True)) if names else []

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
                keys=[self.keys.tag(q)],
                args=[task_id, repr(now), repr(now + self.result_ttl), self.maxlen],
            )
        )
        if not _s(old):
            return []
        return [Transition(task_id, where[1], q, TaskState(_s(old)), S.CANCELLED, "cancelled")]

    def queue_stats(self) -> list[QueueStats]:
        """Depths of every known queue (one pipeline)."""
        names = self._known_queues(fresh=True)

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q in names:
                k = self.keys.queue(q)
                pipe.zcard(k["ready"])
                pipe.zcard(k["delayed"])
                pipe.zcard(k["leases"])
                pipe.exists(k["paused"])
            return pipe.execute()

        vals = self._call(run) if names else []
        return [
            QueueStats(q, vals[i * 4], vals[i * 4 + 1], vals[i * 4 + 2], bool(vals[i * 4 + 3]))
            for i, q in enumerate(names)
        ]

    def peek(self, queue: str, limit: int) -> list[TaskRecord]:
        """The next ``limit`` ready tasks of ``queue``."""
        if limit <= 0:
            return []
        ids = self._call(lambda: self.r.zrange(self.keys.queue(queue)["ready"], 0, limit - 1))
        return self._records(queue, [_s(i) for i in ids])

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

    def _records(self, queue: str, ids: list[str]) -> list[TaskRecord]:
        if not ids:
            return []

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for i in ids:
                pipe.hgetall(self.keys.record(queue, i))
            return pipe.execute()

        return [_record(h) for h in self._call(run) if h]

    def get(self, task_id: str) -> TaskRecord | None:
        """The record of a task (two round trips: index, then record)."""
        q = self._q(task_id)
        if q is None:
            return None
        recs = self._records(q, [task_id])
        return recs[0] if recs else None

    def get_state(self, task_id: str) -> TaskState | None:
        """Only the state."""
        q = self._q(task_id)
        if q is None:
            return None
        st = self._call(lambda: self.r.hget(self.keys.record(q, task_id), "state"))
        return TaskState(_s(st)) if st is not None else None

    def _scan_records(
        self, flt: TaskFilter, now: float, offset: int, limit: int, dead_only: bool
    ) -> list[TaskRecord]:
        names = [flt.queue] if flt.queue else self._known_queues(fresh=True)
        found: list[TaskRecord] = []
        want = offset + limit
        for q in names:
            if dead_only:
                ids = [
                    _s(i)
                    for i in self._call(
                        functools.partial(self.r.zrevrange, self.keys.queue(q)["dead"], 0, -1)
                    )
                ]
            else:
                pattern = self.keys.record(q, "*")
                ids = [
                    _s(k).rsplit(":t:", 1)[1]
                    for k in self._call(functools.partial(self._scan, pattern))
                ]
            for i in range(0, len(ids), 500):
                for rec in self._records(q, ids[i : i + 500]):
                    if flt.matches(rec, now):
                        found.append(rec)
        found.sort(key=lambda r: r.finished_at or r.enqueued_at, reverse=True)
        return found[offset:want]

    def list_tasks(
        self, flt: TaskFilter, now: float, offset: int = 0, limit: int = 100
    ) -> list[TaskRecord]:
        """Records matching ``flt``, newest first (scans; for operators, not hot paths)."""
        return self._scan_records(flt, now, offset, limit, dead_only=False)

    def count_by_state(self) -> dict[TaskState, int]:
        """Counts per state, summed over queues (one pipeline)."""
        names = self._known_queues()

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q in names:
                pipe.hgetall(self.keys.queue(q)["counts"])
            return pipe.execute()

        out = dict.fromkeys(TaskState, 0)
        for h in self._call(run) if names else []:
            for k, v in h.items():
                out[TaskState(_s(k))] += int(v)
        return out

    def expire(self, now: float) -> int:
        """Drop finished records past their TTL in every queue."""
        n = 0
        ids: list[str] = []
        for _, rows in self._per_queue(self._expire, [repr(now), 1000, self.max_results]):
            ids.extend(_s(i) for i in rows)
        if ids:
            self._call(lambda: self.r.hdel(self.keys.index, *ids))
            n = len(ids)
        return n

    # -- dead letters ------------------------------------------------------------------

    def list_dead(
        self, flt: TaskFilter, now: float, offset: int = 0, limit: int = 100
    ) -> list[TaskRecord]:
        """Dead tasks matching ``flt``, newest first."""
        return self._scan_records(flt, now, offset, limit, dead_only=True)

    def count_dead(self, flt: TaskFilter | None = None, now: float = 0.0) -> int:
        """How many dead tasks match."""
        if flt is None or flt.is_empty():
            names = self._known_queues()

            def run() -> Any:
                pipe = self.r.pipeline(transaction=False)
                for q in names:
                    pipe.zcard(self.keys.queue(q)["dead"])
                return pipe.execute()

            return sum(self._call(run)) if names else 0
        return len(self._scan_records(flt, now, 0, 10**9, dead_only=True))

    def replay(
        self, task_id: str, new_task: NewTask, edit: dict[str, Any] | None, now: float
    ) -> list[Transition]:
        """Enqueue ``new_task`` as the replay of dead ``task_id`` (same queue)."""
        q = self._q(task_id)
        if q is None:
            raise TaskNotFound(f"no dead task {task_id!r}")
        new_task.queue = q

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            self._replay(
                keys=[self.keys.tag(q)],
                args=[
                    task_id,
                    json.dumps(edit) if edit else "",
                    repr(now),
                    self.maxlen,
                    *self._args(new_task),
                ],
                client=pipe,
            )
            pipe.hset(self.keys.index, new_task.id, q)
            return pipe.execute()

        self._call(run)
        return [Transition(new_task.id, new_task.name, q, None, S.PENDING)]

    def purge(self, task_ids: Sequence[str]) -> int:
        """Delete dead records."""
        if not task_ids:
            return 0
        qs = self._call(lambda: self.r.hmget(self.keys.index, list(task_ids)))
        by_q: dict[str, list[str]] = {}
        for tid, q in zip(task_ids, qs, strict=True):
            if q is not None:
                by_q.setdefault(_s(q), []).append(tid)
        n = 0
        for q, ids in by_q.items():
            done = self._call(functools.partial(self._purge, keys=[self.keys.tag(q)], args=ids))
            if done:
                self._call(functools.partial(self.r.hdel, self.keys.index, *[_s(i) for i in done]))
            n += len(done)
        return n

    # -- keys and counters -------------------------------------------------------------

    def set_if_absent(self, key: str, value: str, ttl_s: float, now: float) -> str | None:
        """Set unless a live value exists; return the existing value if any."""
        old = self._call(
            functools.partial(
                self._kv_setnx, keys=[self.keys.kv(key)], args=[value, repr(now), repr(ttl_s)]
            )
        )
        return _s(old) if old is not None else None

    def get_key(self, key: str, now: float) -> str | None:
        """The live value of ``key``."""
        v = self._call(functools.partial(self._kv_get, keys=[self.keys.kv(key)], args=[repr(now)]))
        return _s(v) if v is not None else None

    def set_key(self, key: str, value: str, ttl_s: float | None, now: float) -> None:
        """Set ``key``."""
        self._call(
            functools.partial(
                self._kv_set, keys=[self.keys.kv(key)], args=[value, repr(now), _opt(ttl_s)]
            )
        )

    def delete_key(self, key: str) -> None:
        """Remove ``key``."""
        self._call(lambda: self.r.delete(self.keys.kv(key)))

    def compare_and_set(
        self, key: str, expected: str | None, value: str, ttl_s: float | None, now: float
    ) -> bool:
        """Atomic compare-and-set (a script)."""
        has = "0" if expected is None else "1"
        return bool(
            self._call(
                functools.partial(
                    self._cas,
                    keys=[self.keys.kv(key)],
                    args=[has, expected or "", value, repr(now), _opt(ttl_s)],
                )
            )
        )

    def scan_keys(self, prefix: str, now: float, limit: int = 10_000) -> list[str]:
        """Live keys starting with ``prefix``."""
        base = self.keys.kv("")
        found = self._call(functools.partial(self._scan, base + prefix + "*"))
        names = sorted(_s(k)[len(base) :] for k in found)
        if not names:
            return []

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for n in names:
                self._kv_get(keys=[self.keys.kv(n)], args=[repr(now)], client=pipe)
            return pipe.execute()

        live = [n for n, v in zip(names, self._call(run), strict=True) if v is not None]
        return live[:limit]

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

    def wakeup(self) -> None:
        """Wake claimers blocked on notify lists (ours stop at their timeout anyway)."""

    # -- metrics across processes ---------------------------------------------------------

    def rate_series(self, now: float, seconds: int = 60) -> dict[str, dict[str, list[int]]]:
        """Per-queue, per-counter counts for each of the last ``seconds`` whole seconds."""
        names = self._known_queues()
        end = int(now)
        secs = list(range(end - seconds, end))

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q in names:
                base = self.keys.queue(q)["sec"]
                for s in secs:
                    pipe.hgetall(f"{base}{s}")
            return pipe.execute()

        rows = self._call(run) if names else []
        out: dict[str, dict[str, list[int]]] = {}
        for qi, q in enumerate(names):
            series: dict[str, list[int]] = {}
            for si in range(len(secs)):
                for k, v in rows[qi * len(secs) + si].items():
                    series.setdefault(_s(k), [0] * len(secs))[si] = int(v)
            out[q] = series
        return out

    def totals(self) -> dict[str, dict[str, int]]:
        """Per-queue counter totals."""
        names = self._known_queues()

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q in names:
                pipe.hgetall(self.keys.queue(q)["totals"])
            return pipe.execute()

        rows = self._call(run) if names else []
        return {q: {_s(k): int(v) for k, v in h.items()} for q, h in zip(names, rows, strict=True)}

    def read_events(self, since: int, limit: int = 1000) -> list[tuple[int, dict[str, str]]]:
        """Events after ``since`` (stream time in ms * 1000 + sequence), merged over queues."""
        names = self._known_queues()
        start = f"{since // 1000}-{since % 1000 + 1}" if since else "-"

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q in names:
                pipe.xrange(self.keys.queue(q)["events"], min=start, count=limit)
            return pipe.execute()

        out = []
        for q, rows in zip(names, self._call(run) if names else [], strict=False):
            for sid, fields in rows:
                ms, seq = _s(sid).split("-")
                ev = {_s(k): _s(v) for k, v in fields.items()}
                ev["queue"] = q
                out.append((int(ms) * 1000 + int(seq), ev))
        out.sort(key=lambda e: e[0])
        return out[:limit]


def _record(h: dict[bytes, bytes]) -> TaskRecord:
    g = {_s(k): v for k, v in h.items()}

    def js(name: str, default: Any) -> Any:
        raw = _s(g.get(name))
        return json.loads(raw) if raw else default

    err = js("error", None)
    return TaskRecord(
        id=_s(g["id"]),
        name=_s(g["name"]),
        queue=_s(g["queue"]),
        priority=int(_s(g["priority"])),
        payload=bytes(g["payload"]),
        state=TaskState(_s(g["state"])),
        created_at=float(_s(g["created_at"])),
        enqueued_at=float(_s(g["enqueued_at"])),
        eta=_f(g.get("eta")),
        max_retries=int(_s(g.get("max_retries")) or 0),
        time_limit=_f(g.get("time_limit")),
        attempt=int(_s(g.get("attempt")) or 0),
        deliveries=int(_s(g.get("deliveries")) or 0),
        started_at=_f(g.get("started_at")),
        finished_at=_f(g.get("finished_at")),
        result=js("result", None),
        error=ErrorInfo.from_dict(err) if err else None,
        history=tuple(Attempt.from_dict(a) for a in js("history", [])),
        replayed_from=_s(g.get("replayed_from")) or None,
        replayed_to=tuple(js("replayed_to", [])),
        dead_reason=_s(g.get("dead_reason")) or None,
        worker=_s(g.get("worker")) or None,
        lease_token=int(_s(g.get("lease_token")) or 0),
        lease_deadline=_f(g.get("lease_deadline")),
        edits=tuple(js("edits", [])),
        dedup_key=_s(g.get("dedup_key")) or None,
        workflow=_s(g.get("workflow")) or None,
    )
