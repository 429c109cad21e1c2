"""The in-memory state machine with every change logged first, and replayed from the log."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dtq_core.backends.base import Delivery, NewTask, Transition
from dtq_core.backends.embedded.framing import MAX_BODY
from dtq_core.backends.embedded.malformed import MALFORMED, placeholder, task_flaw
from dtq_core.backends.embedded.oplog import (
    OP_CALL,
    OP_CLAIM,
    OP_ENQ,
    OP_KVDEL,
    OP_KVSET,
    OP_NAMES,
    OP_NAMES_BY_TYPE,
    OP_PROMOTE,
    OP_RECLAIM,
    _decode_args,
    _dumps,
    _new_task,
    _task_dict,
)
from dtq_core.backends.embedded.wal import WriteAheadLog
from dtq_core.backends.memory import MemoryBackend
from dtq_core.errors import BackendError, SerializationError, StoreFailed
from dtq_core.task import ErrorInfo, TaskState

log = logging.getLogger("dtq.embedded")


class LoggedMemoryBackend(MemoryBackend):
    """The memory backend whose changes are appended to a write-ahead log as they apply.

    Each change is applied under the backend lock and submitted to the log under the same
    lock; the caller waits for durability outside it. :meth:`_apply` replays a logged
    change. The base of :class:`~dtq_core.backends.embedded.backend.EmbeddedBackend`,
    which opens the log (``_wal``) and sets up the state in its constructor.
    """

    path: Path
    _wal: WriteAheadLog | None
    _replaying: bool
    _claim_lsn: threading.local
    _stats: dict[str, Any]

    # -- logging -----------------------------------------------------------------------

    def _require_wal(self) -> WriteAheadLog:
        if self._wal is None:
            raise BackendError(f"embedded store {self.path} is not open")
        return self._wal

    def _submit(self, op: int, body: Any) -> int:
        if self._replaying:
            return 0
        return self._submit_bytes(op, _dumps(body).encode())

    def _submit_bytes(self, op: int, raw: bytes) -> int:
        try:
            return self._require_wal().submit(op, raw)
        except ValueError as exc:  # oversized: checked before applying where it can be
            raise BackendError(f"log record refused: {exc}") from None

    @staticmethod
    def _encode(body: Any) -> bytes:
        """Encode a record body before the change is applied.

        A body the log would refuse (over ``MAX_BODY``) refuses the change instead of
        leaving it applied but unlogged.
        """
        raw = _dumps(body).encode()
        if len(raw) > MAX_BODY:
            raise SerializationError(
                f"this change would write a {len(raw):,}-byte log record (the limit is "
                f"{MAX_BODY:,}): keep task arguments and results small, store big data "
                "elsewhere and pass a reference"
            )
        return raw

    def _alive(self) -> None:
        """Fail-stop: once the log failed, nothing changes any more.

        A change is refused before it is applied, so readers never see an effect that
        was never logged; a restart recovers the logged state.
        """
        wal = self._wal
        if wal is not None and wal.failed:
            raise StoreFailed(
                f"embedded store {self.path} stopped after a write-ahead log I/O error "
                f"({wal.failure}); restart the process to recover its acknowledged state"
            )

    def _wait(self, lsn: int) -> None:
        if lsn:
            self._require_wal().wait(lsn)

    def _log_key(self, key: str) -> int:
        item = self._kv.get(key)
        if item is None:
            return self._submit(OP_KVDEL, [key])
        return self._submit(OP_KVSET, [key, item[0], item[1]])

    def _call(self, name: str, args: list[Any], wait: bool = True) -> Any:
        raw = self._encode([name, args])
        self._alive()
        with self._lock:
            self._alive()  # again under the lock: no change after a failure
            a, kw = _decode_args(name, args)
            out = getattr(MemoryBackend, name)(self, *a, **kw)
            lsn = self._submit_bytes(OP_CALL, raw) if out else 0
        if wait:
            self._wait(lsn)
        return out

    # -- replay --------------------------------------------------------------------------

    def _replay_record(self, lsn: int, op: int, raw: bytes) -> int:
        """Apply one record at recovery; a malformed one is skipped, counted and logged.

        See :mod:`.malformed`: a task that cannot be read is dead-lettered by
        :meth:`_apply` itself; any other body that cannot be applied is skipped here.
        Bodies are checked before they change anything, so a skipped record leaves no
        half of itself behind.
        """
        try:
            return self._apply(op, json.loads(raw))
        except MALFORMED as exc:
            self._stats["malformed_records"] = self._stats.get("malformed_records", 0) + 1
            log.warning(
                "%s: log record lsn %d (%s) cannot be applied and was skipped: %s: %s",
                self.path,
                lsn,
                OP_NAMES_BY_TYPE.get(op, f"type {op}"),
                type(exc).__name__,
                exc,
            )
            return 0

    def _bury_malformed(self, task: dict[str, Any], why: str, now: float) -> None:
        """Dead-letter a logged task that cannot be read (see :mod:`.malformed`)."""
        new = placeholder(task)
        if new.id in self._records:
            raise ValueError(f"task id {new.id!r} exists already")
        MemoryBackend.enqueue(self, new, now)
        rec = self._records[new.id]
        self._ready[rec.queue].remove(rec.id)
        self._bury(rec, ErrorInfo("MalformedRecord", why), "malformed record", now)

    def _apply(self, op: int, body: Any) -> int:
        """Apply one logged change; return the largest lease token it names."""
        if op == OP_ENQ:
            why = task_flaw(body[0])
            if why is not None and isinstance(body[0], dict) and isinstance(body[0].get("id"), str):
                self._bury_malformed(body[0], why, float(body[1]))
            elif why is not None:
                raise ValueError(why)
            else:
                MemoryBackend.enqueue(self, _new_task(body[0]), body[1])
        elif op == OP_CLAIM:
            tokens = [c[1] for c in body[0]]
            for task_id, *_ in body[0]:  # all known, or nothing is applied
                self._records[task_id]
            for task_id, token, worker, deadline in body[0]:
                rec = self._records[task_id]
                self._ready[rec.queue].remove(task_id)
                self._start(rec, worker, token, deadline, body[1])
            return max(tokens, default=0)
        elif op == OP_CALL:
            a, kw = _decode_args(body[0], body[1])
            getattr(MemoryBackend, body[0])(self, *a, **kw)
        elif op == OP_PROMOTE:
            for task_id in body[0]:
                rec = self._records[task_id]
                self._delayed.remove(task_id)
                if rec.state is TaskState.RETRY:
                    self._move(rec, TaskState.PENDING)
                self._schedule(rec, None, body[1])
        elif op == OP_RECLAIM:
            for task_id, _ in body[0]:
                self._lost.add(self._records[task_id])
            for task_id, bury in body[0]:
                with self._lock:
                    self._leases.push(task_id, float("-inf"))
                    self._reclaim_one(task_id, bool(bury), body[1])
        elif op == OP_KVSET:
            self._kv[body[0]] = (body[1], body[2])
        elif op == OP_KVDEL:
            self._kv.pop(body[0], None)
        elif op == OP_NAMES:
            self._names.update(body)
        else:
            raise ValueError(f"unknown record type {op}")
        return 0

    def _reclaim_one(self, task_id: str, bury: bool, now: float) -> Transition:
        rec = self._records[task_id]
        self._leases.remove(task_id)
        lost = ErrorInfo("WorkerLost", f"lease expired on worker {rec.worker}")
        if bury:
            lost = dataclasses.replace(lost, beside=self._beside(rec))
            return self._bury(rec, lost, "worker_lost", now)
        rec.error = lost
        rec.finished_at = now
        self._close_attempt(rec, "LOST")
        tr = self._move(rec, TaskState.PENDING, "lease expired: requeued")
        self._schedule(rec, None, now)
        return tr

    # -- logged operations ---------------------------------------------------------------

    def enqueue(self, task: NewTask, now: float) -> list[Transition]:
        """Store a new task; returns once its record is durable (per the fsync mode)."""
        raw = self._encode([_task_dict(task), now])
        self._alive()
        with self._lock:
            self._alive()
            out = super().enqueue(task, now)
            lsn = self._submit_bytes(OP_ENQ, raw)
        self._wait(lsn)
        return out

    def enqueue_many(self, tasks: Sequence[NewTask], now: float) -> list[Transition]:
        """Store several tasks with one wait for durability."""
        self._alive()
        out: list[Transition] = []
        lsn = 0
        with self._lock:
            for t in tasks:
                out.extend(MemoryBackend.enqueue(self, t, now))
                lsn = self._submit(OP_ENQ, [_task_dict(t), now])
        self._wait(lsn)
        return out

    def _claim(
        self, queues: Sequence[str] | None, worker_id: str, lease_s: float, limit: int, now: float
    ) -> list[Delivery]:
        out = super()._claim(queues, worker_id, lease_s, limit, now)
        if out:
            deadline = now + lease_s
            self._claim_lsn.value = self._submit(
                OP_CLAIM, [[[d.task_id, d.token, worker_id, deadline] for d in out], now]
            )
        return out

    def ack(self, task_id: str, token: int, result: Any, now: float) -> list[Transition]:
        """RUNNING -> SUCCESS, durable before it returns."""
        return list(self._call("ack", [task_id, token, result, now]))

    def ack_many(
        self, acks: Sequence[tuple[str, int, Any]], now: float, *, retry: bool = False
    ) -> list[list[Transition]]:
        """Acknowledge a batch with one wait for durability (one fsync when alone).

        With ``retry``, a task already SUCCESS under the same token counts as
        acknowledged: the first call stored it and its reply was lost.
        """
        raws = [self._encode(["ack", [tid, token, result, now]]) for tid, token, result in acks]
        self._alive()
        out: list[list[Transition]] = []
        lsn = 0
        with self._lock:
            self._alive()
            for (tid, token, result), raw in zip(acks, raws, strict=True):
                trs = MemoryBackend.ack(self, tid, token, result, now)
                if trs:
                    lsn = self._submit_bytes(OP_CALL, raw)
                elif retry:
                    rec = self._records.get(tid)
                    if (
                        rec is not None
                        and rec.state is TaskState.SUCCESS
                        and (rec.lease_token == token)
                    ):
                        trs = [
                            Transition(
                                tid, rec.name, rec.queue, TaskState.RUNNING, TaskState.SUCCESS
                            )
                        ]
                out.append(trs)
        self._wait(lsn)
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
        """RUNNING -> FAILED -> RETRY or DEAD, durable before it returns."""
        args = [task_id, token, error.to_dict(), now, retry_at, dead_reason]
        return list(self._call("fail", args))

    def bury(
        self, task_id: str, token: int, error: ErrorInfo, reason: str, now: float
    ) -> list[Transition]:
        """RUNNING -> DEAD."""
        return list(self._call("bury", [task_id, token, error.to_dict(), reason, now]))

    def release(
        self, task_id: str, token: int, now: float, eta: float | None = None, note: str = ""
    ) -> list[Transition]:
        """RUNNING -> PENDING."""
        return list(self._call("release", [task_id, token, now, eta, note]))

    def reclaim_expired(self, now: float, max_deliveries: int) -> list[Transition]:
        """Requeue expired leases (logged with the decision for each task)."""
        self._alive()
        out: list[Transition] = []
        with self._lock:
            due = self._leases.pop_until(now, 10_000)
            decisions = []
            for task_id in due:
                self._lost.add(self._records[task_id])
            for task_id in due:
                self._leases.push(task_id, float("-inf"))
                bury = self._records[task_id].deliveries >= max_deliveries
                out.append(self._reclaim_one(task_id, bury, now))
                decisions.append([task_id, int(bury)])
            if decisions:
                self._submit(OP_RECLAIM, [decisions, now])
        return out

    def expire(self, now: float) -> int:
        """Drop finished records past their TTL, logged.

        Replay drops them too: a reused task id would otherwise collide with its expired
        predecessor on recovery.
        """
        with self._lock:
            ids = self._expire_ids(now)
            if ids and not self._replaying and self._wal is not None and not self._wal.failed:
                self._submit(OP_CALL, ["drop_finished", [ids]])
        return len(ids)

    def promote_due(self, now: float, limit: int = 1000) -> list[Transition]:
        """Move due delayed tasks into their queues (logged)."""
        self._alive()
        with self._lock:
            ids = self._delayed.pop_until(now, limit)
            out = []
            for task_id in ids:
                rec = self._records[task_id]
                if rec.state is TaskState.RETRY:
                    out.append(self._move(rec, TaskState.PENDING))
                self._schedule(rec, None, now)
            if ids:
                self._submit(OP_PROMOTE, [ids, now])
        return out

    def cancel(self, task_id: str, now: float) -> list[Transition]:
        """PENDING/RETRY -> CANCELLED."""
        return list(self._call("cancel", [task_id, now]))

    def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue (persisted)."""
        self._alive()
        with self._lock:
            super().set_paused(queue, paused)
            lsn = self._submit(OP_CALL, ["set_paused", [queue, paused]])
        self._wait(lsn)

    def replay(
        self, task_id: str, new_task: NewTask, edit: dict[str, Any] | None, now: float
    ) -> list[Transition]:
        """Enqueue the replay of a dead task (logged)."""
        return list(self._call("replay", [task_id, _task_dict(new_task), edit, now]))

    def purge(self, task_ids: Sequence[str]) -> int:
        """Delete dead records (logged)."""
        return int(self._call("purge", [list(task_ids)]) or 0)

    def set_if_absent(self, key: str, value: str, ttl_s: float, now: float) -> str | None:
        """Set-if-absent, persisted when it sets."""
        self._alive()
        with self._lock:
            old = super().set_if_absent(key, value, ttl_s, now)
            lsn = self._log_key(key) if old is None else 0
        self._wait(lsn)
        return old

    def set_key(self, key: str, value: str, ttl_s: float | None, now: float) -> None:
        """Set ``key`` (persisted)."""
        self._alive()
        with self._lock:
            super().set_key(key, value, ttl_s, now)
            lsn = self._log_key(key)
        self._wait(lsn)

    def add_counts(
        self,
        key: str,
        incr: dict[str, float],
        maxima: dict[str, float],
        ttl_s: float | None,
        now: float,
    ) -> None:
        """Add to a count map; logged as the map's new value, without a durability wait.

        Metrics: losing the last second of them in a machine crash is fine, and a
        publisher must not wait for an fsync.
        """
        self._alive()
        with self._lock:  # reentrant: the state machine's add takes it again
            super().add_counts(key, incr, maxima, ttl_s, now)
            self._log_key(key)

    def delete_key(self, key: str) -> None:
        """Remove ``key`` (persisted)."""
        self._alive()
        with self._lock:
            super().delete_key(key)
            lsn = self._submit(OP_KVDEL, [key])
        self._wait(lsn)

    def compare_and_set(
        self, key: str, expected: str | None, value: str, ttl_s: float | None, now: float
    ) -> bool:
        """Compare-and-set, persisted when it sets."""
        self._alive()
        with self._lock:
            ok = super().compare_and_set(key, expected, value, ttl_s, now)
            lsn = self._log_key(key) if ok else 0
        self._wait(lsn)
        return ok

    def reserve(self, key: str, rate: float, burst: int, now: float) -> float:
        """GCRA reserve; the bucket state is logged without waiting."""
        self._alive()
        with self._lock:
            wait = super().reserve(key, rate, burst, now)
            self._log_key(key)
        return wait

    def register_names(self, names: Iterable[str]) -> None:
        """Record task names (persisted, so producers can check them after a restart)."""
        self._alive()
        names = sorted(set(names) - self._names)
        if not names:
            return
        with self._lock:
            super().register_names(names)
            lsn = self._submit(OP_NAMES, names)
        self._wait(lsn)

    # -- fail-stop ---------------------------------------------------------------------

    def claim(
        self,
        queues: Sequence[str] | None,
        worker_id: str,
        lease_s: float,
        limit: int,
        now: float,
        wait: float = 0.0,
    ) -> list[Delivery]:
        """Lease tasks (refused once the log failed).

        The claim record reaches the OS before the task runs (no fsync wait): a task
        that kills its process still has its delivery counted, so it ends dead as
        ``worker_lost`` instead of looping.
        """
        self._alive()
        self._claim_lsn.value = 0
        out = super().claim(queues, worker_id, lease_s, limit, now, wait)
        lsn = self._claim_lsn.value
        if lsn:
            self._require_wal().wait_written(lsn)
        return out
