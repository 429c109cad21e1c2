"""A backend over the in-memory state machine, with each change passed to a journal.

:class:`LocalBackend` implements the Backend protocol once, for the two backends that
keep their state in this process's memory. It composes a
:class:`~dtq_core.backends.journal.WritePath` (the
:class:`~dtq_core.backends.memory_state.StateMachine`, changed only by typed records,
its lock, and a journal that receives each record) and the components that implement
parts of the protocol over it: :class:`~dtq_core.backends.local_leases.LocalLeases`,
:class:`~dtq_core.backends.local_keys.LocalKeys` and
:class:`~dtq_core.backends.memory_queries.TaskQueries`. ``memory://`` has no journal;
``embedded://`` appends each record to its write-ahead log.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from dtq_core.backends.base import Backend, Delivery, NewTask, Outcome, QueueStats, Transition
from dtq_core.backends.changes import Cancel, Enqueue, Expire, Pause, Promote, Purge, Replay
from dtq_core.backends.journal import Journal, NoJournal, WritePath, spec_of
from dtq_core.backends.local_keys import LocalKeys
from dtq_core.backends.local_leases import LocalLeases
from dtq_core.backends.memory_queries import TaskQueries
from dtq_core.clock import SYSTEM_CLOCK, Clock
from dtq_core.filters import TaskFilter
from dtq_core.paging import DEFAULT_SORT, Cursor, TaskPage
from dtq_core.task import ErrorInfo, TaskRecord, TaskState


class LocalBackend(Backend):
    """The Backend protocol over a state machine and a journal (see the module doc).

    Args:
        url: The backend URL.
        clock: Re-read after a blocking claim's wait.
        journal: Where changes go; ``None`` for none.
    """

    def __init__(
        self, url: str, clock: Clock = SYSTEM_CLOCK, journal: Journal | None = None
    ) -> None:
        Backend.__init__(self, url, clock)
        self._write = WritePath(journal or NoJournal())
        self._state = self._write.state
        self._lock = self._write.lock
        self._leases = LocalLeases(self._write, clock)
        self._keys = LocalKeys(self._write)
        self._queries = TaskQueries(self._state.tasks, self._lock)

    @property
    def result_ttl(self) -> float:
        """Seconds finished records are kept (read when a task finishes)."""
        return self._state.tasks.result_ttl

    @result_ttl.setter
    def result_ttl(self, value: float) -> None:
        self._state.tasks.result_ttl = value

    @property
    def max_results(self) -> int:
        """Finished records kept at most."""
        return self._state.tasks.max_results

    @max_results.setter
    def max_results(self, value: int) -> None:
        self._state.tasks.max_results = value

    def wakeup(self) -> None:
        """Wake every claimer blocked in :meth:`claim`."""
        with self._lock:
            self._write.wake(True)

    # -- queue -------------------------------------------------------------------------

    def enqueue(self, task: NewTask, now: float) -> list[Transition]:
        """Store a new PENDING task, ready now or at ``task.eta``."""
        return self._write.change(Enqueue(now, [spec_of(task)]))  # type: ignore[no-any-return]

    def enqueue_many(self, tasks: Sequence[NewTask], now: float) -> list[Transition]:
        """Store several tasks with one record (all or none) and one durability wait."""
        if not tasks:
            return []
        change = Enqueue(now, [spec_of(t) for t in tasks])
        return self._write.change(change)  # type: ignore[no-any-return]

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
        return self._leases.claim(queues, worker_id, lease_s, limit, now, wait)

    def ack(self, task_id: str, token: int, result: Any, now: float) -> list[Transition]:
        """RUNNING -> SUCCESS with ``result``; empty when the token is stale."""
        return self._leases.ack_many([(task_id, token, result)], now)[0]

    def ack_many(
        self, acks: Sequence[tuple[str, int, Any]], now: float, *, retry: bool = False
    ) -> list[list[Transition]]:
        """Acknowledge a batch with one record and one wait for durability."""
        return self._leases.ack_many(acks, now, retry=retry)

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
        return self._leases.fail(
            task_id, token, error, now, retry_at=retry_at, dead_reason=dead_reason
        )

    def bury(
        self, task_id: str, token: int, error: ErrorInfo, reason: str, now: float
    ) -> list[Transition]:
        """RUNNING -> DEAD for a message that can never run."""
        return self._leases.bury(task_id, token, error, reason, now)

    def release(
        self, task_id: str, token: int, now: float, eta: float | None = None, note: str = ""
    ) -> list[Transition]:
        """RUNNING -> PENDING without counting an attempt."""
        return self._leases.release(task_id, token, now, eta, note)

    def extend_leases(self, leases: Iterable[tuple[str, int]], lease_s: float, now: float) -> None:
        """Renew the leases of running tasks (not logged: leases end with the process)."""
        self._leases.extend_leases(leases, lease_s, now)

    def reclaim_expired(self, now: float, max_deliveries: int) -> list[Transition]:
        """Requeue tasks whose lease ran out; DEAD (``worker_lost``) past the limit."""
        return self._leases.reclaim_expired(now, max_deliveries)

    def promote_due(self, now: float, limit: int = 1000) -> list[Transition]:
        """Move due delayed tasks into their ready queues (RETRY -> PENDING); no wait."""
        self._write.journal.check()
        with self._lock:
            ids = self._state.tasks.delayed.pop_until(now, limit)
            if not ids:
                return []
            out, _ = self._write.change_locked(Promote(now, ids), always=True)
        return out  # type: ignore[no-any-return]

    def cancel(self, task_id: str, now: float) -> list[Transition]:
        """PENDING/RETRY -> CANCELLED."""
        return self._write.change(Cancel(now, task_id))  # type: ignore[no-any-return]

    def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue."""
        self._write.change(Pause(queue, paused))

    # -- dead letters and expiry ---------------------------------------------------------

    def replay(
        self,
        task_id: str,
        new_task: NewTask,
        edit: dict[str, Any] | None,
        now: float,
        after: int | None = None,
    ) -> list[Transition]:
        """Enqueue ``new_task`` as the replay of dead ``task_id`` (see the protocol)."""
        change = Replay(now, task_id, spec_of(new_task), edit)
        records = self._state.tasks.records

        def unchanged() -> bool:  # (a record that is gone: the replay raises)
            rec = records.get(task_id)
            return after is None or rec is None or len(rec.replayed_to) == after

        return self._write.change(change, precondition=unchanged)  # type: ignore[no-any-return]

    def waiting(self, state: TaskState, now: float, limit: int = 100) -> list[TaskRecord]:
        """Delayed PENDING or RETRY tasks, soonest first (from the due-time heap)."""
        return self._queries.waiting(state, now, limit)

    def purge(self, task_ids: Sequence[str]) -> int:
        """Delete dead records."""
        return int(self._write.change(Purge(list(task_ids))) or 0)

    def expire(self, now: float) -> int:
        """Drop finished records past the result TTL (or over ``max_results``).

        Logged, without a wait: replay drops them too, or a reused task id would collide
        with its expired predecessor at recovery. Once the journal failed, records still
        expire here but nothing is logged.
        """
        j = self._write.journal
        with self._lock:
            self._state.keys.sweep(now)
            ids = self._state.tasks.due_expired(now)
            if not ids:
                return 0
            change = Expire(ids)
            dropped = self._state.apply(change)
            if not j.failed:
                j.submit(j.encode(change))
        return len(dropped)

    # -- reads -------------------------------------------------------------------------

    def next_due(self) -> float | None:
        """When the earliest delayed task is due."""
        with self._lock:
            return self._state.tasks.delayed.peek_key()

    def queue_stats(self) -> list[QueueStats]:
        """Depth figures of every known queue."""
        return self._queries.queue_stats()

    def peek(self, queue: str, limit: int) -> list[TaskRecord]:
        """The next ``limit`` ready tasks of ``queue``."""
        return self._queries.peek(queue, limit)

    def get(self, task_id: str) -> TaskRecord | None:
        """A copy of the record."""
        return self._queries.get(task_id)

    def get_state(self, task_id: str) -> TaskState | None:
        """Only the state (no copy)."""
        return self._queries.get_state(task_id)

    def outcome(self, task_id: str) -> Outcome | None:
        """State, result and error read together (no copy of the record)."""
        return self._queries.outcome(task_id)

    def find_ids(self, prefix: str, limit: int = 10) -> list[str]:
        """Ids starting with ``prefix`` (an exact id alone)."""
        return self._queries.find_ids(prefix, limit)

    def list_tasks(
        self, flt: TaskFilter, now: float, offset: int = 0, limit: int = 100
    ) -> list[TaskRecord]:
        """Records matching ``flt``, newest first."""
        return self._queries.task_page(flt, now, offset=offset, limit=limit).records

    def task_page(
        self,
        flt: TaskFilter,
        now: float,
        sort: str = DEFAULT_SORT,
        descending: bool = True,
        after: Cursor | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> TaskPage:
        """A sorted page of the records matching ``flt``, from the sort index."""
        return self._queries.task_page(flt, now, sort, descending, after, offset, limit)

    def count_by_state(self) -> dict[TaskState, int]:
        """Retained records per state."""
        return dict(self._state.tasks.counts)

    def list_dead(
        self, flt: TaskFilter, now: float, offset: int = 0, limit: int = 100
    ) -> list[TaskRecord]:
        """Dead tasks matching ``flt``, newest first."""
        return self._queries.list_dead(flt, now, offset, limit)

    def count_dead(self, flt: TaskFilter | None = None, now: float = 0.0) -> int:
        """How many dead tasks match."""
        return self._queries.count_dead(flt, now)

    # -- keys, workers and names (see :mod:`.local_keys`) ---------------------------------

    def set_if_absent(self, key: str, value: str, ttl_s: float, now: float) -> str | None:
        """Set ``key`` unless a live value exists; return the existing value if any."""
        return self._keys.set_if_absent(key, value, ttl_s, now)

    def get_key(self, key: str, now: float) -> str | None:
        """The live value of ``key``."""
        return self._keys.get_key(key, now)

    def set_key(self, key: str, value: str, ttl_s: float | None, now: float) -> None:
        """Set ``key`` unconditionally."""
        self._keys.set_key(key, value, ttl_s, now)

    def delete_key(self, key: str) -> None:
        """Remove ``key``."""
        self._keys.delete_key(key)

    def compare_and_set(
        self, key: str, expected: str | None, value: str, ttl_s: float | None, now: float
    ) -> bool:
        """Set ``key`` to ``value`` only if its live value is ``expected``."""
        return self._keys.compare_and_set(key, expected, value, ttl_s, now)

    def scan_keys(self, prefix: str, now: float, limit: int = 10_000) -> list[str]:
        """Live keys starting with ``prefix``."""
        return self._keys.scan_keys(prefix, now, limit)

    def add_counts(
        self,
        key: str,
        incr: dict[str, float],
        maxima: dict[str, float],
        ttl_s: float | None,
        now: float,
    ) -> None:
        """Add to a count map (logged without a wait)."""
        self._keys.add_counts(key, incr, maxima, ttl_s, now)

    def read_counts(self, keys: Sequence[str], now: float) -> list[dict[str, float]]:
        """The live count maps ``keys``."""
        return self._keys.read_counts(keys, now)

    def reserve(self, key: str, rate: float, burst: int, now: float) -> float:
        """GCRA token bucket: reserve one token; return the seconds to wait."""
        return self._keys.reserve(key, rate, burst, now)

    def heartbeat(self, worker_id: str, info: dict[str, Any], now: float, ttl_s: float) -> None:
        """Publish a worker's state (not logged)."""
        self._keys.heartbeat(worker_id, info, now, ttl_s)

    def workers(self, now: float) -> list[dict[str, Any]]:
        """Live workers' last published states."""
        return self._keys.workers(now)

    def forget_worker(self, worker_id: str) -> None:
        """Remove a worker that stopped cleanly."""
        self._keys.forget_worker(worker_id)

    def register_names(self, names: Iterable[str]) -> None:
        """Record task names that a worker can run."""
        self._keys.register_names(names)

    def known_names(self) -> set[str]:
        """Task names some worker has registered."""
        return self._keys.known_names()
