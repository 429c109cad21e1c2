"""Leases of the in-memory tasks: claims, acknowledgements, failures, lost workers.

The task changes that start and end a lease, as functions of the
:class:`~dtq_core.backends.memory_tasks.TaskTable` they change (called with the owner's
lock held), one per record type of :mod:`dtq_core.backends.changes`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from dtq_core.backends.base import Delivery, Transition
from dtq_core.backends.changes import Ack, Bury, Claim, Fail, Reclaim, Release
from dtq_core.backends.memory_tasks import TaskTable, make_tuple
from dtq_core.queue import IndexedHeap
from dtq_core.task import ErrorInfo, TaskState

S = TaskState
RUNNING, SUCCESS = S.RUNNING, S.SUCCESS


def pick(t: TaskTable, queues: Sequence[str] | None, limit: int) -> list[str]:
    """Take up to ``limit`` ready ids off their heaps, best first (for a claim)."""
    out: list[str] = []
    while len(out) < limit:
        heap, alone = _best(t, queues)
        if heap is None:
            break
        if not alone:  # heads of several queues compete: the best again after each
            task_id = heap.pop()
            assert task_id is not None
            out.append(task_id)
            continue
        # The best until it is empty (strict queue order, or the only queue with ready
        # tasks): no need to compare heads again for each task.
        pop = heap.pop
        while len(out) < limit:
            task_id = pop()
            if task_id is None:
                break
            out.append(task_id)
    return out


def _best(t: TaskTable, queues: Sequence[str] | None) -> tuple[IndexedHeap | None, bool]:
    """The heap to claim from next, and whether it stays the best until it is empty."""
    ready, paused = t.ready, t.paused
    if queues is None:
        best: IndexedHeap | None = None
        best_order: tuple[float, int] | None = None
        rivals = 0
        for name, heap in ready.items():
            if not heap or name in paused:
                continue
            rivals += 1
            order = heap.head_order()
            if best_order is None or (order is not None and order < best_order):
                best, best_order = heap, order
        return best, rivals == 1
    for name in queues:
        found = ready.get(name)
        if found and name not in paused:
            return found, True
    return None, False


def claim(t: TaskTable, c: Claim) -> list[Delivery]:
    """Lease the named tasks (taken off their ready heaps if still there)."""
    records, ready, leases = t.records, t.ready, t.leases
    for task_id, _ in c.tasks:  # all known, or nothing is applied
        records[task_id]  # a KeyError refuses the record
    worker, deadline, now = c.worker, c.deadline, c.now
    out = []
    for task_id, token in c.tasks:
        rec = records[task_id]
        heap = ready.get(rec.queue)
        if heap is not None:
            heap.remove(task_id)
        t.move(rec, RUNNING)
        rec.attempt += 1
        rec.deliveries += 1
        rec.worker = worker
        rec.started_at = now
        rec.finished_at = None
        rec.lease_token = token
        rec.lease_deadline = deadline
        leases.push(task_id, deadline)
        if token >= t.next_token:
            t.next_token = token + 1
        head = (task_id, token, rec.name, rec.queue, rec.payload, rec.attempt)
        tail = (rec.deliveries, rec.enqueued_at, now, rec.time_limit, rec.max_retries, None)
        out.append(make_tuple(Delivery, head + tail))
    return out


def ack(t: TaskTable, c: Ack) -> list[list[Transition]]:
    """RUNNING -> SUCCESS per ack; an empty list for a stale token."""
    out: list[list[Transition]] = []
    records, expiry, move, now = t.records, t.expiry, t.move, c.now
    expires = now + t.result_ttl
    for task_id, token, result in c.acks:
        rec = records.get(task_id)
        if rec is None or rec.state is not RUNNING or rec.lease_token != token:
            out.append([])
            continue
        rec.result = result
        rec.error = None
        rec.finished_at = now
        expiry.append((expires, task_id))
        out.append([move(rec, SUCCESS)])
    return out


def fail(t: TaskTable, c: Fail) -> list[Transition]:
    """RUNNING -> FAILED, then -> RETRY or -> DEAD."""
    rec = t.leased(c.task_id, c.token)
    if rec is None:
        return []
    now, error = c.now, c.error
    rec.error = error
    rec.finished_at = now
    out = [t.move(rec, S.FAILED, f"{error.type}: {error.message}")]
    if c.retry_at is not None:
        t.close_attempt(rec, S.FAILED.value)
        out.append(t.move(rec, S.RETRY))
        if c.retry_at > now:
            t.schedule(rec, c.retry_at, now)
        else:  # due at once: straight back to its queue
            out.append(t.move(rec, S.PENDING))
            t.schedule(rec, None, now)
    elif c.dead_reason is not None:
        rec.dead_reason = c.dead_reason
        out.append(t.move(rec, S.DEAD, c.dead_reason))
        t.dead[rec.id] = None
    else:
        t.finish(rec, now)
    return out


def bury(t: TaskTable, c: Bury) -> list[Transition]:
    """RUNNING -> DEAD."""
    rec = t.leased(c.task_id, c.token)
    if rec is None:
        return []
    return [t.bury_record(rec, c.error, c.reason, c.now)]


def release(t: TaskTable, c: Release) -> list[Transition]:
    """RUNNING -> PENDING without counting an attempt."""
    rec = t.leased(c.task_id, c.token)
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
    tr = t.move(rec, S.PENDING, c.note or None)
    t.schedule(rec, c.eta, c.now)
    return [tr]


def extend(t: TaskTable, leases: Iterable[tuple[str, int]], deadline: float) -> None:
    """Renew leases (not a logged change: leases do not survive a restart).

    A renewal never moves a deadline earlier: one computed from a time taken before a
    stall (a heartbeat that waited on the store) must not shorten a lease renewed since,
    or the task is reclaimed while its worker rightly believes it still holds it.
    """
    for task_id, token in leases:
        rec = t.leased(task_id, token)
        if rec is not None and (rec.lease_deadline is None or deadline > rec.lease_deadline):
            rec.lease_deadline = deadline
            t.leases.push(task_id, deadline)


def reclaim(t: TaskTable, c: Reclaim) -> list[Transition]:
    """Requeue or dead-letter tasks whose lease ran out."""
    records, now = t.records, c.now
    for task_id, _ in c.tasks:
        t.leases.remove(task_id)
        t.lost.add(records[task_id])
    out: list[Transition] = []
    for task_id, bury in c.tasks:
        rec = records[task_id]
        lost = ErrorInfo("WorkerLost", f"lease expired on worker {rec.worker}")
        if bury:
            running = (records[i] for i in t.leases)
            lost = replace(lost, beside=t.lost.beside(rec, running))
            out.append(t.bury_record(rec, lost, "worker_lost", now))
            continue
        rec.error = lost
        rec.finished_at = now
        t.close_attempt(rec, "LOST")
        out.append(t.move(rec, S.PENDING, "lease expired: requeued"))
        t.schedule(rec, None, now)
    return out
