"""Formatting of durations, ages, rates and counts for narrow terminal cells."""

from __future__ import annotations

import json
import time
from typing import Any


def duration(seconds: float | None) -> str:
    """``850µs``, ``12ms``, ``1.25s``, ``3m04s``, ``2h05m``, ``3d04h`` (``-`` when unknown)."""
    if seconds is None:
        return "-"
    s = max(0.0, float(seconds))
    if s < 0.001:
        return f"{s * 1e6:.0f}µs"
    if s < 1:
        return f"{s * 1000:.0f}ms"
    if s < 10:
        return f"{s:.2f}s"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        m, sec = divmod(int(s), 60)
        return f"{m}m{sec:02d}s"
    if s < 86400:
        h, rem = divmod(int(s), 3600)
        return f"{h}h{rem // 60:02d}m"
    d, rem = divmod(int(s), 86400)
    return f"{d}d{rem // 3600:02d}h"


def age(seconds: float | None) -> str:
    """How long ago, for narrow cells: ``now`` under a second, else :func:`duration`."""
    if seconds is None:
        return "-"
    return "now" if seconds < 1 else duration(seconds)


def ago(when: float | None, now: float) -> str:
    """``3s ago`` / ``in 12s`` relative to ``now`` (``-`` when unknown)."""
    if when is None:
        return "-"
    delta = now - when
    if delta >= 0:
        return f"{duration(delta)} ago"
    return f"in {duration(-delta)}"


def clock(ts: float | None) -> str:
    """Local wall-clock time ``HH:MM:SS`` of an epoch time."""
    if ts is None:
        return "-"
    return time.strftime("%H:%M:%S", time.localtime(ts))


def stamp(ts: float | None) -> str:
    """Local date and time ``YYYY-MM-DD HH:MM:SS``."""
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def count(n: float) -> str:
    """``999``, ``12.3k``, ``1.2M``: a count that fits six cells."""
    n = float(n)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            v = n / limit
            return f"{v:.1f}{suffix}" if abs(v) < 100 else f"{v:.0f}{suffix}"
    return f"{n:.0f}"


def rate(per_s: float) -> str:
    """A rate per second: ``0``, ``0.4``, ``12``, ``1.2k``."""
    if per_s <= 0:
        return "0"
    if per_s < 10:
        return f"{per_s:.1f}"
    return count(per_s)


def short_id(task_id: str | None, width: int = 12) -> str:
    """The tail of an id (ids share a time prefix, their ends differ)."""
    if not task_id:
        return "-"
    return task_id if len(task_id) <= width else "…" + task_id[-(width - 1) :]


def clip(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells with an ellipsis."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def compact_json(value: Any, width: int = 60) -> str:
    """One-line JSON of ``value`` clipped to ``width``."""
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return clip(text, width)


def pretty_json(value: Any) -> str:
    """Indented JSON of ``value`` (``repr`` for what JSON cannot hold)."""
    try:
        return json.dumps(value, ensure_ascii=False, indent=2, default=repr)
    except (TypeError, ValueError):
        return repr(value)
