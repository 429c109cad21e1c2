"""The tasks of the in-memory state machine: records, queues, leases, dead letters.

:class:`TaskTable` owns every structure that holds a task and applies the task changes of
:mod:`dtq_core.backends.changes`, one method per record type (the changes of leases are
functions of the table, in :mod:`~dtq_core.backends.memory_leases`). It never locks: its owner
(:class:`~dtq_core.backends.local.LocalBackend`) calls it with its lock held.

Invariants: every record is in ``records`` and the sort ``index``; a PENDING task is in
exactly one of its queue's ``ready`` queue or ``delayed`` (by its ``eta``: a task in
``delayed`` has one); a RETRY task is in ``delayed``; a RUNNING task is in ``leases``
(by deadline); a DEAD task is in ``dead`` (in order of death); a finished task has an
entry in ``expiry``. ``counts`` and ``running`` count records per state and RUNNING
tasks per queue.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from sys import intern
from typing import Any

from dtq_core.backends.base import Transition
from dtq_core.backends.changes import (
    Cancel,
    Enqueue,
    Expire,
    Pause,
    Promote,
    Purge,
    Replay,
    TaskSpec,
)
from dtq_core.backends.lost import LostLog
from dtq_core.backends.memory_index import TaskIndex
from dtq_core.errors import BackendError, IllegalTransition, TaskNotFound
from dtq_core.packed import pack
from dtq_core.queue import IndexedHeap
from dtq_core.ready_queue import ReadyQueue
from dtq_core.task import (
    TRANSITIONS,
    Attempt,
    ErrorInfo,
    Extras,
    TaskRecord,
    TaskState,
    make_record,
)

S = TaskState
PENDING, RUNNING = S.PENDING, S.RUNNING
#: Final states whose records expire (DEAD stays until purged).
LIVE_END = frozenset({S.SUCCESS, S.FAILED, S.CANCELLED})
#: Builds a named tuple from a plain one without its Python-level ``__new__``: the
#: appliers make one per change, at replay a few million.
make_tuple = tuple.__new__


def new_record(spec: TaskSpec, now: float, edits: tuple[dict[str, Any], ...] = ()) -> TaskRecord:
    """A PENDING record for ``spec`` enqueued at ``now``."""
    extras = None
    key, source, flow = spec.dedup_key, spec.replayed_from, spec.workflow
    if edits or key is not None or source is not None or flow is not None:
        extras = Extras(None, (), source, (), None, edits, key, flow)
    # The stored fields by position (this is the enqueue path, live and at replay). A
    # decoded record (replay, an attached process) brings its own copy of the task and
    # queue names: one shared copy saves ~110 bytes per task. The payload is packed.
    task_id, name = spec.id, intern(spec.name)
    return make_record(  # type: ignore[no-any-return]
        TaskRecord, task_id, name, intern(spec.queue), spec.priority,
        pack(task_id, name, spec.payload), PENDING, now, None, spec.max_retries,
        spec.time_limit, None, extras,
    )  # fmt: skip


class TaskTable:
    """Every task structure, and the changes that move tasks between them.

    Args:
        wake: Called when a task becomes ready (``True``: wake every waiting claimer).
    """

    def __init__(self, wake: Callable[[bool], None]) -> None:
        self.records: dict[str, TaskRecord] = {}
        self.index = TaskIndex(self.records, self._state_members)
        self.ready: dict[str, ReadyQueue] = {}
        self.delayed = IndexedHeap()
        self.leases = IndexedHeap()
        self.lost = LostLog()
        self.dead: dict[str, None] = {}  # insertion order = time of death
        self.paused: set[str] = set()
        self.counts: dict[TaskState, int] = dict.fromkeys(TaskState, 0)
        self.running: dict[str, int] = {}
        self.expiry: deque[tuple[float, str]] = deque()
        #: The lease token the next claim gives (tokens never repeat, across restarts).
        self.next_token = 1
        #: Seconds a finished record is kept; read when the task finishes.
        self.result_ttl = 600.0
        #: Finished records kept at most.
        self.max_results = 100_000
        self._wake = wake

    # -- helpers -------------------------------------------------------------------------

    def move(self, rec: TaskRecord, new: TaskState, note: str | None = None) -> Transition:
        """Change ``rec``'s state, keeping counts, the index and the leases in step."""
        old = rec.state
        if new not in TRANSITIONS[old]:
            raise IllegalTransition(rec.id, old.value, new.value)
        counts = self.counts
        counts[old] -= 1
        counts[new] += 1
        rec.state = new
        self.index.moved(rec, old)
        if old is RUNNING:
            self.running[rec.queue] -= 1
            self.leases.remove(rec.id)
            run = rec.last_run
            if run is not None:
                run.lease_deadline = None
        elif new is RUNNING:
            running = self.running
            running[rec.queue] = running.get(rec.queue, 0) + 1
        return make_tuple(Transition, (rec.id, rec.name, rec.queue, old, new, note))

    def schedule(self, rec: TaskRecord, eta: float | None, now: float) -> None:
        """Put a PENDING or RETRY task in ``delayed`` (until ``eta``) or its ready queue."""
        if eta is not None and eta > now:
            rec.eta = eta
            self.delayed.push(rec.id, eta)
            return
        rec.eta = None
        queue = self.ready.get(rec.queue)
        if queue is None:
            queue = self.ready[rec.queue] = ReadyQueue()
        queue.push(rec.id, rec.priority)
        self._wake(False)

    def leased(self, task_id: str, token: int) -> TaskRecord | None:
        """The record if it is RUNNING under ``token``."""
        rec = self.records.get(task_id)
        if rec is None or rec.state is not RUNNING or rec.lease_token != token:
            return None
        return rec

    def finish(self, rec: TaskRecord, now: float) -> None:
        """Stamp the end of a task and queue its record for expiry."""
        rec.finished_at = now
        self.expiry.append((now + self.result_ttl, rec.id))

    def close_attempt(self, rec: TaskRecord, outcome: str) -> None:
        """Move the current attempt into the history with ``outcome``."""
        rec.history = (
            *rec.history,
            Attempt(rec.attempt, rec.worker, rec.started_at, rec.finished_at, outcome, rec.error),
        )

    def _state_members(self, state: TaskState) -> Iterable[str]:
        """Ids that may be in ``state`` (a superset), from the structures that hold them."""
        if state is S.RUNNING:
            return iter(self.leases)
        if state is S.DEAD:
            return iter(self.dead)
        if state is S.RETRY:
            return iter(self.delayed)
        if state is S.PENDING:
            return itertools.chain(self.delayed, *self.ready.values())
        return (task_id for _, task_id in self.expiry)

    def bury_record(self, rec: TaskRecord, error: ErrorInfo, reason: str, now: float) -> Transition:
        """Dead-letter ``rec`` (its state must allow DEAD) for ``reason``."""
        rec.error = error
        rec.finished_at = now
        rec.dead_reason = reason
        self.dead[rec.id] = None
        return self.move(rec, S.DEAD, reason)

    def bury_pending(self, task_id: str, error: ErrorInfo, reason: str, now: float) -> None:
        """PENDING -> DEAD (a logged task that cannot be read; see ``malformed``)."""
        rec = self.records[task_id]
        if not self.delayed.remove(task_id):
            self.ready[rec.queue].remove(task_id, rec.priority)
        self.bury_record(rec, error, reason, now)

    def insert(self, rec: TaskRecord, eta: float | None, now: float) -> Transition:
        """Add a new PENDING record (its id is known to be free)."""
        self.records[rec.id] = rec
        self.index.add(rec)
        self.counts[PENDING] += 1
        self.schedule(rec, eta, now)
        return make_tuple(Transition, (rec.id, rec.name, rec.queue, None, PENDING, None))

    # -- queue ---------------------------------------------------------------------------

    def enqueue(self, c: Enqueue) -> list[Transition]:
        """Store new tasks; none is stored when one id exists already."""
        records, tasks, now = self.records, c.tasks, c.now
        if len(tasks) == 1:
            if tasks[0].id in records:
                raise BackendError(f"task id {tasks[0].id!r} already exists")
        else:
            seen: set[str] = set()
            for spec in tasks:
                if spec.id in records or spec.id in seen:
                    raise BackendError(f"task id {spec.id!r} already exists")
                seen.add(spec.id)
        # insert() and schedule() written out: this is every enqueue, live and at replay.
        records, add, ready, wake = self.records, self.index.add, self.ready, self._wake
        out = []
        for spec in tasks:
            rec = new_record(spec, now)
            task_id, queue = rec.id, rec.queue
            records[task_id] = rec
            add(rec)
            eta = spec.eta
            if eta is not None and eta > now:
                rec.eta = eta
                self.delayed.push(task_id, eta)
            else:
                ready_queue = ready.get(queue)
                if ready_queue is None:
                    ready_queue = ready[queue] = ReadyQueue()
                ready_queue.push(task_id, rec.priority)
                wake(False)
            out.append(make_tuple(Transition, (task_id, rec.name, queue, None, PENDING, None)))
        self.counts[PENDING] += len(tasks)
        return out

    def promote(self, c: Promote) -> list[Transition]:
        """Move due delayed tasks into their ready queues (RETRY -> PENDING)."""
        out: list[Transition] = []
        for task_id in c.task_ids:
            rec = self.records[task_id]
            self.delayed.remove(task_id)
            if rec.state is S.RETRY:
                out.append(self.move(rec, S.PENDING))
            self.schedule(rec, None, c.now)
        return out

    def cancel(self, c: Cancel) -> list[Transition]:
        """PENDING/RETRY -> CANCELLED."""
        rec = self.records.get(c.task_id)
        if rec is None or rec.state not in (S.PENDING, S.RETRY):
            return []
        if not self.delayed.remove(c.task_id):
            self.ready[rec.queue].remove(c.task_id, rec.priority)
        self.finish(rec, c.now)
        return [self.move(rec, S.CANCELLED, "cancelled")]

    def pause(self, c: Pause) -> bool:
        """Pause or resume a queue; whether anything changed."""
        if c.paused == (c.queue in self.paused):
            return False
        if c.paused:
            self.paused.add(c.queue)
        else:
            self.paused.discard(c.queue)
            self._wake(True)
        return True

    # -- dead letters and expiry -----------------------------------------------------------

    def replay(self, c: Replay) -> list[Transition]:
        """Enqueue ``c.task`` as the replay of dead ``c.dead_id``."""
        old = self.records.get(c.dead_id)
        if old is None or old.state is not S.DEAD:
            raise TaskNotFound(f"no dead task {c.dead_id!r}")
        if c.task.id in self.records:
            raise BackendError(f"task id {c.task.id!r} already exists")
        edit = c.edit
        rec = new_record(c.task, c.now, (edit,) if edit else ())
        rec.replayed_from, rec.dedup_key = c.dead_id, None
        tr = self.insert(rec, c.task.eta, c.now)
        old.replayed_to = (*old.replayed_to, c.task.id)
        if edit:
            old.edits = (*old.edits, {**edit, "new_task": c.task.id})
        return [tr]

    def purge(self, c: Purge) -> int:
        """Delete dead records; how many."""
        n = 0
        for task_id in c.task_ids:
            if task_id in self.dead:
                del self.dead[task_id]
                self._drop(task_id)
                n += 1
        return n

    def _drop(self, task_id: str) -> None:
        rec = self.records[task_id]
        self.index.discard(rec)
        del self.records[task_id]
        self.counts[rec.state] -= 1

    def due_expired(self, now: float) -> list[str]:
        """The finished ids an :class:`Expire` change drops now, taken off the queue.

        Those past the result TTL, and the oldest past ``max_results``.
        """
        out: list[str] = []
        exp, records = self.expiry, self.records
        while exp and (exp[0][0] <= now or len(exp) > self.max_results):
            _, task_id = exp.popleft()
            rec = records.get(task_id)
            if rec is not None and rec.state in LIVE_END:
                out.append(task_id)
        return out

    def expire(self, c: Expire) -> list[str]:
        """Delete these records if they are finished; the ids deleted."""
        out = []
        for task_id in c.task_ids:
            rec = self.records.get(task_id)
            if rec is not None and rec.state in LIVE_END:
                self._drop(task_id)
                out.append(task_id)
        return out
