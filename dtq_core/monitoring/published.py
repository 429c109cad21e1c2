"""System-wide latency: each process publishes what it measured, any process reads the sum.

The shape of Sidekiq's metrics: a process keeps small mergeable histograms in memory
and, at the pace of its heartbeat (not of its tasks), adds them into the store as count
maps (:meth:`Backend.add_counts`), one per time slot and tier, each with an expiry.
Readers add the maps of a window's slots up: histograms merge by adding buckets.

Tiers (slot width, kept): 10 s slots for the 1 and 10 minute windows (kept 15 min), one
per minute for the hour and as a day of per-minute history (kept 25 h), one per hour
for the 24 h window (kept 25 h), and a cumulative total (kept for ever), which the
Prometheus histograms are made from, so they are monotonic whichever process renders
them. Each map is one key: on Redis Cluster each lands on its own slot, and a reader
fetches a window's keys in one pipeline.

A field names ``[kind, queue, task, entry]`` as JSON (names may hold any character);
entries are the histogram's buckets, its count, sum, min and max
(:meth:`Histogram.to_counts`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from dtq_core.monitoring.histogram import Histogram

if TYPE_CHECKING:
    from dtq_core.backends.base import Backend

#: Key prefix of every published latency map.
PREFIX = "dtq:lat:"
#: The cumulative map (no expiry).
TOTAL_KEY = f"{PREFIX}total"
#: (tier, slot width s, seconds kept).
TIERS = (("s", 10, 900.0), ("m", 60, 90_000.0), ("h", 3600, 90_000.0))
#: Windows (s) the snapshot offers, and the tier each is read from.
WINDOWS = {60: "s", 600: "s", 3600: "m", 86_400: "h"}
_WIDTH = {tier: width for tier, width, _ in TIERS}
#: Entries merged by max instead of by addition.
_MAXIMA = frozenset({"lo", "hi"})

#: Histograms of one process since its last publish, by ``(queue, task)``: (wait, run).
Pending = Mapping[tuple[str, str], tuple[Histogram, Histogram]]
#: A merged window: ``(kind, queue, task)`` -> count map.
Merged = dict[tuple[str, str, str], dict[str, float]]


def count_fields(pending: Pending) -> tuple[dict[str, float], dict[str, float]]:
    """``(increments, maxima)`` of the count maps that publish ``pending``."""
    incr: dict[str, float] = {}
    maxima: dict[str, float] = {}
    for (queue, task), (wait, run) in pending.items():
        for kind, h in (("wait", wait), ("run", run)):
            for entry, v in h.to_counts().items():
                field = json.dumps([kind, queue, task, entry], separators=(",", ":"))
                (maxima if entry in _MAXIMA else incr)[field] = v
    return incr, maxima


def publish(backend: Backend, pending: Pending, now: float) -> None:
    """Add ``pending`` to every tier's current slot and to the total."""
    incr, maxima = count_fields(pending)
    if not incr:
        return
    for tier, width, keep in TIERS:
        backend.add_counts(f"{PREFIX}{tier}:{math.floor(now / width)}", incr, maxima, keep, now)
    backend.add_counts(TOTAL_KEY, incr, maxima, None, now)


def window_keys(now: float, window_s: int) -> list[str]:
    """The slot keys a window is read from (its slots and the current partial one)."""
    tier = WINDOWS[window_s]
    width = _WIDTH[tier]
    last = math.floor(now / width)
    span = math.ceil(window_s / width)
    return [f"{PREFIX}{tier}:{n}" for n in range(last - span, last + 1)]


def merge(maps: Iterable[Mapping[str, float]]) -> Merged:
    """Add count maps up by ``(kind, queue, task)``; malformed fields are skipped."""
    out: Merged = {}
    for m in maps:
        for field, v in m.items():
            try:
                kind, queue, task, entry = json.loads(field)
            except (ValueError, TypeError):
                continue
            if not (isinstance(kind, str) and isinstance(queue, str) and isinstance(task, str)):
                continue
            into = out.setdefault((kind, queue, task), {})
            entry = str(entry)
            if entry in _MAXIMA:
                into[entry] = max(into.get(entry, -math.inf), v)
            else:
                into[entry] = into.get(entry, 0.0) + v
    return out


def read_window(backend: Backend, now: float, window_s: int) -> Merged:
    """Every process's published latency of the last ``window_s`` seconds."""
    return merge(backend.read_counts(window_keys(now, window_s), now))


def read_total(backend: Backend, now: float) -> Merged:
    """Every process's published latency since the store began."""
    return merge(backend.read_counts([TOTAL_KEY], now))


def by_scope(merged: Merged) -> dict[tuple[str, str, str], Histogram]:
    """Histograms by ``(scope, key, kind)``, merged from the pairs.

    Scopes: per queue, per task, and the whole system (scope ``system``, key ``all``).
    """
    out: dict[tuple[str, str, str], Histogram] = {}
    for (kind, queue, task), counts in merged.items():
        h = Histogram.from_counts(counts)
        if not h.count:
            continue
        for ident in (("queue", queue, kind), ("task", task, kind), ("system", "all", kind)):
            have = out.get(ident)
            if have is None:
                out[ident] = h.copy()
            else:
                have.merge(h)
    return out
