"""The backend protocol: domain-level storage of tasks, leases, dead letters and keys.

In the spirit of Huey's storage contract, with leases: a claimed task is leased to a
worker under a token; ``ack``/``fail``/``release`` carry the token, so a stale worker
cannot settle a task that was handed to someone else. Time is passed in (``now``) from
the broker's injected clock. Backends raise only :mod:`dtq_core.errors` types.

Mutating methods return the :class:`Transition` list they caused, so the broker emits
exactly one event per state change whatever the backend. The values it passes are in
:mod:`dtq_core.backends.values`, re-exported here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

from dtq_core.backends.values import (
    Capabilities,
    Delivery,
    NewTask,
    Outcome,
    QueueStats,
    Transition,
)
from dtq_core.clock import SYSTEM_CLOCK, Clock
from dtq_core.filters import TaskFilter
from dtq_core.paging import DEFAULT_SORT, Cursor, TaskPage, check_cursor, page_of, soonest
from dtq_core.task import TERMINAL, ErrorInfo, TaskRecord, TaskState

__all__ = [
    "Backend",
    "Capabilities",
    "Delivery",
    "NewTask",
    "Outcome",
    "QueueStats",
    "Transition",
]


class Backend(ABC):
    """Storage for the engine. Subclasses: memory, embedded (WAL), redis.

    Args:
        url: The URL the backend was made from (shown to operators).
        clock: The broker's clock; used only to re-read time after a blocking wait.
    """

    capabilities = Capabilities(durable=False, cross_process=False, blocking_claim=True)
    #: Seconds a finished task's record and result are kept.
    result_ttl: float = 600.0
    #: Finished records kept at most; the oldest expire early past this.
    max_results: int = 100_000
    #: Deliveries after which a task whose workers keep dying is dead-lettered.
    max_deliveries: int = 5
    #: This process may own a store that has a single owner process (embedded): set by
    #: the broker before :meth:`open`. Processes that run workers may; producers, the
    #: console and ``dtq`` commands never do.
    may_own: bool = False
    #: Seconds to wait for a store's owner to answer, at open and after it died.
    attach_timeout: float = 30.0

    def __init__(self, url: str, clock: Clock = SYSTEM_CLOCK) -> None:
        self.url = url
        self.clock = clock

    # -- lifecycle -------------------------------------------------------------------

    def open(self) -> None:  # noqa: B027 - optional hook
        """Connect or recover; called once by the broker before use."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources; pending work stays stored (when durable)."""

    def wakeup(self) -> None:  # noqa: B027 - optional hook
        """Wake every claimer blocked in :meth:`claim` (used when stopping)."""

    @property
    def role(self) -> str:
        """``owner`` or ``attached`` for a store with one owner process; empty otherwise.

        Known locally (no round trip): process records and banners read it often.
        """
        return ""

    def serve_console(self, console: Any) -> None:  # noqa: B027 - optional hook
        """The Console API this process serves to others while it owns the store."""

    def wait_final(self, task_id: str, timeout: float) -> bool:
        """Block up to ``timeout`` s until ``task_id`` may be final, woken by its finisher.

        Returns ``False`` at once when this backend cannot wait that way (the broker then
        waits on its own events); ``True`` after a wait, final or not: the caller looks.
        """
        return False

    def ping(self) -> float:
        """Round-trip time in seconds; raises :class:`BackendUnavailable` when down."""
        return 0.0

    def limit_waits(self, seconds: float) -> None:  # noqa: B027 - optional hook
        """Give up reaching a server after about ``seconds`` (a console, not a worker).

        Called before :meth:`open`. Local backends never wait, so the default does nothing.
        """

    def info(self) -> dict[str, Any]:
        """Backend-specific facts for the snapshot (recovery figures, server version...)."""
        return {}

    # -- queue -----------------------------------------------------------------------

    @abstractmethod
    def enqueue(self, task: NewTask, now: float) -> list[Transition]:
        """Store a new PENDING task, ready now or at ``task.eta``."""

    def enqueue_many(self, tasks: Sequence[NewTask], now: float) -> list[Transition]:
        """Store several tasks (backends override to batch)."""
        out: list[Transition] = []
        for t in tasks:
            out.extend(self.enqueue(t, now))
        return out

    @abstractmethod
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

        ``queues`` in strict order (``None``: every queue, best priority first); paused
        queues are skipped. With ``wait`` > 0 a blocking backend waits that long for work.
        """

    def leave(
        self, queues: Sequence[str] | None, worker_id: str, lease_s: float, now: float
    ) -> list[Delivery]:
        """A worker stops waiting for work: what was leased to it meanwhile.

        The caller gives those back. Only backends that hand tasks to waiting workers
        have any.
        """
        return []

    @abstractmethod
    def ack(self, task_id: str, token: int, result: Any, now: float) -> list[Transition]:
        """RUNNING -> SUCCESS with ``result``; empty when the token is stale."""

    def ack_many(
        self, acks: Sequence[tuple[str, int, Any]], now: float, *, retry: bool = False
    ) -> list[list[Transition]]:
        """:meth:`ack` for each ``(task_id, token, result)``: one list per ack, in order.

        Backends with network round trips store the whole batch in one. ``retry``: an
        earlier call with these acks failed and may have stored some of them before its
        reply was lost; a task already SUCCESS under the same token then counts as
        acknowledged instead of stale.
        """
        return [self.ack(tid, token, result, now) for tid, token, result in acks]

    @abstractmethod
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

    @abstractmethod
    def bury(
        self, task_id: str, token: int, error: ErrorInfo, reason: str, now: float
    ) -> list[Transition]:
        """RUNNING -> DEAD for a message that can never run (e.g. unregistered task)."""

    @abstractmethod
    def release(
        self, task_id: str, token: int, now: float, eta: float | None = None, note: str = ""
    ) -> list[Transition]:
        """RUNNING -> PENDING without counting an attempt (shutdown, deferral)."""

    @abstractmethod
    def extend_leases(self, leases: Iterable[tuple[str, int]], lease_s: float, now: float) -> None:
        """Renew the leases of running tasks (a live worker's heartbeat)."""

    def sweep_orphans(self, now: float) -> list[tuple[str, str]]:
        """Put back, or dead-letter, task records that sit in no structure.

        Returns ``(task_id, what was done)`` per record fixed. A store whose structures
        live in one process's memory cannot have orphans (this default); Redis can
        (records edited by hand, or left by a script that failed half-way).
        """
        return []

    def renew_lease(self, task_id: str, token: int, lease_s: float, now: float) -> bool:
        """Renew one lease if the task is still leased under ``token``; whether it was.

        A worker calls this before starting a task whose lease may have run out while
        it waited (prefetched, or claimed across a stall). Backends override it to make
        it one atomic step; this default is correct too: a lease renewed while it was
        still held cannot be reclaimed before its new deadline, so a record still
        RUNNING under ``token`` afterwards is held until ``now + lease_s``.
        """
        self.extend_leases([(task_id, token)], lease_s, now)
        rec = self.get(task_id)
        return rec is not None and rec.state is TaskState.RUNNING and rec.lease_token == token

    @abstractmethod
    def reclaim_expired(self, now: float, max_deliveries: int) -> list[Transition]:
        """Requeue tasks whose lease ran out; DEAD (``worker_lost``) past the limit."""

    @abstractmethod
    def promote_due(self, now: float, limit: int = 1000) -> list[Transition]:
        """Move delayed tasks that are due into their ready queues (RETRY -> PENDING)."""

    @abstractmethod
    def next_due(self) -> float | None:
        """When the earliest delayed task is due, or ``None``."""

    @abstractmethod
    def cancel(self, task_id: str, now: float) -> list[Transition]:
        """PENDING/RETRY -> CANCELLED; empty when the task is not cancellable."""

    @abstractmethod
    def queue_stats(self) -> list[QueueStats]:
        """Depth figures of every known queue, sorted by name."""

    @abstractmethod
    def peek(self, queue: str, limit: int) -> list[TaskRecord]:
        """The next ``limit`` ready tasks of ``queue`` in claim order."""

    @abstractmethod
    def set_paused(self, queue: str, paused: bool) -> None:
        """Pause (no claims) or resume a queue."""

    # -- records ---------------------------------------------------------------------

    @abstractmethod
    def get(self, task_id: str) -> TaskRecord | None:
        """A copy of the record, or ``None`` (unknown or expired)."""

    def get_state(self, task_id: str) -> TaskState | None:
        """Only the state of a task (backends override to make it cheap)."""
        rec = self.get(task_id)
        return None if rec is None else rec.state

    def outcome(self, task_id: str) -> Outcome | None:
        """The state of a task and, when it is final, its result or error.

        ``None`` when the task is unknown or its result expired. What
        :meth:`AsyncResult.get <dtq_core.client.AsyncResult.get>` needs, without a copy
        of the whole record: the default asks :meth:`get_state` and reads the record
        only once the task is final (one cheap read per poll on a remote store); local
        backends read both at once under their lock.
        """
        state = self.get_state(task_id)
        if state is None or state not in TERMINAL:
            return None if state is None else Outcome(state)
        rec = self.get(task_id)
        if rec is None:
            return None
        return Outcome(rec.state, rec.result, rec.error, rec.dead_reason)

    @abstractmethod
    def find_ids(self, prefix: str, limit: int = 10) -> list[str]:
        """Ids of retained records starting with ``prefix``, sorted, at most ``limit``.

        An exact id returns ``[prefix]`` alone. Several ids mean the prefix is ambiguous.
        """

    @abstractmethod
    def list_tasks(
        self, flt: TaskFilter, now: float, offset: int = 0, limit: int = 100
    ) -> list[TaskRecord]:
        """Records matching ``flt``, newest first."""

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
        """A page of the records matching ``flt``, ordered by ``(sort value, id)``.

        Starts strictly after the cursor ``after`` (the ``next_after`` of the previous
        page), then skips ``offset`` rows; the page carries the total number of matches.
        This default reads every match through :meth:`list_tasks`; backends with an index
        override it.
        """
        after = check_cursor(sort, after)
        return page_of(self.list_tasks(flt, now, 0, 2**62), sort, descending, after, offset, limit)

    @abstractmethod
    def count_by_state(self) -> dict[TaskState, int]:
        """Retained records per state (O(1): kept incrementally)."""

    @abstractmethod
    def expire(self, now: float) -> int:
        """Drop finished records past the result TTL; return how many."""

    # -- dead letters ----------------------------------------------------------------

    @abstractmethod
    def list_dead(
        self, flt: TaskFilter, now: float, offset: int = 0, limit: int = 100
    ) -> list[TaskRecord]:
        """Dead tasks matching ``flt``, newest first."""

    @abstractmethod
    def count_dead(self, flt: TaskFilter | None = None, now: float = 0.0) -> int:
        """How many dead tasks match (all when ``flt`` is ``None``)."""

    @abstractmethod
    def replay(
        self,
        task_id: str,
        new_task: NewTask,
        edit: dict[str, Any] | None,
        now: float,
        after: int | None = None,
    ) -> list[Transition]:
        """Enqueue ``new_task`` as the replay of dead ``task_id``; the dead record stays.

        ``edit`` (when args were changed) is appended to the dead record's trail. With
        ``after``, only if the dead task was replayed exactly that many times so far,
        checked in the same atomic step as the write: two operators replaying the same
        task at once make one new task. Refused, it returns ``[]`` and writes nothing.
        """

    def waiting(self, state: TaskState, now: float, limit: int = 100) -> list[TaskRecord]:
        """Delayed PENDING or RETRY tasks, soonest first (:func:`~dtq_core.paging.soonest`).

        The stores answer from their due-time index; this default lists the state.
        """
        flt = TaskFilter(states=frozenset({state}))
        return soonest(self.list_tasks(flt, now, 0, 10**9), state, now, limit)

    @abstractmethod
    def purge(self, task_ids: Sequence[str]) -> int:
        """Delete dead records; return how many were deleted."""

    # -- keys and counters -------------------------------------------------------------

    @abstractmethod
    def set_if_absent(self, key: str, value: str, ttl_s: float, now: float) -> str | None:
        """Set ``key`` unless a live value exists; return the existing value if any."""

    @abstractmethod
    def get_key(self, key: str, now: float) -> str | None:
        """The live value of ``key``."""

    @abstractmethod
    def set_key(self, key: str, value: str, ttl_s: float | None, now: float) -> None:
        """Set ``key`` unconditionally."""

    @abstractmethod
    def delete_key(self, key: str) -> None:
        """Remove ``key``."""

    @abstractmethod
    def compare_and_set(
        self, key: str, expected: str | None, value: str, ttl_s: float | None, now: float
    ) -> bool:
        """Set ``key`` to ``value`` only if its live value is ``expected``."""

    @abstractmethod
    def scan_keys(self, prefix: str, now: float, limit: int = 10_000) -> list[str]:
        """Live keys starting with ``prefix`` (sorted; at most ``limit``)."""

    @abstractmethod
    def add_counts(
        self,
        key: str,
        incr: dict[str, float],
        maxima: dict[str, float],
        ttl_s: float | None,
        now: float,
    ) -> None:
        """Add ``incr`` to the fields of the count map ``key``; raise fields to ``maxima``.

        The map lives ``ttl_s`` seconds from this write (``None``: for ever). Metrics are
        published this way: every process adds its share, nobody reads-modifies-writes.
        """

    @abstractmethod
    def read_counts(self, keys: Sequence[str], now: float) -> list[dict[str, float]]:
        """The live count maps ``keys`` (an empty map for a missing one), in order."""

    @abstractmethod
    def reserve(self, key: str, rate: float, burst: int, now: float) -> float:
        """Token bucket (GCRA): reserve one token; return the seconds to wait (0 = go)."""

    # -- workers -----------------------------------------------------------------------

    @abstractmethod
    def heartbeat(self, worker_id: str, info: dict[str, Any], now: float, ttl_s: float) -> None:
        """Publish a worker's state; it disappears ``ttl_s`` after its last heartbeat."""

    @abstractmethod
    def workers(self, now: float) -> list[dict[str, Any]]:
        """Live workers' last published states."""

    @abstractmethod
    def forget_worker(self, worker_id: str) -> None:
        """Remove a worker that stopped cleanly."""

    @abstractmethod
    def register_names(self, names: Iterable[str]) -> None:
        """Record task names that a worker can run (producers check against these)."""

    @abstractmethod
    def known_names(self) -> set[str]:
        """Task names some worker has registered."""
