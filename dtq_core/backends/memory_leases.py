"""Leases of the in-memory tasks: claims, acknowledgements, failures, lost workers.

The task changes that start and end a lease, as functions of the
:class:`~dtq_core.backends.memory_tasks.TaskTable` they change (called with the owner's
lock held), one per record type of :mod:`dtq_core.backends.changes`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from heapq import heapify, heappop, heapreplace
from itertools import islice

from dtq_core.backends.base import Delivery, Transition
from dtq_core.backends.changes import Ack, Bury, Claim, Fail, Reclaim, Release
from dtq_core.backends.memory_tasks import TaskTable, make_tuple
from dtq_core.task import ErrorInfo, LastRun, TaskState

S = TaskState
PENDING, RUNNING, SUCCESS = S.PENDING, S.RUNNING, S.SUCCESS


def pick(t: TaskTable, queues: Sequence[str] | None, limit: int) -> list[str]:
    """Up to ``limit`` ready ids, best first, left in place (the claim takes them).

    With ``queues``, the first of them with ready tasks is drained first, then the next.
    Without, the heads of every queue compare by ``(priority, turn)``: queues of one
    priority take turns (see :attr:`~dtq_core.ready_queue.ReadyQueue.taken`).
    """
    ready, paused = t.ready, t.paused
    out: list[str] = []
    if queues is not None:
        seen: set[str] = set()
        for name in queues:
            q = ready.get(name)
            if not q or name in paused or name in seen:
                continue
            seen.add(name)
            out.extend(task_id for _, task_id in islice(q.walk(), limit - len(out)))
            if len(out) >= limit:
                break
        return out
    heads: list[tuple[float, int, int, str, Iterator[tuple[float, str]]]] = []
    for n, (name, q) in enumerate(ready.items()):
        if q and name not in paused:
            walk = q.walk()
            key, task_id = next(walk)
            heads.append((key, q.taken, n, task_id, walk))
    if len(heads) == 1:  # the usual case: one queue
        _, _, _, task_id, walk = heads[0]
        out.append(task_id)
        out.extend(i for _, i in islice(walk, limit - 1))
        return out
    heapify(heads)
    while heads and len(out) < limit:
        _, turn, n, task_id, walk = heads[0]
        out.append(task_id)
        nxt = next(walk, None)
        if nxt is None:
            heappop(heads)
        else:
            heapreplace(heads, (nxt[0], turn + 1, n, nxt[1], walk))
    return out


def claim(t: TaskTable, c: Claim, deliver: bool = True) -> list[Delivery]:
    """Lease the named tasks, taking them off their ready queues.

    ``deliver=False`` (a replay of the log: nobody receives them) returns no deliveries,
    which spares rebuilding each payload (a tenth of a log-only recovery).
    """
    records, ready, leases, delayed = t.records, t.ready, t.leases, t.delayed
    for task_id, _ in c.tasks:  # all ready, or nothing is applied
        rec = records[task_id]  # a KeyError refuses the record
        # (A delayed task has its due time as its eta: most need no look in ``delayed``.)
        if rec.state is not PENDING or (rec.eta is not None and task_id in delayed):
            raise ValueError(f"claim of task {task_id!r}, which is not ready")
    if len(c.tasks) > 1 and len({task_id for task_id, _ in c.tasks}) != len(c.tasks):
        raise ValueError("a claim names a task twice")
    worker, deadline, now = c.worker, c.deadline, c.now
    counts, running, moved = t.counts, t.running, t.index.moved
    out = []
    for claimed, token in c.tasks:
        rec = records[claimed]
        task_id, queue = rec.id, rec.queue  # kept in leases: the record's own id string
        ready[queue].remove(task_id, rec.priority)
        # t.move(rec, RUNNING) written out: PENDING was checked, no transition is returned.
        counts[PENDING] -= 1
        counts[RUNNING] += 1
        rec.state = RUNNING
        moved(rec, PENDING)
        running[queue] = running.get(queue, 0) + 1
        run = rec.last_run
        if run is None:
            run = rec.last_run = LastRun(1, 1, worker, now, None, token, deadline)
        else:
            run.attempt += 1
            run.deliveries += 1
            run.worker = worker
            run.started_at = now
            run.finished_at = None
            run.lease_token = token
            run.lease_deadline = deadline
        leases.push(task_id, deadline)
        if token >= t.next_token:
            t.next_token = token + 1
        if deliver:
            out.append(
                make_tuple(
                    Delivery,
                    (
                        task_id, token, rec.name, queue, rec.payload, run.attempt, run.deliveries,
                        rec.enqueued_at, now, rec.time_limit, rec.max_retries, None,
                    ),
                )
            )  # fmt: skip
    return out


def ack(t: TaskTable, c: Ack) -> list[list[Transition]]:
    """RUNNING -> SUCCESS per ack; an empty list for a stale token."""
    out: list[list[Transition]] = []
    records, expiry, now = t.records, t.expiry, c.now
    counts, running, leases, moved = t.counts, t.running, t.leases, t.index.moved
    expires = now + t.result_ttl
    for acked, token, result in c.acks:
        rec = records.get(acked)
        if rec is None or rec.state is not RUNNING:
            out.append([])
            continue
        run = rec.last_run
        if run is None or run.lease_token != token:
            out.append([])
            continue
        run.result = result
        run.error = None
        run.finished_at = now
        run.lease_deadline = None
        task_id = rec.id  # kept in the expiry queue: the record's own string, not a copy
        expiry.append((expires, task_id))
        # t.move(rec, SUCCESS) written out: RUNNING -> SUCCESS is always legal.
        queue = rec.queue
        counts[RUNNING] -= 1
        counts[SUCCESS] += 1
        rec.state = SUCCESS
        moved(rec, RUNNING)
        running[queue] -= 1
        leases.remove(task_id)
        out.append([make_tuple(Transition, (task_id, rec.name, queue, RUNNING, SUCCESS, None))])
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
