"""Process records: each worker process says who and how it is, every heartbeat.

A record (host, pid, version, pool, concurrency, queues, busy threads, tasks/s, RSS,
CPU %, start time) is a key in the store with an expiry of a few heartbeats, so a dead
process's record disappears by itself; any process lists them all for the snapshot.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import sys
import time
from functools import cache
from typing import TYPE_CHECKING, Any

from dtq_core.snapshot import ProcessSnapshot

if TYPE_CHECKING:
    from dtq_core.backends.base import Backend
    from dtq_core.broker import Broker

#: Key prefix of process records.
PREFIX = "dtq:proc:"
#: Heartbeats a record outlives its last one by (then the process counts as gone).
TTL_HEARTBEATS = 3.0
#: Records listed at most.
MAX_PROCESSES = 10_000


@cache
def version() -> str:
    """The installed dtq version."""
    try:
        from importlib.metadata import version as dist_version

        return dist_version("dtq")
    except Exception:  # not installed (run from a checkout)
        return "unknown"


def rss_bytes() -> int:
    """Resident memory of this process (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


class ProcessMeter:
    """CPU % and tasks/s of this process between two records."""

    def __init__(self) -> None:
        self._wall = time.monotonic()
        self._cpu = time.process_time()
        self._done = 0

    def sample(self, done: int) -> tuple[float, float]:
        """``(cpu_percent, tasks_per_s)`` since the last sample; ``done``: tasks so far."""
        wall, cpu = time.monotonic(), time.process_time()
        dt = max(wall - self._wall, 1e-6)
        out = (100.0 * (cpu - self._cpu) / dt, max(0, done - self._done) / dt)
        self._wall, self._cpu, self._done = wall, cpu, done
        return out


def record(broker: Broker, meter: ProcessMeter, now: float) -> dict[str, Any]:
    """This process's record."""
    pool = broker.pool
    workers = pool.workers if pool is not None else []
    done = sum(w.processed + w.failed for w in workers)
    cpu, rate = meter.sample(done)
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "version": version(),
        "pool": broker.config.pool,
        "concurrency": broker.config.num_workers,
        "queues": list(broker.config.queues or ()),
        "busy": sum(1 for w in workers if w.state == "busy"),
        "tasks_per_s": round(rate, 3),
        "rss_bytes": rss_bytes(),
        "cpu_percent": round(cpu, 1),
        "started_at": broker.started_at or now,
        "heartbeat": now,
        "role": broker.backend.role,
        "restarts": sum(w.restarts for w in workers),
    }


def publish(broker: Broker, meter: ProcessMeter, now: float) -> None:
    """Write this process's record, alive for a few heartbeats."""
    rec = record(broker, meter, now)
    ttl = max(TTL_HEARTBEATS * broker.config.heartbeat_s, 5.0)
    broker.backend.set_key(
        f"{PREFIX}{rec['host']}:{rec['pid']}", json.dumps(rec, separators=(",", ":")), ttl, now
    )


def read(backend: Backend, now: float) -> tuple[ProcessSnapshot, ...]:
    """Every live process record, sorted by host and pid; unreadable ones are skipped."""
    out = []
    for key in backend.scan_keys(PREFIX, now, MAX_PROCESSES):
        raw = backend.get_key(key, now)
        if raw is None:
            continue
        try:
            r = json.loads(raw)
            out.append(
                ProcessSnapshot(
                    id=f"{r['host']}:{r['pid']}",
                    host=str(r["host"]),
                    pid=int(r["pid"]),
                    version=str(r.get("version", "")),
                    pool=str(r.get("pool", "")),
                    concurrency=int(r.get("concurrency", 0)),
                    queues=tuple(str(q) for q in r.get("queues") or ()),
                    busy=int(r.get("busy", 0)),
                    tasks_per_s=float(r.get("tasks_per_s", 0.0)),
                    rss_bytes=int(r.get("rss_bytes", 0)),
                    cpu_percent=float(r.get("cpu_percent", 0.0)),
                    started_at=float(r.get("started_at", 0.0)),
                    heartbeat_age=max(0.0, now - float(r.get("heartbeat", now))),
                    role=str(r.get("role", "")),
                    restarts=int(r.get("restarts", 0)),
                )
            )
        except (ValueError, TypeError, KeyError):
            continue
    out.sort(key=lambda p: (p.host, p.pid))
    return tuple(out)
