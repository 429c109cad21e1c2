"""Results and events of a broker: waiting for outcomes, publishing transitions, heartbeats."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from dtq_core.backends.base import Backend, Delivery, Outcome, Transition
from dtq_core.clock import Clock
from dtq_core.config import BrokerConfig
from dtq_core.errors import TaskNotFound
from dtq_core.events import EventBus
from dtq_core.maintenance import Maintenance
from dtq_core.monitoring.processes import ProcessMeter
from dtq_core.task import TERMINAL, TaskRecord, TaskState

if TYPE_CHECKING:
    from dtq_core.workers.base import Pool

_RUNNING = TaskState.RUNNING
_PENDING = TaskState.PENDING


class EventsMixin:
    """Result waiters woken by the transitions the broker publishes, and worker callbacks.

    Mixed into :class:`~dtq_core.broker.Broker`, which creates the state in its
    constructor.
    """

    config: BrokerConfig
    clock: Clock
    backend: Backend
    events: EventBus
    maintenance: Maintenance
    pool: Pool | None
    _waiters: dict[str, threading.Event]
    _waiters_lock: threading.Lock
    _started: bool
    process_meter: ProcessMeter

    # -- results and events ------------------------------------------------------------

    def wait(self, task_id: str, timeout: float | None = None) -> TaskRecord:
        """Block until the task is final; return its record.

        Raises:
            TimeoutError: Not final in time.
            TaskNotFound: Unknown id or expired result.
        """
        while True:
            self.wait_outcome(task_id, timeout)
            rec = self.backend.get(task_id)
            if rec is not None and rec.state in TERMINAL:
                return rec
            if rec is None:
                raise self._not_found(task_id)

    def wait_outcome(self, task_id: str, timeout: float | None = None) -> Outcome:
        """Block until the task is final; return its state and result or error.

        What :meth:`AsyncResult.get <dtq_core.client.AsyncResult.get>` needs: no copy
        of the whole record (:meth:`Backend.outcome`).

        Raises:
            TimeoutError: Not final in time.
            TaskNotFound: Unknown id or expired result.
        """
        backend = self.backend
        out = backend.outcome(task_id)
        if out is not None and out.state in TERMINAL:  # the common case: done already
            return out
        deadline = None if timeout is None else time.monotonic() + timeout
        poll = 0.001 if backend.capabilities.cross_process else 0.25
        registered = False
        try:
            while True:
                if out is None:
                    raise self._not_found(task_id)
                if out.state in TERMINAL:
                    return out
                state = out.state
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"task {task_id} still {state.value} after {timeout}s")
                if backend.wait_final(task_id, 1e9 if remaining is None else remaining):
                    out = backend.outcome(task_id)
                    continue  # woken by the process that owns the store
                with self._waiters_lock:
                    ev = self._waiters.setdefault(task_id, threading.Event())
                registered = True
                out = backend.outcome(task_id)
                if out is None or out.state in TERMINAL:
                    continue
                ev.wait(poll if remaining is None else min(poll, remaining))
                if backend.capabilities.cross_process:
                    poll = min(poll * 2, 0.1)
                out = backend.outcome(task_id)
        finally:
            if registered:  # whoever finished the task (maybe another process) did not
                with self._waiters_lock:
                    self._waiters.pop(task_id, None)

    def _not_found(self, task_id: str) -> TaskNotFound:
        return TaskNotFound(
            f"task {task_id} is unknown or its result expired "
            f"(results are kept {self.config.result_ttl:g}s)"
        )

    def emit(self, transitions: list[Transition], worker: str | None = None) -> None:
        """Publish one event per transition and wake result waiters."""
        if not transitions:
            return
        self.events.publish_many(self.clock.now(), transitions, worker)
        waiters = self._waiters
        if waiters:
            for tr in transitions:
                if tr.new in TERMINAL:
                    ev = waiters.pop(tr.task_id, None)
                    if ev is not None:
                        ev.set()

    def emit_started(self, d: Delivery, worker: str) -> None:
        """Publish the PENDING -> RUNNING event of a claimed task."""
        self.events.publish_many(
            d.started_at, ((d.task_id, d.name, d.queue, _PENDING, _RUNNING, None),), worker
        )

    def wake_scheduler(self, when: float) -> None:
        """A delayed task is due at ``when``: make sure the scheduler looks by then."""
        if self._started:
            self.maintenance.wake(when)

    def backend_wakeup(self) -> None:
        """Wake blocked claimers (stopping)."""
        self.backend.wakeup()

    def heartbeat(self, now: float) -> None:
        """Renew the leases of running tasks and publish worker states."""
        pool = self.pool
        if pool is None:
            return
        cfg = self.config
        # The round's time may be seconds old (its earlier calls waited on a stalled
        # store): leases are renewed from now, or they would end sooner than the worker
        # believes (the store never shortens a lease, but would not lengthen it either).
        now = max(now, self.clock.now())
        self.backend.extend_leases(pool.in_flight(), cfg.lease_s, now)
        for w in pool.workers:
            w.last_seen = now
            state = {**w.to_dict(now), "queues": list(cfg.queues or ())}
            self.backend.heartbeat(w.id, state, now, cfg.lease_s)
        from dtq_core.monitoring import processes

        processes.publish(self, self.process_meter, now)  # type: ignore[arg-type]
