"""The system snapshot of a broker: what :meth:`LocalConsole.snapshot` answers.

Queues, states, rates (the store's shared counters where it keeps them), workers (this
process's fresher than their heartbeats), every hook's part, process records, health
and alerts, with URLs redacted.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from dtq_core.monitoring.health import alerts, assess
from dtq_core.monitoring.metrics import SharedMetrics
from dtq_core.monitoring.processes import read as read_processes
from dtq_core.monitoring.rates import RATE_WINDOWS
from dtq_core.redact import redact_text, redact_url
from dtq_core.snapshot import QueueSnapshot, Rates, SystemSnapshot, Throughput, WorkerSnapshot

if TYPE_CHECKING:
    from dtq_core.broker import Broker


def take_snapshot(b: Broker) -> SystemSnapshot:
    """The dashboard's state, as the broker ``b`` and its store see the whole system."""
    backend = b.backend
    now = b.clock.now()
    m: Any = b.metrics
    shared = getattr(backend, "rate_series", None)
    if shared is not None:  # every process's counts, kept by the backend
        m = SharedMetrics(shared(now, 60), backend.totals(), b.metrics.extras())  # type: ignore[attr-defined]
    counts = {s.value: n for s, n in backend.count_by_state().items()}
    queues = []
    for qs in backend.queue_stats():
        queues.append(
            QueueSnapshot(
                qs.name,
                qs.ready,
                qs.delayed,
                qs.running,
                qs.paused,
                _rates(m, "enqueued", now, qs.name),
                _rates(m, "succeeded", now, qs.name),
                _rates(m, "failed", now, qs.name),
                tuple(m.series("succeeded", now, 60, qs.name)),
                tuple(m.series("enqueued", now, 60, qs.name)),
                m.counters(qs.name),
            )
        )
    workers = []
    for w in backend.workers(now):
        started = w.get("task_started")
        workers.append(
            WorkerSnapshot(
                w["id"],
                w["pool"],
                w["state"],
                w.get("task_id"),
                w.get("task_name"),
                None if started is None else max(0.0, now - started),
                int(w.get("processed", 0)),
                int(w.get("failed", 0)),
                max(0.0, now - float(w.get("heartbeat", now))),
                tuple(w.get("queues") or ()),
                int(w.get("restarts", 0)),
            )
        )
    # Local workers are fresher than their last heartbeat.
    if b.pool is not None:
        local = {w.id: w for w in b.pool.workers}
        served = tuple(b.config.queues or ())
        workers = [
            _fresh(ws, local[ws.id], now, served) if ws.id in local else ws for ws in workers
        ]
        seen = {ws.id for ws in workers}
        workers += [_fresh(None, w, now, served) for w in b.pool.workers if w.id not in seen]
    workers.sort(key=lambda w: w.id)
    extra: dict[str, Any] = {}
    for hook in b.hooks:
        part = hook.snapshot(b)
        if part:
            extra.update(part)
    snap = SystemSnapshot(
        taken_at=now,
        backend=redact_url(backend.url),
        backend_info=_safe_info(backend.info()),
        uptime=None if b.started_at is None else now - b.started_at,
        counts=counts,
        queues=tuple(queues),
        workers=tuple(workers),
        in_flight=counts.get("RUNNING", 0),
        workers_busy=sum(1 for w in workers if w.state == "busy"),
        throughput=Throughput(
            _rates(m, "enqueued", now),
            _rates(m, "succeeded", now),
            _rates(m, "failed", now),
            _rates(m, "retried", now),
            _rates(m, "dead", now),
        ),
        dead_letters=backend.count_dead(),
        counters=m.counters(),
        last_event=b.events.last_seq,
        latency=extra.pop("latency", ()),
        breakers=extra.pop("breakers", ()),
        limits=extra.pop("limits", ()),
        schedules=extra.pop("schedules", ()),
        workflows=extra.pop("workflows", ()),
        dedup=extra.pop("dedup", None),
        extra=extra,
        processes=read_processes(backend, now),
    )
    return dataclasses.replace(snap, health=assess(snap), alerts=alerts(snap))


def _rates(metrics: Any, counter: str, now: float, queue: str | None = None) -> Rates:
    r = [metrics.rate(counter, w, now, queue) for w in RATE_WINDOWS]
    return Rates(r[0], r[1], r[2])


def _safe_info(info: dict[str, Any]) -> dict[str, Any]:
    """Backend facts with any URL or URL-like text in them redacted."""
    return {k: redact_text(v) if isinstance(v, str) else v for k, v in info.items()}


def _fresh(
    old: WorkerSnapshot | None, w: Any, now: float, queues: tuple[str, ...]
) -> WorkerSnapshot:
    cur = w.current
    return WorkerSnapshot(
        w.id,
        w.pool,
        w.state,
        cur.task_id if cur else None,
        cur.name if cur else None,
        None if w.current_started is None else max(0.0, now - w.current_started),
        w.processed,
        w.failed,
        0.0 if old is None else old.heartbeat_age,
        queues,
        w.restarts,
    )
