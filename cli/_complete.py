"""Shell completion from the live system: task names, queue names, task ids.

typer calls these while the shell waits for a TAB, so each one asks the backend within a
hard deadline (:data:`DEADLINE`, or ``--connect-timeout`` when shorter) in a daemon
thread and offers nothing when the backend is down, slow or unknown: completion must
never hang a shell nor print an error into it. Nothing here imports the engine until a
completion actually runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cli import _common

if TYPE_CHECKING:
    from dtq_core.control import ConsoleAPI

#: Seconds a completion waits for the backend at most.
DEADLINE = 1.5
#: Candidates offered at most (shells page long lists anyway).
MAX_ITEMS = 50


def _backend(ctx: Any) -> tuple[str | None, float]:
    """The backend URL and timeout typed so far (after the command, or before it)."""
    root = ctx.find_root() if ctx is not None else None
    params = root.params if root is not None else {}
    url = _common.state.backend or params.get("backend")
    timeout = min(
        DEADLINE, float(params.get("connect_timeout") or DEADLINE), _common.state.connect_timeout
    )
    return url, timeout


def _ask(ctx: Any, question: Callable[[ConsoleAPI], list[str]]) -> list[str]:
    """``question(console)`` within the deadline, or ``[]`` on any failure."""
    url, timeout = _backend(ctx)
    answer: list[str] = []

    def run() -> None:
        try:
            from dtq_core.control import connect

            console = connect(url, connect_timeout=timeout)
            try:
                answer.extend(question(console))
            finally:
                _common.close_console(console)
        except Exception:  # a completion says nothing rather than break the shell
            pass

    worker = threading.Thread(target=run, name="dtq-complete", daemon=True)
    worker.start()
    worker.join(timeout)
    return list(answer) if not worker.is_alive() else []


def _starting(items: list[str], incomplete: str) -> list[str]:
    return sorted({i for i in items if i.startswith(incomplete)})[:MAX_ITEMS]


def task_names(ctx: Any, incomplete: str) -> list[str]:
    """Registered task names (by any worker) starting with ``incomplete``."""
    return _starting(_ask(ctx, lambda c: c.task_names()), incomplete)


def queue_names(ctx: Any, incomplete: str) -> list[str]:
    """Known queue names starting with ``incomplete``."""
    return _starting(_ask(ctx, lambda c: [q.name for q in c.snapshot().queues]), incomplete)


def queue_lists(ctx: Any, incomplete: str) -> list[str]:
    """``Q1,Q2`` lists: complete the last name, keep the ones before it."""
    head, _, last = incomplete.rpartition(",")
    prefix = head + "," if head else ""
    return [prefix + q for q in queue_names(ctx, last)]


def task_ids(ctx: Any, incomplete: str) -> list[str]:
    """Task ids starting with ``incomplete``."""
    return _ask(ctx, lambda c: c.resolve_id(incomplete, MAX_ITEMS))


def run_ids(ctx: Any, incomplete: str) -> list[str]:
    """Ids of the recent workflow runs (those the snapshot lists) starting with ``incomplete``."""
    return _starting(_ask(ctx, lambda c: [w.id for w in c.snapshot().workflows]), incomplete)


def dead_targets(ctx: Any, incomplete: str) -> list[str]:
    """Dead task ids, or the value of a ``task:`` / ``queue:`` filter term."""
    key, colon, value = incomplete.partition(":")
    if colon and key == "task":
        return [f"task:{n}" for n in task_names(ctx, value)]
    if colon and key == "queue":
        return [f"queue:{q}" for q in queue_names(ctx, value)]
    if colon:
        return []
    flt = f"id:{incomplete}" if incomplete else None
    return _ask(ctx, lambda c: [r.id for r in c.dead_letters(flt, limit=MAX_ITEMS)])
