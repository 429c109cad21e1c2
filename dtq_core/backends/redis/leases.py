"""Claiming and settling tasks in Redis: leases with tokens, acks, failures, renewals."""

from __future__ import annotations

import contextlib
import functools
import json
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from typing import Any

from dtq_core.backends.base import Delivery, Transition
from dtq_core.backends.redis.client import RedisClient
from dtq_core.backends.redis.records import _f, _opt, _s
from dtq_core.errors import BackendError
from dtq_core.task import ErrorInfo, TaskState

S = TaskState


#: Tasks claimed or acknowledged by one script at most (Lua's unpack() takes ~8,000
#: values; a larger batch is split into several scripts in the same round trip).
MAX_BATCH = 1000

#: Stands for the claiming worker's id in a settle script's arguments.
_WORKER = object()


class LeaseMixin(RedisClient):
    """Claims across queues by priority, and the scripts that settle a leased task.

    Mixed into :class:`~dtq_core.backends.redis.backend.RedisBackend`, which registers
    the scripts in its constructor.
    """

    _claim: Any
    _idle: Any
    _ack_many: Any
    _fail: Any
    _bury: Any
    _release: Any
    _extend: Any
    _claimed: dict[str, tuple[str, str]]
    _claimed_by: dict[str, tuple[str, int]]
    _pool: ThreadPoolExecutor | None = None
    _pool_lock = threading.Lock()

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

    # -- claiming ----------------------------------------------------------------------

    def claim(
        self,
        queues: Sequence[str] | None,
        worker_id: str,
        lease_s: float,
        limit: int,
        now: float,
        wait: float = 0.0,
    ) -> list[Delivery]:
        """Lease up to ``limit`` tasks; wait up to ``wait`` seconds for one.

        While it waits, the worker is registered as idle on each queue: a task enqueued
        meanwhile is leased to it by the enqueue itself and pushed to its inbox, which
        it blocks on (the wake-up brings the task; no claim round trip follows).
        """
        out = self._claim_any(queues, worker_id, lease_s, limit, now)
        if out or wait <= 0:
            return out
        names = list(queues) if queues is not None else self._known_queues()
        end = self._claim_args(worker_id, lease_s, 0, now)  # ends the wait, collects
        watch = [self.keys.inbox(q, worker_id) for q in names]
        watch += [self.keys.queue(q)["notify"] for q in names]
        if not names:
            # Serving every queue and none exists yet: the first one created wakes us.
            # (Later ones are found by the queue list's refresh, within a second: the
            # key has no hash tag, and waiting on it beside a queue's keys would make
            # the wait cross slots on Redis Cluster.)
            watch.append(self.keys.new_queues)
        idle = [end[-1], repr(now), repr(now + wait), worker_id]
        if self.cluster and len(names) > 1:
            # One BLPOP cannot wait on keys of several slots: one wait per queue, side
            # by side; the first to wake ends the others (see _wait_apart).
            res = self._call(
                lambda: self._wait_apart(names, worker_id, idle, end, wait), retry=False
            )
        else:
            res = self._call(
                lambda: self._wait_together(names, watch, idle, end, wait), retry=False
            )
        n = len(names)
        got = self.clock.now()
        # Left over from before the wait (IDLE's reply), handed over during it (the
        # BLPOP and the claims after it): every one still leased to this worker.
        for q, (_, left), (_, boxed) in zip(names, res[:n], res[n + 1 :], strict=True):
            out.extend(self._unbox(q, bytes(b), worker_id, got) for b in (*left, *boxed))
        for popped in res[n]:
            key, value = _s(popped[0]), bytes(popped[1])
            if key == self.keys.new_queues:
                self._known_queues(fresh=True)
            elif value != b"!" and key in watch[:n]:
                out.insert(0, self._unbox(names[watch.index(key)], value, worker_id, got))
        if len(out) > limit:
            # One handed over by each of several queues: the rest go back (rare; if
            # that fails, their leases run out and they are delivered again).
            for d in out[limit:]:
                with contextlib.suppress(BackendError):
                    self.release(d.task_id, d.token, got, note="over the claim's limit: requeued")
            del out[limit:]
        if out:
            return out
        return self._claim_any(queues, worker_id, lease_s, limit, self.clock.now())

    def _wait_together(
        self, names: list[str], watch: list[str], idle: list[Any], end: list[Any], wait: float
    ) -> list[Any]:
        """Register, block on every queue at once, end the registrations: one round trip.

        The commands after the BLPOP run when it returns, so no registration outlives
        the wait. Replies: IDLE per queue, a list of what the BLPOP popped (none or
        one), CLAIM per queue.
        """
        pipe = self.r.pipeline(transaction=False)
        for q in names:
            self._in(pipe, self._idle, self.keys.script_keys(q), idle)
        pipe.blpop(watch, timeout=max(0.01, wait))
        for q in names:
            self._in(pipe, self._claim, self.keys.script_keys(q), end)
        out = list(pipe.execute())
        n = len(names)
        out[n] = [out[n]] if out[n] is not None else []
        return out

    def _wait_apart(
        self, names: list[str], worker_id: str, idle: list[Any], end: list[Any], wait: float
    ) -> list[Any]:
        """The same wait on a cluster: one pipeline per queue (its slot), all at once.

        Each queue's IDLE, BLPOP (its inbox and notify list) and CLAIM run on its own
        connection to the queue's node. The first wait to wake pushes a mark into the
        other queues' inboxes, which ends their BLPOPs at once (their CLAIMs drop the
        mark). Replies are laid out as :meth:`_wait_together`'s, with what each BLPOP
        popped.
        """
        woke = threading.Lock()

        def wake_others(q: str) -> None:
            if not woke.acquire(blocking=False):
                return  # another wait woke them already
            wake = self.r.pipeline(transaction=False)
            for other in names:
                if other != q:
                    wake.rpush(self.keys.inbox(other, worker_id), "!")
                    wake.pexpire(self.keys.inbox(other, worker_id), 60_000)
            with contextlib.suppress(Exception):  # they end at their timeout anyway
                wake.execute()

        def one(q: str) -> list[Any]:
            tag = self.keys.script_keys(q)
            pipe = self.r.pipeline(transaction=False)
            self._in(pipe, self._idle, tag, idle)
            pipe.blpop([self.keys.inbox(q, worker_id), self.keys.queue(q)["notify"]],
                       timeout=max(0.01, wait))  # fmt: skip
            self._in(pipe, self._claim, tag, end)
            try:
                out = list(pipe.execute())
            except Exception:
                # This queue's node failed: the others need not wait out their timeout.
                # (What was handed to this worker there is still leased to it: the next
                # wait collects it, or its lease runs out and it is delivered again.)
                wake_others(q)
                raise
            if out[1] is not None:
                wake_others(q)
            return out

        pool = self._wait_pool(len(names))
        futures = [pool.submit(one, q) for q in names]
        wait_all(futures)  # every wait has ended before a failure is raised
        outs = [f.result() for f in futures]
        popped = [o[1] for o in outs if o[1] is not None]
        return [*(o[0] for o in outs), popped, *(o[2] for o in outs)]

    def _wait_pool(self, n: int) -> ThreadPoolExecutor:
        """Threads for :meth:`_wait_apart`, at least ``n`` (one per queue waited on)."""
        with self._pool_lock:
            pool = self._pool
            if pool is None or pool._max_workers < n:
                if pool is not None:
                    pool.shutdown(wait=False)
                pool = self._pool = ThreadPoolExecutor(
                    max_workers=max(n, 4), thread_name_prefix="dtq-redis-wait"
                )
            return pool

    def leave(
        self, queues: Sequence[str] | None, worker_id: str, lease_s: float, now: float
    ) -> list[Delivery]:
        """End the worker's idle registration; what was handed to it meanwhile."""
        names = list(queues) if queues is not None else self._known_queues()
        if not names:
            return []
        args = self._claim_args(worker_id, lease_s, 0, now)

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q in names:
                self._in(pipe, self._claim, self.keys.script_keys(q), args)
            return pipe.execute()

        out: list[Delivery] = []
        for q, (_, boxed) in zip(names, self._call(run), strict=True):
            out.extend(self._unbox(q, bytes(b), worker_id, now) for b in boxed)
        return out

    def _claim_args(self, worker_id: str, lease_s: float, limit: int, now: float) -> list[Any]:
        """The CLAIM script's ARGV; the last is the worker's idle member (IDLE's too).

        A limit of 0 only ends the worker's wait and collects its inbox.
        """
        member = f"{lease_s!r}|{worker_id}"
        return [worker_id, repr(now), repr(now + lease_s), limit, self.maxlen, member]

    def _unbox(self, q: str, raw: bytes, worker_id: str, now: float) -> Delivery:
        """A delivery pushed to an inbox: 8 header lines, then the payload."""
        tid, token, name, attempt, deliveries, enq, tl, mr, payload = raw.split(b"\n", 8)
        row = (tid, token, name, payload, attempt, deliveries, enq, tl, mr)
        # Handed over by the enqueue, which leased it from its own time.
        return self._delivery(q, row, worker_id, now)._replace(leased_at=float(enq))

    def _delivery(self, q: str, row: Sequence[Any], worker_id: str, now: float) -> Delivery:
        """A claim script's row as a :class:`Delivery`, remembered as claimed here."""
        tid, token, name, payload, attempt, deliveries, enq, tl, mr = row
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
        self._claimed_by[d.task_id] = (worker_id, d.token)
        return d

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
        known = self._known_queues()
        if len(known) == 1:
            # One queue: nothing to rank, so no extra round trip (the script itself
            # skips a paused or empty queue).
            return self._claim_from(known, worker_id, lease_s, limit, now)
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
            # At most MAX_BATCH per script: Lua's unpack() of the lease list has a limit.
            rows, boxed = self._call(
                functools.partial(
                    self._claim,
                    keys=self.keys.script_keys(q),
                    args=self._claim_args(
                        worker_id, lease_s, min(MAX_BATCH, limit - len(out)), now
                    ),
                )
            )
            out.extend(self._unbox(q, bytes(b), worker_id, now) for b in boxed)
            for row in rows:
                try:
                    out.append(self._delivery(q, row, worker_id, now))
                except (TypeError, ValueError) as exc:
                    # The script checks every field it hands out; this is the last
                    # guard, so a bad row never reaches (and never kills) a worker.
                    self._bury_row(q, row, worker_id, now, exc)
        return out

    def _bury_row(
        self, q: str, row: Sequence[Any], worker_id: str, now: float, exc: Exception
    ) -> None:
        """Dead-letter a claimed row that cannot be read as a delivery."""
        tid, token = _s(row[0]), row[1]
        self._claimed[tid] = (q, _s(row[2]) if row[2] else "?")
        self._claimed_by[tid] = (worker_id, int(token))
        info = ErrorInfo("MalformedRecord", f"the claimed record cannot be read: {exc}")
        self.bury(tid, int(token), info, "malformed record", now)

    # -- settling ----------------------------------------------------------------------

    def _where(self, task_id: str) -> tuple[str, str] | None:
        hit = self._claimed.get(task_id)
        if hit is not None:
            return hit
        q = self._q(task_id)
        return None if q is None else (q, "")

    def _forget(self, task_id: str, token: int) -> None:
        """Drop what this process remembers of its claim of ``task_id`` under ``token``.

        A claim of the same task under a newer token (delivered again, to another
        thread of this process) is kept.
        """
        mine = self._claimed_by.get(task_id)
        if mine is None or mine[1] == token:
            self._claimed_by.pop(task_id, None)
            self._claimed.pop(task_id, None)

    def _settle(self, script: Any, task_id: str, args: list[Any]) -> Any:
        token = int(args[1])
        mine = self._claimed_by.get(task_id)
        worker = mine[0] if mine is not None and mine[1] == token else ""
        args = [worker if a is _WORKER else a for a in args]  # events name the worker
        where = self._where(task_id)
        if where is None:
            return None
        q = where[0]
        try:
            return where, self._call(lambda: script(keys=self.keys.script_keys(q), args=args))
        finally:
            self._forget(task_id, token)

    def ack(self, task_id: str, token: int, result: Any, now: float) -> list[Transition]:
        """RUNNING -> SUCCESS; empty when the token is stale. One round trip."""
        return self.ack_many([(task_id, token, result)], now)[0]

    def ack_many(
        self, acks: Sequence[tuple[str, int, Any]], now: float, *, retry: bool = False
    ) -> list[list[Transition]]:
        """Acknowledge a batch: one script per queue, all in one pipeline (one round trip).

        Safe to retry after a lost reply (here, or by the caller with ``retry``): a task
        already SUCCESS under the same token counts as acknowledged.
        """
        by_q: dict[str, list[int]] = {}
        wheres: list[tuple[str, str] | None] = []
        for i, (tid, _, _) in enumerate(acks):
            where = self._where(tid)
            wheres.append(where)
            if where is not None:
                by_q.setdefault(where[0], []).append(i)
        # One script per MAX_BATCH acks of a queue (Lua's unpack() has a limit).
        chunks = [
            (q, idx[k : k + MAX_BATCH])
            for q, idx in by_q.items()
            for k in range(0, len(idx), MAX_BATCH)
        ]
        out: list[list[Transition]] = [[] for _ in acks]
        if not chunks:
            return out
        head = [repr(now), repr(now + self.result_ttl), self.maxlen]
        claimed_by = self._claimed_by
        calls = 0

        def run() -> Any:
            nonlocal calls
            calls += 1
            pipe = self.r.pipeline(transaction=False)
            for q, idx in chunks:
                argv = [*head, int(retry or calls > 1)]
                for i in idx:
                    tid, token, result = acks[i]
                    mine = claimed_by.get(tid)
                    worker = mine[0] if mine is not None and mine[1] == token else ""
                    argv += (tid, token, json.dumps(result), worker)
                self._in(pipe, self._ack_many, self.keys.script_keys(q), argv)
            self._wait_replicas(pipe, by_q)
            return pipe.execute()

        replies = self._call(run)
        waits = self._n_waits(by_q)
        self._check_waited(replies, waits)
        for (q, idx), rep in zip(chunks, replies[: len(replies) - waits], strict=True):
            for i, ok in zip(idx, rep, strict=True):
                tid = acks[i][0]
                self._forget(tid, acks[i][1])
                if int(ok):
                    name = wheres[i][1]  # type: ignore[index]
                    out[i] = [Transition(tid, name, q, S.RUNNING, S.SUCCESS)]
        return out

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
                _WORKER,
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
                _WORKER,
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

        # The queues of tasks claimed here are known; others are looked up.
        known = {tid: self._claimed[tid][0] for tid, _ in items if tid in self._claimed}
        unknown = [tid for tid, _ in items if tid not in known]
        known.update(
            (tid, q) for tid, q in zip(unknown, self._qs(unknown), strict=True) if q is not None
        )
        by_q: dict[str, list[Any]] = {}
        for tid, token in items:
            if tid in known:
                by_q.setdefault(known[tid], []).extend([tid, token])

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q, args in by_q.items():
                self._in(pipe, self._extend, self.keys.script_keys(q), [repr(now + lease_s), *args])
            return pipe.execute()

        self._call(run)

    def renew_lease(self, task_id: str, token: int, lease_s: float, now: float) -> bool:
        """Renew one lease if still held under ``token`` (one script: atomic)."""
        where = self._where(task_id)
        if where is None:
            return False
        args = [repr(now + lease_s), task_id, token]
        n = self._call(lambda: self._extend(keys=[self.keys.tag(where[0])], args=args))
        return int(n) == 1
