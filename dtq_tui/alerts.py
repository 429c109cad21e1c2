"""Alerts for the overview: the engine's own, plus what the snapshot plainly shows."""

from __future__ import annotations

from dtq_core.snapshot import SystemSnapshot

#: A worker whose heartbeat is older than this is shown as silent.
SILENT_WORKER_S = 15.0


def alerts(snap: SystemSnapshot) -> list[tuple[str, str]]:
    """``(role, text)`` pairs, most urgent first; the engine's alerts come first."""
    out: list[tuple[str, str]] = [("warn", a) for a in snap.alerts]
    seen = " ".join(snap.alerts).lower()

    def add(role: str, text: str, key: str) -> None:
        if key.lower() not in seen:
            out.append((role, text))

    dead_rate = snap.throughput.dead.r60
    if dead_rate > 0:
        add("bad", f"DLQ growing: {dead_rate * 60:.0f}/min, {snap.dead_letters} dead", "dlq")
    for b in snap.breakers:
        if b.state == "open":
            add("bad", f"breaker {b.key} open ({b.failures} failures, {b.held} held)", b.key)
        elif b.state == "half_open":
            add("warn", f"breaker {b.key} half-open: probing", b.key)
    for q in snap.queues:
        if q.paused:
            add("warn", f"queue {q.name} paused ({q.depth} waiting)", f"queue {q.name}")
    for w in snap.workers:
        if w.heartbeat_age > SILENT_WORKER_S:
            add("warn", f"worker {w.id} silent for {w.heartbeat_age:.0f}s", w.id)
    return out
