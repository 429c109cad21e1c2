"""The leases of a local backend: claims, acknowledgements, failures, lost workers.

:class:`LocalLeases` implements that part of the Backend protocol for
:class:`~dtq_core.backends.local.LocalBackend`: it decides each change (which tasks a
claim takes and their tokens, which expired leases are dead-lettered) and passes it as a
record down the backend's write path. It holds no state of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from dtq_core.backends import memory_leases
from dtq_core.backends.base import Delivery, Transition
from dtq_core.backends.changes import Ack, Bury, Claim, Fail, Reclaim, Release
from dtq_core.backends.journal import WritePath
from dtq_core.clock import Clock
from dtq_core.task import ErrorInfo, TaskRecord, TaskState


class LocalLeases:
    """Claims (blocking ones included), acks, failures, releases and lease reclaims.

    Args:
        write: The backend's write path.
        clock: Re-read after a blocking claim's wait.
    """

    def __init__(self, write: WritePath, clock: Clock) -> None:
        self._w = write
        self._clock = clock

    def claim(
        self,
        queues: Sequence[str] | None,
        worker_id: str,
        lease_s: float,
        limit: int,
        now: float,
        wait: float = 0.0,
    ) -> list[Delivery]:
        """Lease up to ``limit`` ready tasks (PENDING -> RUNNING).

        With a log, the claim record reaches the OS before the task runs (no fsync
        wait): a task that kills its process still has its delivery counted, so it ends
        dead as ``worker_lost`` instead of looping.
        """
        self._w.journal.check()
        with self._w.held:
            out, lsn = self._claim(queues, worker_id, lease_s, limit, now)
            if not out and wait > 0:
                self._w.sleep(wait)
                out, lsn = self._claim(queues, worker_id, lease_s, limit, self._clock.now())
        if lsn:
            self._w.journal.wait_written(lsn)
        return out

    def _claim(
        self, queues: Sequence[str] | None, worker_id: str, lease_s: float, limit: int, now: float
    ) -> tuple[list[Delivery], int]:
        tasks = self._w.state.tasks
        ids = memory_leases.pick(tasks, queues, limit)
        if not ids:
            return [], 0
        first = tasks.next_token
        change = Claim(now, worker_id, now + lease_s, [(i, first + n) for n, i in enumerate(ids)])
        out, lsn = self._w.change_locked(change)
        return out, lsn

    def ack(self, task_id: str, token: int, result: Any, now: float) -> list[Transition]:
        """RUNNING -> SUCCESS with ``result``; empty when the token is stale."""
        return self.ack_many([(task_id, token, result)], now)[0]

    def ack_many(
        self, acks: Sequence[tuple[str, int, Any]], now: float, *, retry: bool = False
    ) -> list[list[Transition]]:
        """Acknowledge a batch with one record and one wait for durability.

        With ``retry``, a task already SUCCESS under the same token counts as
        acknowledged: the first call stored it and its reply was lost.
        """
        change = Ack(now, list(acks))
        j = self._w.journal
        raw = j.encode(change)
        j.check()
        with self._w.held:
            j.check()
            out: list[list[Transition]] = self._w.state.apply(change)
            lsn = j.submit(raw) if any(out) else 0
            if retry:
                for n, (tid, token, _) in enumerate(acks):
                    if not out[n]:
                        out[n] = self._acked_before(tid, token)
        j.wait(lsn)
        return out

    def _acked_before(self, task_id: str, token: int) -> list[Transition]:
        """The ack of ``task_id`` under ``token`` if an earlier call stored it."""
        rec = self._w.state.tasks.records.get(task_id)
        if rec is None or rec.state is not TaskState.SUCCESS or rec.lease_token != token:
            return []
        return [Transition(task_id, rec.name, rec.queue, TaskState.RUNNING, TaskState.SUCCESS)]

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
        change = Fail(now, task_id, token, error, retry_at, dead_reason)
        return self._w.change(change)  # type: ignore[no-any-return]

    def bury(
        self, task_id: str, token: int, error: ErrorInfo, reason: str, now: float
    ) -> list[Transition]:
        """RUNNING -> DEAD for a message that can never run."""
        return self._w.change(Bury(now, task_id, token, error, reason))  # type: ignore[no-any-return]

    def release(
        self, task_id: str, token: int, now: float, eta: float | None = None, note: str = ""
    ) -> list[Transition]:
        """RUNNING -> PENDING without counting an attempt."""
        return self._w.change(Release(now, task_id, token, eta, note))  # type: ignore[no-any-return]

    def extend_leases(self, leases: Iterable[tuple[str, int]], lease_s: float, now: float) -> None:
        """Renew the leases of running tasks (not logged: leases end with the process)."""
        with self._w.lock:
            memory_leases.extend(self._w.state.tasks, leases, now + lease_s)

    def reclaim_expired(self, now: float, max_deliveries: int) -> list[Transition]:
        """Requeue tasks whose lease ran out; DEAD (``worker_lost``) past the limit."""
        self._w.journal.check()
        with self._w.lock:
            tasks = self._w.state.tasks
            due = tasks.leases.pop_until(now, 10_000)
            return self._reclaim(due, now, max_deliveries)

    def reclaim_all(
        self, now: float, max_deliveries: int, keep: Callable[[TaskRecord], bool] | None = None
    ) -> list[Transition]:
        """Reclaim every lease, expired or not, but those ``keep`` accepts (by record).

        Recovery: the leases' workers died with the old owner. A kept lease (its holder
        still runs) is renewed for its own length from ``now``, so the holder has time to
        renew it with the new owner before it can expire.
        """
        self._w.journal.check()
        with self._w.lock:
            tasks = self._w.state.tasks
            due: list[str] = []
            for task_id in list(tasks.leases):
                rec = tasks.records[task_id]
                if keep is None or not keep(rec):
                    due.append(task_id)
                    continue
                start = rec.started_at if rec.started_at is not None else now
                length = max((rec.lease_deadline or now) - start, 1.0)
                memory_leases.extend(tasks, [(task_id, rec.lease_token)], now + length)
            return self._reclaim(due, now, max_deliveries)

    def reclaim_where(
        self, now: float, max_deliveries: int, drop: Callable[[TaskRecord], bool]
    ) -> list[Transition]:
        """Reclaim at once the leases whose record ``drop`` picks; leave the others be."""
        self._w.journal.check()
        with self._w.lock:
            tasks = self._w.state.tasks
            due = [i for i in tasks.leases if drop(tasks.records[i])]
            return self._reclaim(due, now, max_deliveries)

    def _reclaim(self, due: list[str], now: float, max_deliveries: int) -> list[Transition]:
        """Reclaim the leases of ``due`` (lock held); logged without a wait."""
        if not due:
            return []
        records = self._w.state.tasks.records
        decisions = [(i, records[i].deliveries >= max_deliveries) for i in due]
        out, _ = self._w.change_locked(Reclaim(now, decisions))
        return out  # type: ignore[no-any-return]
