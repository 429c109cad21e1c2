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


@dataclass(frozen=True, slots=True)
class Throughput:
    """System-wide rates, per second."""

    enqueued: Rates
    succeeded: Rates
    failed: Rates
    retried: Rates
    dead: Rates


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
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the shape of ``dtq stats --json``)."""
        return dataclasses.asdict(self)
