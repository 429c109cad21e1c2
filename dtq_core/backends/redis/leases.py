"""Claiming tasks in Redis: leases with tokens across queues by priority, idle waits."""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from typing import Any

from dtq_core.backends.base import Delivery
from dtq_core.backends.redis.records import _f, _s
from dtq_core.backends.redis.settle import MAX_BATCH, SettleMixin
from dtq_core.errors import BackendError
from dtq_core.task import ErrorInfo


class LeaseMixin(SettleMixin):
    """Claims across queues by priority (leases under tokens), and idle waits.

    Mixed into :class:`~dtq_core.backends.redis.backend.RedisBackend`, which registers
    the scripts in its constructor; settling is :class:`SettleMixin`'s.
    """

    _claim: Any
    _idle: Any
    _pool: ThreadPoolExecutor | None = None
    _pool_lock = threading.Lock()

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
