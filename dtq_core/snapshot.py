"""The system snapshot: a frozen tree of dataclasses answering a dashboard's questions."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Rates:
    """Events per second over the last 1, 10 and 60 seconds."""

    r1: float = 0.0
    r10: float = 0.0
    r60: float = 0.0


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    """One queue: depth, flow and history."""

    name: str
    ready: int
    delayed: int
    running: int
    paused: bool
    enqueued: Rates
    succeeded: Rates
    failed: Rates
    #: Ready depth is not kept per second; this is tasks finished per second (60 s).
    done_series: tuple[int, ...] = ()
    enqueued_series: tuple[int, ...] = ()
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def depth(self) -> int:
        """Tasks waiting (ready and delayed)."""
        return self.ready + self.delayed


@dataclass(frozen=True, slots=True)
class WorkerSnapshot:
    """One worker as its last heartbeat described it."""

    id: str
    pool: str
    state: str
    task_id: str | None
    task_name: str | None
    task_runtime: float | None
    processed: int
    failed: int
    heartbeat_age: float
    #: The queues it serves, in priority order; empty when it serves every queue.
    queues: tuple[str, ...] = ()
    #: Times the worker's loop died of an unexpected error and was started again.
    restarts: int = 0


@dataclass(frozen=True, slots=True)
class ProcessSnapshot:
    """One worker process as its last record described it (published every heartbeat)."""

    #: ``host:pid``, the prefix of its workers' ids.
    id: str
    host: str
    pid: int
    version: str
    pool: str
    concurrency: int
    #: Queues served (empty: every queue).
    queues: tuple[str, ...]
    busy: int
    #: Tasks finished per second over the last heartbeat interval.
    tasks_per_s: float
    rss_bytes: int
    cpu_percent: float
    started_at: float
    heartbeat_age: float
    #: ``owner`` or ``attached`` on an embedded store; empty elsewhere.
    role: str = ""
    #: Worker threads that died and were replaced.
    restarts: int = 0


@dataclass(frozen=True, slots=True)
class Throughput:
    """System-wide rates, per second."""

    enqueued: Rates
    succeeded: Rates
    failed: Rates
    retried: Rates
    dead: Rates


@dataclass(frozen=True, slots=True)
class LatencySnapshot:
    """A latency histogram (seconds) of one queue or task name, over a window."""

    #: ``queue`` or ``task``.
    scope: str
    #: The queue or task name.
    key: str
    #: ``wait`` (enqueue -> start) or ``run`` (start -> end).
    kind: str
    window_s: int
    count: int
    p50: float
    p95: float
    p99: float
    p999: float
    max: float
    mean: float
    #: ``(low, high, count)`` bins, log-spaced, for drawing bars.
    bins: tuple[tuple[float, float, int], ...] = ()


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A circuit breaker."""

    key: str
    #: ``closed``, ``open`` or ``half_open``.
    state: str
    failures: int
    successes: int
    threshold: int
    window_s: float
    reset_timeout: float
    opened_at: float | None
    next_probe_at: float | None
    #: Tasks held back while open.
    held: int
    #: The current state was set by an operator (forced open or closed) rather than by
    #: failures; a breaker closed by hand still trips on new failures (then it is ``False``).
    manual: bool = False


@dataclass(frozen=True, slots=True)
class LimiterSnapshot:
    """A token-bucket rate limit."""

    #: ``queue`` or ``task``.
    scope: str
    key: str
    rate: float
    burst: int
    tokens: float
    throttled: int


@dataclass(frozen=True, slots=True)
class ScheduleSnapshot:
    """A cron (periodic) schedule."""

    name: str
    task: str
    expr: str
    description: str
    tz: str
    next_runs: tuple[float, ...]
    #: When the last task was enqueued (a tick's time, or the moment of a trigger-now);
    #: ticks skipped while paused or down are not fires.
    last_fire: float | None
    #: The task enqueued at ``last_fire`` (always the pair of that time).
    last_task_id: str | None
    #: State of the last task it enqueued (``None`` when unknown or expired).
    last_state: str | None
    paused: bool
    #: ``skip`` or ``catch_up``.
    missed: str
    fired: int
    #: The last task was enqueued by hand (trigger-now), not by a tick.
    last_manual: bool = False


@dataclass(frozen=True, slots=True)
class WorkflowNodeSnapshot:
    """One node of a DAG run."""

    id: str
    task: str
    #: ``waiting``, ``pending``, ``running``, ``success``, ``failed`` or ``upstream_failed``.
    state: str
    level: int
    parents: tuple[str, ...]
    task_id: str | None
    started_at: float | None
    finished_at: float | None
    error: str | None


@dataclass(frozen=True, slots=True)
class WorkflowSnapshot:
    """One DAG run."""

    id: str
    name: str
    #: ``running``, ``success`` or ``failed``.
    state: str
    created_at: float
    finished_at: float | None
    nodes: tuple[WorkflowNodeSnapshot, ...]


@dataclass(frozen=True, slots=True)
class DedupSnapshot:
    """The deduplication filter."""

    keys: int
    capacity: int
    fill_ratio: float
    est_fp_rate: float
    dropped: int
    ttl_s: float


@dataclass(frozen=True, slots=True)
class Health:
    """``ok``, ``degraded`` or ``down``, and why."""

    status: str = "ok"
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SystemSnapshot:
    """Everything the dashboard shows, taken at ``taken_at``."""

    taken_at: float
    backend: str
    backend_info: dict[str, Any]
    uptime: float | None
    counts: dict[str, int]
    queues: tuple[QueueSnapshot, ...]
    workers: tuple[WorkerSnapshot, ...]
    in_flight: int
    workers_busy: int
    throughput: Throughput
    dead_letters: int
    counters: dict[str, int]
    last_event: int
    latency: tuple[LatencySnapshot, ...] = ()
    breakers: tuple[BreakerSnapshot, ...] = ()
    limits: tuple[LimiterSnapshot, ...] = ()
    schedules: tuple[ScheduleSnapshot, ...] = ()
    workflows: tuple[WorkflowSnapshot, ...] = ()
    dedup: DedupSnapshot | None = None
    health: Health = field(default_factory=Health)
    #: Operator-facing alerts (DLQ growing, breaker open, queue paused, WAL recovery...).
    alerts: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    #: Worker processes of the whole system (their published records).
    processes: tuple[ProcessSnapshot, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the shape of ``dtq stats --json``)."""
        return dataclasses.asdict(self)
