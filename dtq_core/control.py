"""The Console API: what the console and the CLI use, and nothing else.

:class:`LocalConsole` serves it from a broker in this process. The embedded store's
socket and the Redis backend serve the same methods to other processes. The protocol
itself, :class:`ConsoleAPI`, lives in :mod:`dtq_core.console_api` and is re-exported here.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from dtq_core.console_api import CONSOLE_WRITES, ConsoleAPI, changes_state
from dtq_core.errors import BackendError, ConfigError, ReadOnlyError
from dtq_core.events import Event
from dtq_core.filters import TaskFilter, parse_filter
from dtq_core.hooks import Hook
from dtq_core.paging import DEFAULT_SORT, Cursor, TaskPage
from dtq_core.redact import redact_text
from dtq_core.reliability.deadletter import FailureGroup, ReplayPlan
from dtq_core.snapshot import Health, SystemSnapshot, WorkflowSnapshot
from dtq_core.snapshot_view import take_snapshot
from dtq_core.task import TaskRecord, TaskState

if TYPE_CHECKING:
    from dtq_core.broker import Broker

HookT = TypeVar("HookT", bound=Hook)


class LocalConsole:
    """The Console API served by a broker in this process.

    Its views are safe to show: the backend URL has its password masked and task
    arguments, results and edits have sensitive values masked (the broker's
    :attr:`~dtq_core.broker.Broker.redactor`), whoever asks (console, ``dtq``, the
    embedded owner's socket).

    Args:
        broker: The broker it serves.
        read_only: Refuse every state-changing method (:data:`CONSOLE_WRITES`) with
            :class:`~dtq_core.errors.ReadOnlyError` before it reaches the store.
    """

    def __init__(self, broker: Broker, read_only: bool = False) -> None:
        self.broker = broker
        self.backend = broker.backend
        #: This session may change nothing.
        self.read_only = read_only
        if read_only:
            for name in CONSOLE_WRITES:
                setattr(self, name, _refuse(name, getattr(self, name)))

    def snapshot(self) -> SystemSnapshot:
        """The dashboard's state."""
        return take_snapshot(self.broker)

    def close(self) -> None:
        """Stop the broker this console opened (for consoles made by :func:`connect`)."""
        self.broker.stop(drain_timeout=0.0)

    def _safe(self, records: list[TaskRecord]) -> list[TaskRecord]:
        redactor = self.broker.redactor
        return [redactor.record(r) for r in records]

    def events(self, since: int, limit: int = 1000) -> list[Event]:
        """Events after ``since`` (from every process when the backend keeps a stream)."""
        read = getattr(self.backend, "read_events", None)
        if read is None:
            return self.broker.events.since(since, limit)
        out = []
        for seq, f in read(since, limit):
            out.append(
                Event(
                    seq,
                    float(f.get("ts") or 0.0),
                    f.get("id", ""),
                    f.get("name", ""),
                    f.get("queue", ""),
                    f.get("old") or None,
                    f.get("new", ""),
                    f.get("worker") or None,
                    f.get("note") or None,
                )
            )
        return out

    def subscribe(self, cb: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``cb`` on every event (in the publishing thread); returns unsubscribe."""
        return self.broker.events.subscribe(cb)

    def tasks(
        self, flt: str | TaskFilter | None = None, offset: int = 0, limit: int = 100
    ) -> list[TaskRecord]:
        """Task records matching a filter."""
        f = flt if isinstance(flt, TaskFilter) else parse_filter(flt)
        return self._safe(self.backend.list_tasks(f, self.broker.clock.now(), offset, limit))

    def waiting(self, state: TaskState, limit: int = 100) -> list[TaskRecord]:
        """Tasks waiting for a time, soonest first (see the protocol)."""
        now = self.broker.clock.now()
        return self._safe(self.backend.waiting(TaskState(state), now, limit))

    def task_page(
        self,
        flt: str | TaskFilter | None = None,
        sort: str = DEFAULT_SORT,
        descending: bool = True,
        after: Cursor | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> TaskPage:
        """A sorted page of the tasks matching a filter, with the total."""
        f = flt if isinstance(flt, TaskFilter) else parse_filter(flt)
        now = self.broker.clock.now()
        page = self.backend.task_page(f, now, sort, descending, after, offset, limit)
        return dataclasses.replace(page, records=self._safe(page.records))

    def task(self, task_id: str) -> TaskRecord | None:
        """One task's record."""
        rec = self.backend.get(task_id)
        return None if rec is None else self.broker.redactor.record(rec)

    def resolve_id(self, prefix: str, limit: int = 10) -> list[str]:
        """Task ids starting with ``prefix`` (an exact id alone), at most ``limit``."""
        return self.backend.find_ids(prefix, limit)

    def task_names(self) -> list[str]:
        """Task names registered in this process or by any worker."""
        return sorted(set(self.broker.registry.names()) | self.backend.known_names())

    def dead_letters(
        self, flt: str | TaskFilter | None = None, offset: int = 0, limit: int = 100
    ) -> list[TaskRecord]:
        """Dead tasks matching a filter."""
        return self._safe(self.broker.dlq.list(flt, offset, limit))

    def dead_groups(self, flt: str | TaskFilter | None = None) -> list[FailureGroup]:
        """Dead tasks grouped by cause."""
        return self.broker.dlq.groups(flt)

    def replay(
        self,
        task_ids: Sequence[str],
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        note: str = "",
        dry_run: bool = False,
        again: bool = False,
    ) -> list[ReplayPlan]:
        """Replay dead tasks (those replayed before only with ``again``).

        Values an edit left masked keep their originals.
        """
        plans = self.broker.dlq.replay(
            task_ids, args=args, kwargs=kwargs, note=note, dry_run=dry_run, again=again
        )
        redactor = self.broker.redactor
        out = []
        for p in plans:
            rec = self.backend.get(p.dead_id)
            masked = redactor.masks_positional(p.name, _opts(rec))
            out.append(
                dataclasses.replace(
                    p, args=redactor.args(p.args, masked), kwargs=redactor.value(p.kwargs)
                )
            )
        return out

    def purge(self, task_ids: Sequence[str]) -> int:
        """Delete dead tasks."""
        return self.broker.dlq.purge(task_ids)

    def cancel(self, task_id: str) -> bool:
        """Cancel a task that has not started."""
        return self.broker.cancel(task_id)

    def run_now(self, task_id: str) -> str:
        """Run a delayed or retrying task now; return the id of the task that runs.

        The waiting task is cancelled (so it cannot also run at its due time) and a copy
        with the same name, arguments, queue, priority and per-call options is enqueued,
        ready at once.

        Raises:
            TaskNotFound: No such task.
            ConfigError: The task is not waiting (it runs, or ran, already).
        """
        from dtq_core.codec import decode_message
        from dtq_core.errors import TaskNotFound
        from dtq_core.task import TaskState

        rec = self.backend.get(task_id)
        if rec is None:
            raise TaskNotFound(f"no task {task_id!r}")
        delayed = rec.state is TaskState.PENDING and rec.eta is not None
        if not (delayed or rec.state is TaskState.RETRY):
            raise ConfigError(
                f"task {task_id} is {rec.state.value}: only a delayed task or one waiting "
                "for a retry can be run now"
            )
        msg = decode_message(rec.payload)
        if not self.broker.cancel(task_id):
            raise ConfigError(f"task {task_id} started meanwhile: nothing to run now")
        return self.broker.send(
            rec.name,
            msg["args"],
            msg["kwargs"],
            queue=rec.queue,
            priority=rec.priority,
            options=msg.get("opts") or None,
        ).id

    def enqueue(
        self,
        name: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> str:
        """Enqueue a task by name."""
        return self.broker.send(name, args or [], kwargs or {}, **options).id

    def pause_queue(self, queue: str) -> None:
        """Stop consumption from a queue."""
        self.backend.set_paused(queue, True)

    def resume_queue(self, queue: str) -> None:
        """Resume consumption from a queue."""
        self.backend.set_paused(queue, False)

    def run_workflow(self, spec: dict[str, Any]) -> str:
        """Validate and start a DAG run from its dict form; return the run id."""
        from dtq_core.scheduling.dag import Workflow, run_workflow

        return run_workflow(self.broker, Workflow.from_dict(spec))

    def retry_workflow(self, run_id: str) -> list[str]:
        """Rerun a failed DAG run from its failed nodes; return the nodes restarted."""
        from dtq_core.scheduling.dag import retry_workflow

        return retry_workflow(self.broker, run_id)

    def workflow(self, run_id: str) -> WorkflowSnapshot | None:
        """One DAG run, or ``None`` when unknown or expired."""
        from dtq_core.scheduling.dag import get_workflow

        return get_workflow(self.broker, run_id)

    def health(self) -> Health:
        """Health: ok, degraded or down with reasons (down when the backend is unreachable)."""
        try:
            self.backend.ping()
            return self.snapshot().health
        except BackendError as exc:
            return Health("down", (f"backend unreachable: {redact_text(str(exc))}",))

    def metrics_text(self) -> str:
        """All metrics in the Prometheus text format."""
        from dtq_core.monitoring.prometheus import render
        from dtq_core.monitoring.published import read_total

        snap = self.snapshot()
        return render(snap, read_total(self.backend, snap.taken_at))

    def _hook(self, kind: type[HookT], what: str) -> HookT:
        hook = self.broker.hook(kind)
        if hook is None:
            raise ConfigError(f"{what} is not enabled in this broker's hook chain")
        return hook

    def pause_schedule(self, name: str, paused: bool = True) -> None:
        """Pause (or resume) a cron schedule."""
        from dtq_core.scheduling.periodic import PeriodicHook

        self._hook(PeriodicHook, "the cron scheduler").pause(self.broker, name, paused)

    def trigger_schedule(self, name: str) -> str:
        """Enqueue a schedule's task now."""
        from dtq_core.scheduling.periodic import PeriodicHook

        return self._hook(PeriodicHook, "the cron scheduler").trigger(self.broker, name)

    def set_rate_limit(self, scope: str, key: str, rate: float, burst: int | None = None) -> None:
        """Change a rate limit at run time."""
        from dtq_core.scheduling.ratelimit import RateLimitHook, parse_rate

        hook = self._hook(RateLimitHook, "rate limiting")
        hook.change(self.broker, scope, key, parse_rate(rate), burst)

    def set_breaker(self, key: str, state: str) -> None:
        """Force a breaker open or closed."""
        from dtq_core.reliability.circuit import BreakerHook

        self._hook(BreakerHook, "circuit breaking").force(self.broker, key, state)


def _refuse(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
    params = list(inspect.signature(real).parameters)

    def refused(*args: Any, **kwargs: Any) -> Any:
        if changes_state(name, dict(zip(params, args, strict=False)) | kwargs):
            raise ReadOnlyError(f"{name} changes state: this session is read-only")
        return real(*args, **kwargs)  # e.g. a replay's dry run

    refused.__name__ = name
    return refused


def _opts(rec: TaskRecord | None) -> dict[str, Any]:
    if rec is None:
        return {}
    try:
        return dict(rec.message().get("opts") or {})
    except Exception:  # an undecodable payload carries no options
        return {}


def connect(
    url: str | None = None,
    *,
    registry: Any = None,
    create: bool = False,
    read_only: bool = False,
    connect_timeout: float = 3.0,
) -> ConsoleAPI:
    """A Console API for the system at ``url`` (default: ``DTQ_BACKEND``).

    ``embedded://PATH`` attaches to the socket of the worker that owns the directory; a
    console never opens the store itself (only workers own it), so with no owner this
    fails within ``connect_timeout`` seconds. ``redis://`` opens a producer-only broker
    on the server; it sees every worker. ``memory://`` is this process only (``create``
    is accepted for compatibility and changes nothing).

    Args:
        url: The backend URL.
        registry: The task registry of the producer-only broker (Redis, memory).
        create: Unused (kept for callers of earlier versions).
        read_only: The session may change nothing: every method of
            :data:`~dtq_core.console_api.CONSOLE_WRITES` raises
            :class:`~dtq_core.errors.ReadOnlyError` before reaching the store (on
            ``embedded://`` the owner refuses them itself).
        connect_timeout: Seconds to wait for the store or its owner to answer; on Redis
            it also bounds the connect, socket and retry waits (faces fail fast).

    Raises:
        ConfigError: A malformed URL.
        BackendUnavailable: The backend cannot be reached.
    """
    from dtq_core.broker import Broker
    from dtq_core.config import BrokerConfig, default_backend_url

    url = url or default_backend_url()
    if url.startswith("embedded://"):
        from dtq_core.backends.embedded.backend import parse_url
        from dtq_core.errors import BackendUnavailable
        from dtq_core.rpc import RemoteConsole

        data_dir = parse_url(url)[0]
        if not data_dir.is_dir():
            raise BackendUnavailable(
                f"no embedded store at {data_dir}: check the path, or start a worker there "
                f"(dtq worker APP --backend embedded://{data_dir})"
            )
        return RemoteConsole(
            data_dir / "dtq.sock", read_only=read_only, connect_timeout=connect_timeout
        )
    cfg = BrokerConfig(backend=url, num_workers=0, attach_timeout=connect_timeout)
    if registry is not None:
        cfg.registry = registry
    broker = Broker(cfg)
    broker.backend.limit_waits(connect_timeout)
    broker.open()
    return LocalConsole(broker, read_only=read_only)


def wal_tools() -> Any:
    """Offline tools for an embedded store (``dtq wal``): verify, repair, inspect, compact..."""
    from dtq_core.backends.embedded.tools import WalTools

    return WalTools()


__all__ = ["ConsoleAPI", "LocalConsole", "connect", "wal_tools"]
