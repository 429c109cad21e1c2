"""The values the backend protocol passes.

What a producer hands over, what a worker claims, the transitions a change made, a
task's outcome, queue figures and a backend's capabilities. Re-exported by
:mod:`dtq_core.backends.base`, where the protocol that uses them lives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from dtq_core.task import ErrorInfo, TaskState


class Capabilities(NamedTuple):
    """What a backend can promise."""

    #: Acknowledged writes survive a crash of the process.
    durable: bool
    #: Several processes (or machines) share the same queues.
    cross_process: bool
    #: ``claim(wait=...)`` blocks until work arrives instead of returning at once.
    blocking_claim: bool
    #: Every call is a network round trip: workers claim in batches and store
    #: successful outcomes together (:meth:`Backend.ack_many`).
    batch_acks: bool = False


@dataclass(slots=True)
class NewTask:
    """What a producer hands to :meth:`Backend.enqueue`."""

    id: str
    name: str
    queue: str
    priority: int
    payload: bytes
    eta: float | None = None
    max_retries: int = 0
    time_limit: float | None = None
    dedup_key: str | None = None
    replayed_from: str | None = None
    workflow: str | None = None


class Delivery(NamedTuple):
    """One claimed task, as a worker sees it."""

    task_id: str
    token: int
    name: str
    queue: str
    payload: bytes
    attempt: int
    deliveries: int
    enqueued_at: float
    started_at: float
    time_limit: float | None
    max_retries: int
    #: When the store started this lease's clock (its deadline is this plus the lease);
    #: ``None``: at ``started_at`` (the claim). A task handed over by an enqueue is
    #: leased from the enqueue's time.
    leased_at: float | None = None


class Transition(NamedTuple):
    """One state change made by a backend (the broker turns it into an event)."""

    task_id: str
    name: str
    queue: str
    old: TaskState | None
    new: TaskState
    note: str | None = None


class Outcome(NamedTuple):
    """What a result waiter reads of a task: its state and, once final, how it ended."""

    state: TaskState
    result: Any = None
    error: ErrorInfo | None = None
    dead_reason: str | None = None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Per-queue figures a backend can answer cheaply."""

    name: str
    ready: int
    delayed: int
    running: int
    paused: bool
