"""Token-bucket rate limits per queue and per task name, shared through the backend.

A bucket is GCRA state (one "theoretical arrival time") under one backend key, so on
Redis every worker shares it. A task over the limit is deferred, not failed: it reserves
the next free slot and is released back to its queue until then, so deferred tasks come
back one per slot instead of all at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dtq_core.errors import ConfigError
from dtq_core.hooks import Hook, RunContext
from dtq_core.snapshot import LimiterSnapshot

if TYPE_CHECKING:
    from dtq_core.broker import Broker

_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*(\d+(?:\.\d+)?)?\s*([smhd]))?\s*$")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
#: Prefix of the backend keys of rate-limit state.
PREFIX = "dtq:rl:"

log = logging.getLogger("dtq.ratelimit")


def parse_rate(spec: str | float | int) -> float:
    """``"10/s"``, ``"100/m"``, ``"5/2s"``, ``"1000/h"`` or a number (per second)."""
    if isinstance(spec, int | float) and not isinstance(spec, bool):
        rate = float(spec)
    else:
        m = _RATE.match(str(spec))
        if not m:
            raise ConfigError(f"bad rate {spec!r}: write N/s, N/m, N/h or N/d (e.g. 10/s)")
        n, mult, unit = m.groups()
        per = _PER[unit or "s"] * (float(mult) if mult else 1.0)
        if per <= 0:
            raise ConfigError(f"bad rate {spec!r}: the period must be longer than zero")
        rate = float(n) / per
    if not rate > 0 or math.isinf(rate):
        raise ConfigError(f"bad rate {spec!r}: it must be a positive number per period")
    return rate


@dataclass(slots=True)
class Limit:
    """One configured bucket."""

    scope: str
    key: str
    rate: float
    burst: int

    @property
    def state_key(self) -> str:
        """The backend key of the bucket's GCRA state."""
        return f"{PREFIX}{self.scope}:{self.key}"


class RateLimitHook(Hook):
    """Defers tasks over their queue's or task's rate (options ``rate_limit``, ``rate_burst``)."""

    options = frozenset({"rate_limit", "rate_burst"})

    def __init__(self, queue_limits: dict[str, str | float] | None = None) -> None:
        self._lock = threading.Lock()
        self._limits: dict[tuple[str, str], Limit] = {}
        self._throttled: dict[tuple[str, str], int] = {}
        self._initial = dict(queue_limits or {})
        self._task_seen: set[str] = set()
        self._overrides_checked = 0.0
        # Override keys whose value was malformed, and that value (warned about once).
        self._bad: dict[str, str] = {}

    def attach(self, broker: Broker) -> None:
        """Register the configured queue limits and tasks' limits."""
        for queue, spec in {**broker.config.rate_limits, **self._initial}.items():
            self.set_limit("queue", queue, parse_rate(spec), None)
        for task in broker.registry:
            self._task_limit(task.name, task.options)
        self._load_overrides(broker, 0.0, force=True)

    def _task_limit(self, name: str, options: dict[str, Any]) -> Limit | None:
        if name in self._task_seen:
            return self._limits.get(("task", name))
        self._task_seen.add(name)
        spec = options.get("rate_limit")
        if spec is None:
            return None
        return self.set_limit("task", name, parse_rate(spec), options.get("rate_burst"))

    def set_limit(self, scope: str, key: str, rate: float, burst: int | None) -> Limit:
        """Create or change a limit in this process."""
        if scope not in ("queue", "task"):
            raise ConfigError(f"rate limit scope must be queue or task, not {scope!r}")
        if burst is None:
            burst = max(1, math.ceil(rate))
        if burst < 1:
            raise ConfigError("rate_burst must be >= 1")
        lim = Limit(scope, key, rate, int(burst))
        with self._lock:
            self._limits[(scope, key)] = lim
        return lim

    def change(self, broker: Broker, scope: str, key: str, rate: float, burst: int | None) -> None:
        """Change a limit at run time for every process sharing the backend."""
        lim = self.set_limit(scope, key, rate, burst)
        broker.backend.set_key(
            f"{PREFIX}cfg:{scope}:{key}",
            json.dumps({"rate": lim.rate, "burst": lim.burst}),
            None,
            broker.clock.now(),
        )

    def _load_overrides(self, broker: Broker, now: float, force: bool = False) -> None:
        if not force and now - self._overrides_checked < 1.0:
            return
        self._overrides_checked = now
        backend = broker.backend
        for k in backend.scan_keys(f"{PREFIX}cfg:", now):
            raw = backend.get_key(k, now)
            if raw is None:
                continue
            scope, _, key = k[len(PREFIX) + 4 :].partition(":")
            try:
                cfg = json.loads(raw)
                rate, burst = float(cfg["rate"]), int(cfg["burst"])
                if rate <= 0 or burst < 1:
                    raise ValueError("rate and burst must be positive")
            except (ValueError, TypeError, KeyError) as exc:
                # Written by hand or by something else: the other limits still load.
                if self._bad.get(k) != raw:
                    self._bad[k] = raw
                    log.warning("rate limit %s ignored: %.80r is malformed (%s)", k, raw, exc)
                continue
            cur = self._limits.get((scope, key))
            if cur is None or (cur.rate, cur.burst) != (rate, burst):
                self.set_limit(scope, key, rate, burst)

    def tick(self, broker: Broker, now: float) -> float | None:
        """Pick up limits changed by other processes."""
        self._load_overrides(broker, now)
        return now + 1.0

    def before_run(self, ctx: RunContext) -> float | None:
        """Reserve a token from each applicable bucket; defer when one is empty."""
        d = ctx.delivery
        limits = []
        qlim = self._limits.get(("queue", d.queue))
        if qlim is not None:
            limits.append(qlim)
        tlim = self._task_limit(d.name, ctx.task.options)
        if tlim is not None:
            limits.append(tlim)
        if not limits:
            return None
        backend = ctx.broker.backend
        now = ctx.broker.clock.now()
        # Slots a deferred task reserved earlier, wherever it was deferred.
        held_key = f"{PREFIX}held:{d.task_id}"
        held: set[tuple[str, str]] = set()
        raw = backend.get_key(held_key, now)
        if raw is not None:
            with contextlib.suppress(ValueError, TypeError):  # malformed: nothing held
                held = {(str(a), str(b)) for a, b in json.loads(raw)}
            backend.delete_key(held_key)
        for lim in limits:
            ident = (lim.scope, lim.key)
            if ident in held:
                continue
            wait = backend.reserve(lim.state_key, lim.rate, lim.burst, now)
            held.add(ident)
            if wait > 0:
                backend.set_key(held_key, json.dumps(sorted(held)), wait + 3600.0, now)
                with self._lock:
                    self._throttled[ident] = self._throttled.get(ident, 0) + 1
                ctx.broker.metrics.incr("throttled")
                return now + wait
        return None

    def snapshot(self, broker: Broker) -> dict[str, Any]:
        """``limits``: every bucket with its tokens left and throttled count."""
        now = broker.clock.now()
        out = []
        with self._lock:  # workers and the console change them meanwhile
            limits = sorted(self._limits.items())
            throttled = dict(self._throttled)
        for (scope, key), lim in limits:
            raw = broker.backend.get_key(lim.state_key, now)
            interval = 1.0 / lim.rate
            tat = max(float(raw), now) if raw is not None else now
            tokens = max(0.0, min(float(lim.burst), lim.burst - (tat - now) / interval))
            out.append(
                LimiterSnapshot(
                    scope, key, lim.rate, lim.burst, tokens, throttled.get((scope, key), 0)
                )
            )
        return {"limits": tuple(out)}
