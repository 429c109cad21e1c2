"""Health and alerts derived from a snapshot: ok / degraded / down, with reasons."""

from __future__ import annotations

from dtq_core.snapshot import Health, SystemSnapshot

#: A worker silent for longer than this many seconds counts as lost.
STALE_WORKER_S = 15.0


def assess(snap: SystemSnapshot, backend_error: str | None = None) -> Health:
    """Judge a snapshot (``backend_error`` set when the backend did not answer)."""
    if backend_error is not None:
        return Health("down", (f"backend unreachable: {backend_error}",))
    info = snap.backend_info
    if info.get("failed"):
        # Fail-stop: nothing changes any more until its owner restarts.
        return Health("down", (f"store failed ({info.get('failure') or 'I/O error'})",))
    reasons: list[str] = []
    queued = sum(q.ready for q in snap.queues if not q.paused)
    live = [w for w in snap.workers if w.heartbeat_age <= STALE_WORKER_S]
    if queued and not live:
        reasons.append(f"{queued} tasks ready and no live worker")
    for w in snap.workers:
        if w.heartbeat_age > STALE_WORKER_S:
            reasons.append(f"worker {w.id} silent for {w.heartbeat_age:.0f}s")
        if w.restarts:
            reasons.append(f"worker {w.id} died and was restarted {w.restarts} time(s)")
    died = round(snap.throughput.dead.r60 * 60)
    if died:
        reasons.append(f"dead-letter queue growing: {died} in the last minute")
    for b in snap.breakers:
        if b.state != "closed":
            reasons.append(f"breaker {b.key} {b.state.replace('_', '-')}")
    return Health("degraded" if reasons else "ok", tuple(reasons))


def alerts(snap: SystemSnapshot) -> tuple[str, ...]:
    """Operator-facing alerts: DLQ growth, open breakers, paused queues, WAL recovery."""
    out: list[str] = []
    died = round(snap.throughput.dead.r60 * 60)
    if died:
        out.append(f"DLQ growing: +{died} in 60s ({snap.dead_letters} dead in all)")
    for b in snap.breakers:
        if b.state == "open":
            out.append(f"breaker {b.key} open ({b.held} tasks held)")
        elif b.state == "half_open":
            out.append(f"breaker {b.key} half-open: probing")
    for q in snap.queues:
        if q.paused:
            out.append(f"queue {q.name} paused ({q.depth} waiting)")
    info = snap.backend_info
    if info.get("recovered_tasks"):
        out.append(f"WAL recovery at start: {info['recovered_tasks']} tasks restored")
    if info.get("malformed_records"):
        out.append(
            f"WAL recovery skipped {info['malformed_records']} malformed log records "
            "(each is named in the log)"
        )
    if info.get("dropped_bytes"):
        out.append(f"WAL torn tail cut at start: {info['dropped_bytes']} bytes dropped")
    return tuple(out)
