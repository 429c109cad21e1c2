"""A backend whose every protocol method is one call of :meth:`ForwardingBackend._do`.

The base of :class:`~dtq_core.backends.embedded.store.EmbeddedStore`, which decides in
``_do`` where a call goes: to the store this process owns, or over the owner's socket.
Written out method by method (not generated) so that each keeps its typed signature.
The store's settings are kept here and passed on to the store this process owns.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any

from dtq_core.backends.base import Backend, NewTask, QueueStats, Transition
from dtq_core.clock import SYSTEM_CLOCK, Clock
from dtq_core.filters import TaskFilter
from dtq_core.paging import DEFAULT_SORT, Cursor, TaskPage
from dtq_core.task import ErrorInfo, TaskRecord, TaskState


class ForwardingBackend(Backend):
    """The Backend protocol, every method forwarded to :meth:`_do` by name."""

    def __init__(
        self, url: str, clock: Clock = SYSTEM_CLOCK, max_deliveries: int = Backend.max_deliveries
    ) -> None:
        self._settings: dict[str, Any] = {
            "result_ttl": Backend.result_ttl,
            "max_results": Backend.max_results,
            "max_deliveries": max_deliveries,
        }
        super().__init__(url, clock)

    @abstractmethod
    def _do(self, name: str, *args: Any, block_s: float = 0.0, **kwargs: Any) -> Any:
        """Run the protocol method ``name``; ``block_s``: seconds it may block on purpose."""

    @property
    @abstractmethod
    def local(self) -> Backend | None:
        """The store this process owns (``None`` while attached): it follows the settings."""

    # -- settings the owned store follows ----------------------------------------------

    @property
    def result_ttl(self) -> float:
        """Seconds finished records are kept (the owner's setting rules the store)."""
        return float(self._settings["result_ttl"])

    @result_ttl.setter
    def result_ttl(self, value: float) -> None:
        self._set("result_ttl", value)

    @property
    def max_results(self) -> int:
        """Finished records kept at most."""
        return int(self._settings["max_results"])

    @max_results.setter
    def max_results(self, value: int) -> None:
        self._set("max_results", value)

    @property
    def max_deliveries(self) -> int:
        """Deliveries after which a task found running at recovery is dead-lettered."""
        return int(self._settings["max_deliveries"])

    @max_deliveries.setter
    def max_deliveries(self, value: int) -> None:
        self._set("max_deliveries", value)

    def _set(self, name: str, value: Any) -> None:
        self._settings[name] = value
        local = self.local
        if local is not None:
            setattr(local, name, value)

    # -- the protocol ------------------------------------------------------------------

    def enqueue(self, task: NewTask, now: float) -> list[Transition]:
        """Store a new task."""
        return self._do("enqueue", task, now)  # type: ignore[no-any-return]

    def enqueue_many(self, tasks: Sequence[NewTask], now: float) -> list[Transition]:
        """Store several tasks in one call."""
        return self._do("enqueue_many", list(tasks), now)  # type: ignore[no-any-return]

    def ack(self, task_id: str, token: int, result: Any, now: float) -> list[Transition]:
        """RUNNING -> SUCCESS."""
        return self._do("ack", task_id, token, result, now)  # type: ignore[no-any-return]

    def ack_many(
        self, acks: Sequence[tuple[str, int, Any]], now: float, *, retry: bool = False
    ) -> list[list[Transition]]:
        """A batch of acks in one call and one fsync."""
        return self._do("ack_many", list(acks), now, retry=retry)  # type: ignore[no-any-return]

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
        """RUNNING -> FAILED -> RETRY or DEAD."""
        return self._do(  # type: ignore[no-any-return]
            "fail", task_id, token, error, now, retry_at=retry_at, dead_reason=dead_reason
        )

    def bury(
        self, task_id: str, token: int, error: ErrorInfo, reason: str, now: float
    ) -> list[Transition]:
        """RUNNING -> DEAD."""
        return self._do("bury", task_id, token, error, reason, now)  # type: ignore[no-any-return]

    def release(
        self, task_id: str, token: int, now: float, eta: float | None = None, note: str = ""
    ) -> list[Transition]:
        """RUNNING -> PENDING."""
        return self._do("release", task_id, token, now, eta, note)  # type: ignore[no-any-return]

    def renew_lease(self, task_id: str, token: int, lease_s: float, now: float) -> bool:
        """Renew one lease if still held under ``token`` (one call to the owner)."""
        return bool(self._do("renew_lease", task_id, token, lease_s, now))

    def extend_leases(self, leases: Iterable[tuple[str, int]], lease_s: float, now: float) -> None:
        """Renew leases."""
        self._do("extend_leases", list(leases), lease_s, now)

    def reclaim_expired(self, now: float, max_deliveries: int) -> list[Transition]:
        """Requeue expired leases (done by the owner for everyone)."""
        return self._do("reclaim_expired", now, max_deliveries)  # type: ignore[no-any-return]

    def promote_due(self, now: float, limit: int = 1000) -> list[Transition]:
        """Move due delayed tasks to their queues."""
        return self._do("promote_due", now, limit)  # type: ignore[no-any-return]

    def next_due(self) -> float | None:
        """When the earliest delayed task is due."""
        return self._do("next_due")  # type: ignore[no-any-return]

    def cancel(self, task_id: str, now: float) -> list[Transition]:
        """Cancel a task that has not started."""
        return self._do("cancel", task_id, now)  # type: ignore[no-any-return]

    def queue_stats(self) -> list[QueueStats]:
        """Depth figures of every queue."""
        return self._do("queue_stats")  # type: ignore[no-any-return]

    def peek(self, queue: str, limit: int) -> list[TaskRecord]:
        """The next ready tasks of a queue."""
        return self._do("peek", queue, limit)  # type: ignore[no-any-return]

    def set_paused(self, queue: str, paused: bool) -> None:
        """Pause or resume a queue."""
        self._do("set_paused", queue, paused)

    def get(self, task_id: str) -> TaskRecord | None:
        """One record."""
        return self._do("get", task_id)  # type: ignore[no-any-return]

    def get_state(self, task_id: str) -> TaskState | None:
        """One task's state."""
        return self._do("get_state", task_id)  # type: ignore[no-any-return]

    def find_ids(self, prefix: str, limit: int = 10) -> list[str]:
        """Ids starting with a prefix (an exact id alone)."""
        return self._do("find_ids", prefix, limit)  # type: ignore[no-any-return]

    def list_tasks(
        self, flt: TaskFilter, now: float, offset: int = 0, limit: int = 100
    ) -> list[TaskRecord]:
        """Records matching a filter."""
        return self._do("list_tasks", flt, now, offset, limit)  # type: ignore[no-any-return]

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
        """A sorted page of the records matching a filter (the owner's index)."""
        args = (flt, now, sort, descending, after, offset, limit)
        return self._do("task_page", *args)  # type: ignore[no-any-return]

    def count_by_state(self) -> dict[TaskState, int]:
        """Records per state."""
        return self._do("count_by_state")  # type: ignore[no-any-return]

    def expire(self, now: float) -> int:
        """Drop finished records past their TTL."""
        return self._do("expire", now)  # type: ignore[no-any-return]

    def list_dead(
        self, flt: TaskFilter, now: float, offset: int = 0, limit: int = 100
    ) -> list[TaskRecord]:
        """Dead tasks matching a filter."""
        return self._do("list_dead", flt, now, offset, limit)  # type: ignore[no-any-return]

    def count_dead(self, flt: TaskFilter | None = None, now: float = 0.0) -> int:
        """How many dead tasks match."""
        return self._do("count_dead", flt, now)  # type: ignore[no-any-return]

    def replay(
        self,
        task_id: str,
        new_task: NewTask,
        edit: dict[str, Any] | None,
        now: float,
        after: int | None = None,
    ) -> list[Transition]:
        """Enqueue the replay of a dead task (atomically checked ``after``: see the protocol)."""
        return self._do("replay", task_id, new_task, edit, now, after)  # type: ignore[no-any-return]

    def waiting(self, state: TaskState, now: float, limit: int = 100) -> list[TaskRecord]:
        """Delayed PENDING or RETRY tasks, soonest first."""
        return self._do("waiting", state, now, limit)  # type: ignore[no-any-return]

    def purge(self, task_ids: Sequence[str]) -> int:
        """Delete dead records."""
        return self._do("purge", list(task_ids))  # type: ignore[no-any-return]

    def set_if_absent(self, key: str, value: str, ttl_s: float, now: float) -> str | None:
        """Set a key unless live."""
        return self._do("set_if_absent", key, value, ttl_s, now)  # type: ignore[no-any-return]

    def get_key(self, key: str, now: float) -> str | None:
        """A key's live value."""
        return self._do("get_key", key, now)  # type: ignore[no-any-return]

    def set_key(self, key: str, value: str, ttl_s: float | None, now: float) -> None:
        """Set a key."""
        self._do("set_key", key, value, ttl_s, now)

    def delete_key(self, key: str) -> None:
        """Remove a key."""
        self._do("delete_key", key)

    def compare_and_set(
        self, key: str, expected: str | None, value: str, ttl_s: float | None, now: float
    ) -> bool:
        """Set a key only if its live value is ``expected``."""
        return self._do(  # type: ignore[no-any-return]
            "compare_and_set", key, expected, value, ttl_s, now
        )

    def scan_keys(self, prefix: str, now: float, limit: int = 10_000) -> list[str]:
        """Live keys with a prefix."""
        return self._do("scan_keys", prefix, now, limit)  # type: ignore[no-any-return]

    def add_counts(
        self,
        key: str,
        incr: dict[str, float],
        maxima: dict[str, float],
        ttl_s: float | None,
        now: float,
    ) -> None:
        """Add to a count map."""
        self._do("add_counts", key, incr, maxima, ttl_s, now)

    def read_counts(self, keys: Sequence[str], now: float) -> list[dict[str, float]]:
        """Count maps."""
        return self._do("read_counts", list(keys), now)  # type: ignore[no-any-return]

    def reserve(self, key: str, rate: float, burst: int, now: float) -> float:
        """Reserve a token-bucket token."""
        return self._do("reserve", key, rate, burst, now)  # type: ignore[no-any-return]

    def heartbeat(self, worker_id: str, info: dict[str, Any], now: float, ttl_s: float) -> None:
        """Publish a worker's state."""
        self._do("heartbeat", worker_id, info, now, ttl_s)

    def workers(self, now: float) -> list[dict[str, Any]]:
        """Live workers of every process."""
        return self._do("workers", now)  # type: ignore[no-any-return]

    def forget_worker(self, worker_id: str) -> None:
        """Remove a stopped worker."""
        self._do("forget_worker", worker_id)

    def register_names(self, names: Iterable[str]) -> None:
        """Record task names a worker can run."""
        self._do("register_names", sorted(set(names)))

    def known_names(self) -> set[str]:
        """Task names some worker registered."""
        return set(self._do("known_names"))
