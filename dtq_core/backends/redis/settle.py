"""Settling leased tasks in Redis: acks, failures, burials, releases and renewals.

Every script checks the task is still RUNNING under the caller's lease token, so a
stale worker (its lease ran out and the task went to another) settles nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from dtq_core.backends.base import Transition
from dtq_core.backends.redis.client import RedisClient
from dtq_core.backends.redis.records import _opt, _s
from dtq_core.task import ErrorInfo, TaskState

S = TaskState

#: Tasks claimed or acknowledged by one script at most (Lua's unpack() takes ~8,000
#: values; a larger batch is split into several scripts in the same round trip).
MAX_BATCH = 1000

#: Stands for the claiming worker's id in a settle script's arguments.
_WORKER = object()


class SettleMixin(RedisClient):
    """The scripts that settle a leased task, and lease renewals.

    Mixed into :class:`~dtq_core.backends.redis.backend.RedisBackend` (through
    :class:`~dtq_core.backends.redis.leases.LeaseMixin`), which registers the scripts
    in its constructor.
    """

    _ack_many: Any
    _fail: Any
    _bury: Any
    _release: Any
    _extend: Any
    _claimed: dict[str, tuple[str, str]]
    _claimed_by: dict[str, tuple[str, int]]

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
