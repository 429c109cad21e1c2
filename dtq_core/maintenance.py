"""The broker's maintenance thread: delayed tasks, leases, heartbeats, expiry, hook ticks."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from dtq_core.errors import StoreFailed
from dtq_core.hooks import Hook

if TYPE_CHECKING:
    from dtq_core.broker import Broker

log = logging.getLogger("dtq.maintenance")

#: Longest sleep between two rounds, seconds.
MAX_SLEEP = 1.0
#: The orphan sweep (a scan of every record, see ``Backend.sweep_orphans``) runs this
#: long after the start, then every :data:`SWEEP_EVERY_S`.
FIRST_SWEEP_S = 60.0
SWEEP_EVERY_S = 3600.0


class Maintenance:
    """Runs :meth:`tick` whenever something is due, on one daemon thread."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._next_wake = float("inf")
        self._next_reclaim = 0.0
        self._next_beat = 0.0
        self._next_expire = 0.0
        self._next_sweep: float | None = None
        self._tick_hooks = [h for h in broker.hooks if type(h).tick is not Hook.tick]

    def start(self) -> None:
        """Start the thread."""
        self._thread = threading.Thread(target=self._run, name="dtq-maintenance", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5.0)

    def wake(self, when: float) -> None:
        """Make sure a round runs by ``when`` (a new delayed task or retry)."""
        if when < self._next_wake:
            self._next_wake = when
            self._wake.set()

    def _run(self) -> None:
        clock = self.broker.clock
        while not self._stop.is_set():
            # Cleared before the round: a wake() arriving during it is not lost.
            self._wake.clear()
            self._next_wake = float("inf")
            try:
                nxt = self.tick(clock.now())
            except StoreFailed as exc:
                self.broker.fail_stop(exc)  # nothing more to maintain: the broker stops
                return
            except Exception:
                log.exception("maintenance round failed; retrying in 1s")
                nxt = clock.now() + 1.0
            self._next_wake = min(self._next_wake, nxt)
            if self._wake.is_set():
                continue
            delay = min(MAX_SLEEP, max(0.0, nxt - clock.now()))
            if delay > 0:
                self._wake.wait(delay)

    def sweep(self, now: float) -> list[tuple[str, str]]:
        """Run the orphan sweep now; log what it fixed."""
        fixed = self.broker.backend.sweep_orphans(now)
        for task_id, what in fixed[:20]:
            log.warning("orphan sweep: task %s %s", task_id, what)
        if len(fixed) > 20:
            log.warning("orphan sweep: %d more records fixed", len(fixed) - 20)
        return fixed

    def tick(self, now: float) -> float:
        """One round of every due duty; return when the next is due."""
        b = self.broker
        cfg = b.config
        backend = b.backend
        while True:
            promoted = backend.promote_due(now, 1000)
            b.emit(promoted)
            if len(promoted) < 1000:
                break
        if now >= self._next_reclaim:
            b.emit(backend.reclaim_expired(now, cfg.max_deliveries))
            self._next_reclaim = now + min(1.0, cfg.lease_s / 4)
        if now >= self._next_beat:
            b.heartbeat(now)
            self._next_beat = now + cfg.heartbeat_s
        if now >= self._next_expire:
            backend.expire(now)
            self._next_expire = now + 1.0
        if self._next_sweep is None:
            self._next_sweep = now + FIRST_SWEEP_S
        elif now >= self._next_sweep:
            self._next_sweep = now + SWEEP_EVERY_S
            self.sweep(now)
        nxt = min(self._next_reclaim, self._next_beat, self._next_expire)
        for hook in self._tick_hooks:
            when = hook.tick(b, now)
            if when is not None:
                nxt = min(nxt, when)
        due = backend.next_due()
        if due is not None:
            nxt = min(nxt, due)
        return nxt
