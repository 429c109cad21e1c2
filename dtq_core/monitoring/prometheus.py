"""Prometheus text exposition (format 0.0.4) of a snapshot."""

from __future__ import annotations

from collections.abc import Iterable

from dtq_core.snapshot import SystemSnapshot


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**kv: str) -> str:
    if not kv:
        return ""
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in kv.items()) + "}"


def _num(v: float) -> str:
    """Exact integers, shortest round-tripping floats (never rounded to 6 digits)."""
    f = float(v)
    if f.is_integer() and abs(f) < 2**53:
        return str(int(f))
    return repr(f)


def _block(name: str, kind: str, help_: str, rows: Iterable[tuple[str, float]]) -> list[str]:
    out = [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
    out.extend(f"{name}{labels} {_num(value)}" for labels, value in rows)
    return out


def render(snap: SystemSnapshot) -> str:
    """All counters, gauges and latency summaries of ``snap`` as Prometheus text."""
    lines: list[str] = []
    counters = (
        "enqueued",
        "started",
        "succeeded",
        "failed",
        "retried",
        "dead",
        "cancelled",
        "requeued",
    )
    for c in counters:
        lines += _block(
            f"dtq_tasks_{c}_total",
            "counter",
            f"Tasks {c}, per queue.",
            [(_labels(queue=q.name), float(q.counters.get(c, 0))) for q in snap.queues],
        )
    for c in ("throttled", "deduped"):
        lines += _block(
            f"dtq_tasks_{c}_total", "counter", f"Tasks {c}.", [("", float(snap.counters.get(c, 0)))]
        )
    lines += _block(
        "dtq_queue_ready",
        "gauge",
        "Tasks ready to run.",
        [(_labels(queue=q.name), q.ready) for q in snap.queues],
    )
    lines += _block(
        "dtq_queue_delayed",
        "gauge",
        "Tasks waiting for their eta or retry.",
        [(_labels(queue=q.name), q.delayed) for q in snap.queues],
    )
    lines += _block(
        "dtq_queue_running",
        "gauge",
        "Tasks running.",
        [(_labels(queue=q.name), q.running) for q in snap.queues],
    )
    lines += _block(
        "dtq_queue_paused",
        "gauge",
        "1 when the queue is paused.",
        [(_labels(queue=q.name), float(q.paused)) for q in snap.queues],
    )
    lines += _block(
        "dtq_tasks",
        "gauge",
        "Retained task records by state.",
        [(_labels(state=s), n) for s, n in sorted(snap.counts.items())],
    )
    lines += _block(
        "dtq_dead_letters", "gauge", "Tasks in the dead-letter queue.", [("", snap.dead_letters)]
    )
    lines += _block(
        "dtq_workers",
        "gauge",
        "Live workers by state.",
        [
            (_labels(state=st), sum(1 for w in snap.workers if w.state == st))
            for st in sorted({w.state for w in snap.workers})
        ],
    )
    lines += _block(
        "dtq_breaker_open",
        "gauge",
        "1 when the breaker is not closed.",
        [(_labels(key=b.key), float(b.state != "closed")) for b in snap.breakers],
    )
    lines += _block(
        "dtq_ratelimit_tokens",
        "gauge",
        "Tokens left in the bucket.",
        [(_labels(scope=r.scope, key=r.key), r.tokens) for r in snap.limits],
    )
    for kind, what in (("wait", "Queue wait"), ("run", "Run time")):
        name = f"dtq_task_{kind}_seconds"
        lines += [f"# HELP {name} {what} of tasks (last 60 s).", f"# TYPE {name} summary"]
        for lat in snap.latency:
            if lat.kind != kind or lat.window_s != 60:
                continue
            base = {lat.scope: lat.key}
            for q, v in (
                ("0.5", lat.p50),
                ("0.95", lat.p95),
                ("0.99", lat.p99),
                ("0.999", lat.p999),
            ):
                lines.append(f"{name}{_labels(**base, quantile=q)} {_num(v)}")
            lines.append(f"{name}_sum{_labels(**base)} {_num(lat.mean * lat.count)}")
            lines.append(f"{name}_count{_labels(**base)} {lat.count}")
    return "\n".join(lines) + "\n"
