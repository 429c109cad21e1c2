"""Circuit breakers per task name or declared key, with state in the backend.

closed -> open after ``breaker_threshold`` failures within ``breaker_window`` seconds (or
a failure ratio, with ``breaker_ratio``); open -> half_open after ``breaker_reset``
seconds; half_open lets ``breaker_probes`` tasks through and closes on a success (opens
again on a failure). While open, tasks are held back (deferred to the next probe time),
never dead-lettered for it. State is one JSON document per breaker, changed by
compare-and-set so that every worker on a shared backend sees the same breaker.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Any

from dtq_core.errors import ConfigError
from dtq_core.hooks import Hook, RunContext
from dtq_core.snapshot import BreakerSnapshot

if TYPE_CHECKING:
    from dtq_core.backends.base import Transition
    from dtq_core.broker import Broker

#: Prefix of the backend keys of breaker state.
PREFIX = "dtq:cb:"
_DEFAULTS: dict[str, Any] = {
    "threshold": 5,
    "window": 60.0,
    "reset": 30.0,
    "probes": 1,
    "ratio": None,
}

log = logging.getLogger("dtq.breaker")


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _doc(raw: str | None) -> dict[str, Any]:
    """A breaker's stored document (missing fields get their defaults).

    One that is malformed (edited by hand, written by something else) reads as a fresh
    closed breaker and the next change replaces it, so garbage never wedges the tasks
    behind the breaker.
    """
    fresh = _fresh()
    if raw is None:
        return fresh
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        doc = {**fresh, **doc}
        ok = (
            doc["state"] in ("closed", "open", "half_open")
            and all(isinstance(doc[k], list) and all(map(_num, doc[k])) for k in ("fails", "oks"))
            and all(doc[k] is None or _num(doc[k]) for k in ("opened_at", "probe_at"))
            and _num(doc["probes"])
            and _num(doc["held"])
            and isinstance(doc["manual"], bool)
        )
        if ok:
            return doc
    log.warning("breaker document %.80r is malformed: read as a fresh breaker", raw)
    return fresh


def _fresh() -> dict[str, Any]:
    # fails/oks: outcome times inside the window; probe_at: when the last probe started.
    return {
        "state": "closed",
        "fails": [],
        "oks": [],
        "opened_at": None,
        "probes": 0,
        "probe_at": None,
        "manual": False,
        "held": 0,
        # Who set the current state: "hand" (an operator) or "auto" (the failures).
        "by": "auto",
    }


class BreakerHook(Hook):
    """Opens a circuit on repeated failures; tasks wait instead of failing."""

    options = frozenset(
        {
            "breaker",
            "breaker_threshold",
            "breaker_window",
            "breaker_reset",
            "breaker_probes",
            "breaker_ratio",
        }
    )

    def __init__(self) -> None:
        self._settings: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def attach(self, broker: Broker) -> None:
        """Learn the breakers declared by registered tasks."""
        for task in broker.registry:
            self._key(task.name, task.options)

    def _key(self, name: str, options: dict[str, Any]) -> str | None:
        spec = options.get("breaker")
        if not spec:
            return None
        key = name if spec is True else str(spec)
        if key not in self._settings:
            s: dict[str, Any] = {
                "threshold": int(options.get("breaker_threshold", _DEFAULTS["threshold"])),
                "window": float(options.get("breaker_window", _DEFAULTS["window"])),
                "reset": float(options.get("breaker_reset", _DEFAULTS["reset"])),
                "probes": int(options.get("breaker_probes", _DEFAULTS["probes"])),
                "ratio": options.get("breaker_ratio"),
            }
            if s["threshold"] < 1 or s["window"] <= 0 or s["reset"] <= 0 or s["probes"] < 1:
                raise ConfigError(f"breaker {key!r}: threshold, window, reset, probes must be > 0")
            with self._lock:
                self._settings[key] = s
        return key

    def _update(self, broker: Broker, key: str, change: Any) -> dict[str, Any]:
        """Apply ``change(doc, now) -> result`` atomically (CAS loop); return the doc."""
        backend = broker.backend
        skey = PREFIX + key
        while True:
            now = broker.clock.now()
            raw = backend.get_key(skey, now)
            doc = _doc(raw)
            change(doc, now)
            new = json.dumps(doc)
            if new == raw or backend.compare_and_set(skey, raw, new, None, now):
                return doc

    def before_run(self, ctx: RunContext) -> float | None:
        """Hold the task back while the breaker is open or its probes are taken."""
        key = self._key(ctx.task.name, ctx.task.options)
        if key is None:
            return None
        s = self._settings[key]
        verdict: list[float | None] = [None]

        def decide(doc: dict[str, Any], now: float) -> None:
            verdict[0] = None
            if doc["state"] == "open":
                due = (doc["opened_at"] or now) + s["reset"]
                if doc["manual"] or now < due:
                    doc["held"] += 1
                    verdict[0] = max(due, now + 0.05) if not doc["manual"] else now + s["reset"]
                    return
                doc["state"], doc["probes"], doc["by"] = "half_open", 0, "auto"
            if doc["state"] == "half_open":
                stale = doc.get("probe_at") is not None and now - doc["probe_at"] > s["reset"]
                if doc["probes"] >= s["probes"] and not stale:
                    doc["held"] += 1
                    verdict[0] = now + min(1.0, s["reset"] / 4)
                    return
                if stale:  # a probe that never reported (its worker died): free its slot
                    doc["probes"] = 0
                doc["probes"] += 1
                doc["probe_at"] = now

        self._update(ctx.broker, key, decide)
        return verdict[0]

    def ack_later(self, ctx: RunContext) -> bool:
        """Tasks behind a breaker are acknowledged at once (their success is counted)."""
        return self._key(ctx.task.name, ctx.task.options) is None

    def after_run(
        self, ctx: RunContext, exc: BaseException | None, transitions: list[Transition]
    ) -> None:
        """Count the outcome; open or close the breaker."""
        key = self._key(ctx.task.name, ctx.task.options)
        if key is None:
            return
        s = self._settings[key]

        def record(doc: dict[str, Any], now: float) -> None:
            if doc["manual"]:
                return
            keep = max(s["threshold"], 1) * 4
            horizon = now - s["window"]
            oks = [t for t in doc.get("oks", []) if t > horizon]
            if exc is None:
                doc["oks"] = [*oks, now][-keep * 4 :]
                if doc["state"] == "half_open":
                    doc.update(
                        state="closed", fails=[], oks=[], opened_at=None, probes=0, by="auto"
                    )
                return
            fails = [t for t in doc["fails"] if t > horizon] + [now]
            doc["fails"], doc["oks"] = fails[-keep:], oks
            if doc["state"] == "half_open":
                doc.update(state="open", opened_at=now, probes=0, by="auto")
                return
            trip = len(fails) >= s["threshold"]
            if s["ratio"] is not None:
                total = len(fails) + len(oks)
                trip = total >= s["threshold"] and len(fails) / total >= float(s["ratio"])
            if trip and doc["state"] == "closed":
                doc.update(state="open", opened_at=now, probes=0, by="auto")

        self._update(ctx.broker, key, record)

    def force(self, broker: Broker, key: str, state: str) -> None:
        """Open or close a breaker by hand (``closed`` also clears a manual open)."""
        if state not in ("open", "closed"):
            raise ConfigError(f"a breaker can be forced open or closed, not {state!r}")
        if key not in self._settings:
            with self._lock:
                self._settings[key] = dict(_DEFAULTS)

        def set_state(doc: dict[str, Any], now: float) -> None:
            if state == "open":
                doc.update(state="open", opened_at=now, probes=0, manual=True, by="hand")
            else:
                # Closed by hand, the breaker counts failures again (not held closed), but
                # its state was set by an operator until the failures change it.
                doc.update(
                    state="closed",
                    fails=[],
                    ok=0,
                    opened_at=None,
                    probes=0,
                    manual=False,
                    by="hand",
                )

        self._update(broker, key, set_state)

    def snapshot(self, broker: Broker) -> dict[str, Any]:
        """``breakers``: state, failures in the window and next probe time of each."""
        now = broker.clock.now()
        out = []
        keys = set(self._settings)
        keys.update(k[len(PREFIX) :] for k in broker.backend.scan_keys(PREFIX, now, 1000))
        for key in sorted(keys):
            s = self._settings.get(key, _DEFAULTS)
            raw = broker.backend.get_key(PREFIX + key, now)
            doc = _doc(raw)
            fails = [t for t in doc["fails"] if t > now - float(s["window"])]
            oks = [t for t in doc.get("oks", []) if t > now - float(s["window"])]
            opened = doc["opened_at"]
            probe = None
            if doc["state"] == "open" and opened is not None and not doc["manual"]:
                probe = opened + float(s["reset"])
            out.append(
                BreakerSnapshot(
                    key,
                    doc["state"],
                    len(fails),
                    len(oks),
                    int(s["threshold"]),
                    float(s["window"]),
                    float(s["reset"]),
                    opened,
                    probe,
                    int(doc["held"]),
                    bool(doc["manual"]) or doc.get("by") == "hand",
                )
            )
        return {"breakers": tuple(out)}
