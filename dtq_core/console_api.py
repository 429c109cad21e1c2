"""The Console API protocol: the queries and commands operators' tools may use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from dtq_core.events import Event
from dtq_core.filters import TaskFilter
from dtq_core.paging import DEFAULT_SORT, Cursor, TaskPage
from dtq_core.reliability.deadletter import FailureGroup, ReplayPlan
from dtq_core.snapshot import (
    Health,
    SystemSnapshot,
    WorkflowSnapshot,
)
from dtq_core.task import TaskRecord, TaskState

#: Console API methods that change state: refused to a read-only session by whoever
#: serves it (the embedded owner's socket, a read-only console on Redis).
CONSOLE_WRITES = frozenset(
    {
        "replay",
        "purge",
        "cancel",
        "run_now",
        "enqueue",
        "pause_queue",
        "resume_queue",
        "pause_schedule",
        "trigger_schedule",
        "set_rate_limit",
        "set_breaker",
        "run_workflow",
        "retry_workflow",
    }
)


def changes_state(name: str, kwargs: dict[str, Any]) -> bool:
    """Whether a call of Console API method ``name`` changes state.

    A dry run of a replay only describes what it would do: a read-only session may ask.
    """
    if name == "replay" and kwargs.get("dry_run"):
        return False
    return name in CONSOLE_WRITES


class ConsoleAPI(Protocol):
    """Queries and commands for operators' tools.

    Its views never show a secret: backend URLs have their password masked and task
    arguments, results and edits their sensitive values (see :mod:`dtq_core.redact`).
    """

    #: This session may change nothing: every method of :data:`CONSOLE_WRITES` raises
    #: :class:`~dtq_core.errors.ReadOnlyError` before it reaches the store.
    read_only: bool

    def snapshot(self) -> SystemSnapshot:
        """The dashboard's state; cheap (never O(all tasks))."""
        ...

    def events(self, since: int, limit: int = 1000) -> list[Event]:
        """Events after sequence number ``since``."""
        ...

    def tasks(
        self, flt: str | TaskFilter | None = None, offset: int = 0, limit: int = 100
    ) -> list[TaskRecord]:
        """Task records matching a filter, newest first."""
        ...

    def waiting(self, state: TaskState, limit: int = 100) -> list[TaskRecord]:
        """Tasks waiting for a time, soonest first: delayed PENDING ones, or RETRY ones.

        From the store's due-time index, whatever else it holds (Scheduled and Retry).
        """
        ...

    def task_page(
        self,
        flt: str | TaskFilter | None = None,
        sort: str = DEFAULT_SORT,
        descending: bool = True,
        after: Cursor | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> TaskPage:
        """A page of the tasks matching a filter, sorted in the backend, with the total.

        Ordered by ``(sort value, id)``; ``after`` is the previous page's ``next_after``
        (keyset paging: pages stay put while tasks arrive).
        """
        ...

    def task(self, task_id: str) -> TaskRecord | None:
        """One task's record with its attempt history."""
        ...

    def resolve_id(self, prefix: str, limit: int = 10) -> list[str]:
        """Task ids starting with ``prefix``, sorted, at most ``limit``; an exact id alone.

        One id: the prefix names that task. Several: it is ambiguous. None: no such task.
        """
        ...

    def task_names(self) -> list[str]:
        """Task names that can run: registered here or by any worker, sorted."""
        ...

    def dead_letters(
        self, flt: str | TaskFilter | None = None, offset: int = 0, limit: int = 100
    ) -> list[TaskRecord]:
        """Dead tasks matching a filter, newest first."""
        ...

    def dead_groups(self, flt: str | TaskFilter | None = None) -> list[FailureGroup]:
        """Dead tasks grouped by cause."""
        ...

    def replay(
        self,
        task_ids: Sequence[str],
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        note: str = "",
        dry_run: bool = False,
        again: bool = False,
    ) -> list[ReplayPlan]:
        """Replay dead tasks (optionally with edited args).

        A dead task replayed before is skipped (its plan says ``skipped``) unless
        ``again`` is given or its args are changed.
        """
        ...

    def purge(self, task_ids: Sequence[str]) -> int:
        """Delete dead tasks."""
        ...

    def cancel(self, task_id: str) -> bool:
        """Cancel a task that has not started."""
        ...

    def run_now(self, task_id: str) -> str:
        """Run a delayed or retrying task now (a copy, ready at once); return its id."""
        ...

    def enqueue(
        self,
        name: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> str:
        """Enqueue a registered task by name; return its id."""
        ...

    def pause_queue(self, queue: str) -> None:
        """Stop consumption from a queue."""
        ...

    def resume_queue(self, queue: str) -> None:
        """Resume consumption from a queue."""
        ...

    def health(self) -> Health:
        """Health: ok, degraded or down, with reasons."""
        ...

    def metrics_text(self) -> str:
        """All metrics in the Prometheus text exposition format."""
        ...

    def pause_schedule(self, name: str, paused: bool = True) -> None:
        """Pause (or resume, with ``paused=False``) a cron schedule."""
        ...

    def trigger_schedule(self, name: str) -> str:
        """Enqueue a schedule's task now; return the task id."""
        ...

    def set_rate_limit(self, scope: str, key: str, rate: float, burst: int | None = None) -> None:
        """Change a rate limit (``scope`` is ``queue`` or ``task``) at run time."""
        ...

    def set_breaker(self, key: str, state: str) -> None:
        """Force a breaker ``open`` or ``closed`` by hand."""
        ...

    def run_workflow(self, spec: dict[str, Any]) -> str:
        """Validate and start a DAG run from its dict form; return the run id."""
        ...

    def retry_workflow(self, run_id: str) -> list[str]:
        """Rerun a failed DAG run from its failed nodes; return the nodes restarted."""
        ...

    def workflow(self, run_id: str) -> WorkflowSnapshot | None:
        """One DAG run."""
        ...
