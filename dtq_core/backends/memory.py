"""The in-memory backend: one process, one lock, nothing durable.

It is also the state machine of the embedded store, which logs each change to its
write-ahead log and applies it here.
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any

from dtq_core.backends.base import (
    Backend,
    Capabilities,
    Delivery,
    NewTask,
    Transition,
)
from dtq_core.backends.lost import LostLog
from dtq_core.backends.memory_expiry import ExpiryMixin
from dtq_core.backends.memory_index import TaskIndex
from dtq_core.backends.memory_kv import KeyValueMixin
from dtq_core.backends.memory_queries import QueryMixin
from dtq_core.clock import SYSTEM_CLOCK, Clock
from dtq_core.queue import IndexedHeap
from dtq_core.task import TRANSITIONS, Attempt, ErrorInfo, TaskRecord, TaskState

S = TaskState


class MemoryBackend(KeyValueMixin, QueryMixin, ExpiryMixin, Backend):
    """All state in dicts and heaps under one lock; ``memory://``."""

    capabilities = Capabilities(durable=False, cross_process=False, blocking_claim=True)
    #: Subclasses that wrap these methods under the same lock need it reentrant.
    reentrant = False

    def __init__(self, url: str = "memory://", clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(url, clock)
        self._lock: threading.Lock | threading.RLock = (
            threading.RLock() if self.reentrant else threading.Lock()
        )
        self._cond = threading.Condition(self._lock)
        self._waiting = 0
        self._records: dict[str, TaskRecord] = {}
        self._index = TaskIndex(self._records, self._state_members)
        self._ready: dict[str, IndexedHeap] = {}
        self._delayed = IndexedHeap()
        self._leases = IndexedHeap()
        self._lost = LostLog()
        self._dead: dict[str, None] = {}  # insertion order = time of death
        self._paused: set[str] = set()
        self._counts: dict[TaskState, int] = dict.fromkeys(TaskState, 0)
        self._running: dict[str, int] = {}
        self._expiry: deque[tuple[float, str]] = deque()
        self._kv: dict[str, tuple[str, float | None]] = {}
        self._workers: dict[str, tuple[dict[str, Any], float]] = {}
        self._names: set[str] = set()
        self._tokens = itertools.count(1)
        self._kv_swept = 0.0

    # -- helpers (lock held) -------------------------------------------------------------

    def _move(self, rec: TaskRecord, new: TaskState, note: str | None = None) -> Transition:
        old = rec.state
        if new not in TRANSITIONS[old]:
            from dtq_core.errors import IllegalTransition

            raise IllegalTransition(rec.id, old.value, new.value)
        counts = self._counts
        counts[old] -= 1
        counts[new] += 1
        rec.state = new
        self._index.moved(rec, old)
        if old is S.RUNNING:
            self._running[rec.queue] -= 1
            self._leases.remove(rec.id)
            rec.lease_deadline = None
        elif new is S.RUNNING:
            self._running[rec.queue] = self._running.get(rec.queue, 0) + 1
        return Transition(rec.id, rec.name, rec.queue, old, new, note)

    def _schedule(self, rec: TaskRecord, eta: float | None, now: float) -> None:
        if eta is not None and eta > now:
            rec.eta = eta
            self._delayed.push(rec.id, eta)
            return
        rec.eta = None
        heap = self._ready.get(rec.queue)
        if heap is None:
            heap = self._ready[rec.queue] = IndexedHeap()
        heap.push(rec.id, rec.priority)
        if self._waiting:
            self._cond.notify()

    def _leased(self, task_id: str, token: int) -> TaskRecord | None:
        rec = self._records.get(task_id)
        if rec is None or rec.state is not S.RUNNING or rec.lease_token != token:
            return None
        return rec

    def _finish(self, rec: TaskRecord, now: float) -> None:
        rec.finished_at = now
        self._expiry.append((now + self.result_ttl, rec.id))

    def _close_attempt(self, rec: TaskRecord, outcome: str) -> None:
        rec.history = (
            *rec.history,
            Attempt(rec.attempt, rec.worker, rec.started_at, rec.finished_at, outcome, rec.error),
        )

    def _state_members(self, state: TaskState) -> Iterable[str]:
        """Ids that may be in ``state`` (a superset), from the structures that hold them."""
        if state is S.RUNNING:
            return iter(self._leases)
        if state is S.DEAD:
            return iter(self._dead)
        if state is S.RETRY:
            return iter(self._delayed)
        if state is S.PENDING:
            return itertools.chain(self._delayed, *self._ready.values())
        return (task_id for _, task_id in self._expiry)

    def wakeup(self) -> None:
        """Wake every claimer blocked in :meth:`claim`."""
        with self._lock:
            self._cond.notify_all()

    # -- queue -------------------------------------------------------------------------

    def enqueue(self, task: NewTask, now: float) -> list[Transition]:
        """Store a new PENDING task, ready now or at ``task.eta``."""
        rec = TaskRecord(
            task.id,
            task.name,
            task.queue,
            task.priority,
            task.payload,
            S.PENDING,
            now,
            now,
            max_retries=task.max_retries,
            time_limit=task.time_limit,
            dedup_key=task.dedup_key,
            replayed_from=task.replayed_from,
            workflow=task.workflow,
        )
        with self._lock:
            return [self._insert(rec, task.eta, now)]

    def _insert(self, rec: TaskRecord, eta: float | None, now: float) -> Transition:
        if rec.id in self._records:
            from dtq_core.errors import BackendError

            raise BackendError(f"task id {rec.id!r} already exists")
        self._records[rec.id] = rec
        self._index.add(rec)
        self._counts[S.PENDING] += 1
        self._schedule(rec, eta, now)
        return Transition(rec.id, rec.name, rec.queue, None, S.PENDING)

    def claim(
        self,
        queues: Sequence[str] | None,
        worker_id: str,
        lease_s: float,
        limit: int,
        now: float,
        wait: float = 0.0,
    ) -> list[Delivery]:
        """Lease up to ``limit`` ready tasks (PENDING -> RUNNING)."""
        with self._lock:
            out = self._claim(queues, worker_id, lease_s, limit, now)
            if not out and wait > 0:
                self._waiting += 1
                try:
                    self._cond.wait(wait)
                finally:
                    self._waiting -= 1
                out = self._claim(queues, worker_id, lease_s, limit, self.clock.now())
            return out

    def _pick(self, queues: Sequence[str] | None) -> IndexedHeap | None:
        ready, paused = self._ready, self._paused
        if queues is None:
            best: IndexedHeap | None = None
            best_order: tuple[float, int] | None = None
            for name, heap in ready.items():
                if not heap or name in paused:
                    continue
                order = heap.head_order()
                if best_order is None or (order is not None and order < best_order):
                    best, best_order = heap, order
            return best
        for name in queues:
            found = ready.get(name)
            if found and name not in paused:
                return found
        return None

    def _claim(
        self, queues: Sequence[str] | None, worker_id: str, lease_s: float, limit: int, now: float
    ) -> list[Delivery]:
        out: list[Delivery] = []
        records = self._records
        deadline = now + lease_s
        while len(out) < limit:
            heap = self._pick(queues)
            if heap is None:
                break
            task_id = heap.pop()
            assert task_id is not None
            rec = records[task_id]
            out.append(self._start(rec, worker_id, next(self._tokens), deadline, now))
        return out

    def _start(
        self, rec: TaskRecord, worker_id: str, token: int, deadline: float, now: float
    ) -> Delivery:
        self._move(rec, S.RUNNING)
        rec.attempt += 1
        rec.deliveries += 1
        rec.worker = worker_id
        rec.started_at = now
        rec.finished_at = None
        rec.lease_token = token
        rec.lease_deadline = deadline
        self._leases.push(rec.id, deadline)
        return Delivery(
            rec.id,
            token,
            rec.name,
            rec.queue,
            rec.payload,
            rec.attempt,
            rec.deliveries,
            rec.enqueued_at,
            now,
            rec.time_limit,
            rec.max_retries,
        )

    def ack(self, task_id: str, token: int, result: Any, now: float) -> list[Transition]:
        """RUNNING -> SUCCESS with ``result``; empty when the token is stale."""
        with self._lock:
            rec = self._leased(task_id, token)
            if rec is None:
                return []
            rec.result = result  # the runner hands over its JSON form (codec.json_form)
            rec.error = None
            self._finish(rec, now)
            return [self._move(rec, S.SUCCESS)]

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
        """RUNNING -> FAILED, then -> RETRY (``retry_at``) or -> DEAD (``dead_reason``)."""
        with self._lock:
            rec = self._leased(task_id, token)
            if rec is None:
                return []
            rec.error = error
            rec.finished_at = now
            out = [self._move(rec, S.FAILED, f"{error.type}: {error.message}")]
            if retry_at is not None:
                self._close_attempt(rec, S.FAILED.value)
                out.append(self._move(rec, S.RETRY))
                if retry_at > now:
                    self._schedule(rec, retry_at, now)
                else:  # due at once: straight back to its queue
                    out.append(self._move(rec, S.PENDING))
                    self._schedule(rec, None, now)
            elif dead_reason is not None:
                rec.dead_reason = dead_reason
                out.append(self._move(rec, S.DEAD, dead_reason))
                self._dead[rec.id] = None
            else:
                self._finish(rec, now)
            return out

    def bury(
        self, task_id: str, token: int, error: ErrorInfo, reason: str, now: float
    ) -> list[Transition]:
        """RUNNING -> DEAD for a message that can never run."""
        with self._lock:
            rec = self._leased(task_id, token)
            if rec is None:
                return []
            return [self._bury(rec, error, reason, now)]

    def _bury(self, rec: TaskRecord, error: ErrorInfo, reason: str, now: float) -> Transition:
        rec.error = error
        rec.finished_at = now
        rec.dead_reason = reason
        self._dead[rec.id] = None
        return self._move(rec, S.DEAD, reason)

    def release(
        self, task_id: str, token: int, now: float, eta: float | None = None, note: str = ""
    ) -> list[Transition]:
        """RUNNING -> PENDING without counting an attempt."""
        with self._lock:
            rec = self._leased(task_id, token)
            if rec is None:
                return []
            rec.attempt -= 1
            rec.deliveries -= 1
            # Not an attempt: forget this start, so no phantom attempt shows.
            rec.started_at = rec.worker = None
            if rec.history:
                last = rec.history[-1]
                rec.started_at, rec.finished_at, rec.worker = (
                    last.started_at,
                    last.finished_at,
                    last.worker,
                )
            tr = self._move(rec, S.PENDING, note or None)
            self._schedule(rec, eta, now)
            return [tr]

    def extend_leases(self, leases: Iterable[tuple[str, int]], lease_s: float, now: float) -> None:
        """Renew the leases of running tasks."""
        deadline = now + lease_s
        with self._lock:
            for task_id, token in leases:
                rec = self._leased(task_id, token)
                if rec is not None:
                    rec.lease_deadline = deadline
                    self._leases.push(task_id, deadline)

    def _beside(self, rec: TaskRecord) -> tuple[tuple[str, str], ...]:
        """The tasks lost with, or still running in, ``rec``'s worker process."""
        return self._lost.beside(rec, (self._records[i] for i in self._leases))

    def reclaim_expired(self, now: float, max_deliveries: int) -> list[Transition]:
        """Requeue tasks whose lease ran out; DEAD (``worker_lost``) past the limit."""
        out: list[Transition] = []
        with self._lock:
            due = self._leases.pop_until(now, 10_000)
            for task_id in due:
                self._lost.add(self._records[task_id])
            for task_id in due:
                rec = self._records[task_id]
                lost = ErrorInfo("WorkerLost", f"lease expired on worker {rec.worker}")
                if rec.deliveries >= max_deliveries:
                    lost = replace(lost, beside=self._beside(rec))
                    out.append(self._bury(rec, lost, "worker_lost", now))
                    continue
                rec.error = lost
                rec.finished_at = now
                self._close_attempt(rec, "LOST")
                out.append(self._move(rec, S.PENDING, "lease expired: requeued"))
                self._schedule(rec, None, now)
        return out

    def promote_due(self, now: float, limit: int = 1000) -> list[Transition]:
        """Move due delayed tasks into their ready queues (RETRY -> PENDING)."""
        out: list[Transition] = []
        with self._lock:
            for task_id in self._delayed.pop_until(now, limit):
                rec = self._records[task_id]
                if rec.state is S.RETRY:
                    out.append(self._move(rec, S.PENDING))
                self._schedule(rec, None, now)
        return out

    def next_due(self) -> float | None:
        """When the earliest delayed task is due."""
        with self._lock:
            return self._delayed.peek_key()

    def cancel(self, task_id: str, now: float) -> list[Transition]:
        """PENDING/RETRY -> CANCELLED."""
        with self._lock:
            rec = self._records.get(task_id)
            if rec is None or rec.state not in (S.PENDING, S.RETRY):
                return []
            if not self._delayed.remove(task_id):
                self._ready[rec.queue].remove(task_id)
            self._finish(rec, now)
            return [self._move(rec, S.CANCELLED, "cancelled")]

    def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue."""
        with self._lock:
            if paused:
                self._paused.add(queue)
            else:
                self._paused.discard(queue)
                if self._waiting:
                    self._cond.notify_all()

    # -- records -----------------------------------------------------------------------

    # -- dead letters ------------------------------------------------------------------

    def replay(
        self, task_id: str, new_task: NewTask, edit: dict[str, Any] | None, now: float
    ) -> list[Transition]:
        """Enqueue ``new_task`` as the replay of dead ``task_id``."""
        from dtq_core.errors import TaskNotFound

        with self._lock:
            old = self._records.get(task_id)
            if old is None or old.state is not S.DEAD:
                raise TaskNotFound(f"no dead task {task_id!r}")
            rec = TaskRecord(
                new_task.id,
                new_task.name,
                new_task.queue,
                new_task.priority,
                new_task.payload,
                S.PENDING,
                now,
                now,
                max_retries=new_task.max_retries,
                time_limit=new_task.time_limit,
                replayed_from=task_id,
                workflow=new_task.workflow,
                edits=(edit,) if edit else (),
            )
            tr = self._insert(rec, new_task.eta, now)
            old.replayed_to = (*old.replayed_to, new_task.id)
            if edit:
                old.edits = (*old.edits, {**edit, "new_task": new_task.id})
            return [tr]

    def purge(self, task_ids: Sequence[str]) -> int:
        """Delete dead records."""
        n = 0
        with self._lock:
            for task_id in task_ids:
                if task_id in self._dead:
                    del self._dead[task_id]
                    self._index.discard(self._records[task_id])
                    rec = self._records.pop(task_id)
                    self._counts[rec.state] -= 1
                    n += 1
        return n
