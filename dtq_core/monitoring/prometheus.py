"""Prometheus exposition of the whole system, made with ``prometheus_client``.

Counters are the store's cumulative counts; latency is a real ``histogram`` per queue
and task (``_bucket{le=...}``, ``_sum``, ``_count``) built from the cumulative map that
every worker process adds to (:mod:`.published`), so two scrapes of any process, the
console's or a worker's, give the same monotonic series. Gauges describe the moment:
queue depths, workers, processes, breakers, rate limits.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dtq_core.monitoring.histogram import Histogram
from dtq_core.monitoring.published import Merged
from dtq_core.snapshot import SystemSnapshot

#: The ``le`` bounds of the latency histograms, seconds.
BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    900.0,
    3600.0,
)
_COUNTERS = (
    "enqueued",
    "started",
    "succeeded",
    "failed",
    "retried",
    "dead",
    "cancelled",
    "requeued",
)
#: The exposition's content type.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _le(h: Histogram) -> list[tuple[str, float]]:
    """Cumulative counts per ``le``.

    A bucket counts under ``le`` when its lower bound does: its values are within the
    histogram's relative error (under 1 %) of ``le`` or below, and a value of exactly
    ``le`` (a round timeout, a fake clock) is counted under it, as Prometheus means.
    """
    out = []
    buckets = h.buckets()
    for le in BUCKETS:
        out.append((repr(le), float(sum(c for lo, _, c in buckets if lo <= le))))
    out.append(("+Inf", float(h.count)))
    return out


def families(snap: SystemSnapshot, totals: Merged | None = None) -> Iterator[Any]:
    """The metric families of a snapshot and of the cumulative latency map."""
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    for c in _COUNTERS:
        fam = CounterMetricFamily(f"dtq_tasks_{c}", f"Tasks {c}, per queue.", labels=["queue"])
        for q in snap.queues:
            fam.add_metric([q.name], float(q.counters.get(c, 0)))
        yield fam
    for c in ("throttled", "deduped"):
        fam = CounterMetricFamily(f"dtq_tasks_{c}", f"Tasks {c}.")
        fam.add_metric([], float(snap.counters.get(c, 0)))
        yield fam

    def gauge(
        name: str, doc: str, labels: list[str], rows: Iterable[tuple[list[str], float]]
    ) -> Any:
        fam = GaugeMetricFamily(name, doc, labels=labels)
        for values, v in rows:
            fam.add_metric(values, float(v))
        return fam

    qs = snap.queues
    yield gauge(
        "dtq_queue_ready", "Tasks ready to run.", ["queue"], [([q.name], q.ready) for q in qs]
    )
    yield gauge(
        "dtq_queue_delayed",
        "Tasks waiting for their eta or retry.",
        ["queue"],
        [([q.name], q.delayed) for q in qs],
    )
    yield gauge(
        "dtq_queue_running", "Tasks running.", ["queue"], [([q.name], q.running) for q in qs]
    )
    yield gauge(
        "dtq_queue_paused",
        "1 when the queue is paused.",
        ["queue"],
        [([q.name], float(q.paused)) for q in qs],
    )
    yield gauge(
        "dtq_tasks",
        "Retained task records by state.",
        ["state"],
        [([s], n) for s, n in sorted(snap.counts.items())],
    )
    yield gauge(
        "dtq_dead_letters", "Tasks in the dead-letter queue.", [], [([], snap.dead_letters)]
    )
    states = sorted({w.state for w in snap.workers})
    yield gauge(
        "dtq_workers",
        "Live workers by state.",
        ["state"],
        [([st], sum(1 for w in snap.workers if w.state == st)) for st in states],
    )
    procs = snap.processes
    per_process: tuple[tuple[str, str, str], ...] = (
        ("dtq_process_rss_bytes", "Resident memory of a worker process.", "rss_bytes"),
        ("dtq_process_cpu_percent", "CPU % of a worker process.", "cpu_percent"),
        ("dtq_process_busy", "Busy worker threads of a process.", "busy"),
        ("dtq_process_tasks_per_second", "Tasks finished per second.", "tasks_per_s"),
    )
    for name, doc, attr in per_process:
        yield gauge(
            name, doc, ["host", "pid"], [([p.host, str(p.pid)], getattr(p, attr)) for p in procs]
        )
    yield gauge(
        "dtq_breaker_open",
        "1 when the breaker is not closed.",
        ["key"],
        [([b.key], float(b.state != "closed")) for b in snap.breakers],
    )
    yield gauge(
        "dtq_ratelimit_tokens",
        "Tokens left in the bucket.",
        ["scope", "key"],
        [([r.scope, r.key], r.tokens) for r in snap.limits],
    )
    for kind, what in (("wait", "Queue wait"), ("run", "Run time")):
        hist = HistogramMetricFamily(
            f"dtq_task_{kind}_seconds",
            f"{what} of tasks, every worker process, since the store began.",
            labels=["queue", "task"],
        )
        for (k, queue, task), counts in sorted((totals or {}).items()):
            if k != kind:
                continue
            h = Histogram.from_counts(counts)
            if h.count:
                hist.add_metric([queue, task], _le(h), h.sum)
        yield hist


class _Families:
    """A collector that yields fixed families (one exposition)."""

    def __init__(self, fams: list[Any]) -> None:
        self.fams = fams

    def collect(self) -> Iterator[Any]:
        return iter(self.fams)


def render(snap: SystemSnapshot, totals: Merged | None = None) -> str:
    """The Prometheus text exposition of ``snap`` and the cumulative latency ``totals``."""
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(list(families(snap, totals))))
    return generate_latest(registry).decode()


def serve(text: Callable[[], str], host: str, port: int) -> ThreadingHTTPServer:
    """Serve ``text()`` at ``/metrics`` on ``host:port`` from a daemon thread.

    Each scrape renders anew; an error is answered 503 with its one line.

    Raises:
        OSError: The address cannot be bound.
    """

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                self.send_error(404, "only /metrics is served here")
                return
            try:
                body, code, ctype = text().encode(), 200, CONTENT_TYPE
            except Exception as exc:  # an unreachable store: say so, keep serving
                body, code, ctype = f"{type(exc).__name__}: {exc}\n".encode(), 503, "text/plain"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # scrapes are not news

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="dtq-metrics", daemon=True).start()
    return server
