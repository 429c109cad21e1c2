"""The only caller of the Console API: the periodic refresh, queries and actions.

The refresh polls :meth:`ConsoleAPI.snapshot` (and new events) in a thread worker and
arms the next one-shot timer only when that poll has finished, so a slow backend slows
the refresh down instead of piling polls up. Polling pauses while a modal screen is open.
A failing poll posts :class:`ConnectionLost` once and retries with a growing delay; the
first good poll after that posts :class:`ConnectionRestored`.

Queries and actions also run in thread workers and post a :class:`Reply` back, which the
app turns into a callback on the UI thread. Actions that change state are refused in
read-only mode, and a method the connected console lacks is reported, never raised.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from textual.screen import ModalScreen

from dtq_core.events import Event
from dtq_tui.messages import (
    ConnectionLost,
    ConnectionRestored,
    EventsArrived,
    PollFinished,
    Reply,
    SnapshotUpdated,
)

if TYPE_CHECKING:
    from textual.app import App
    from textual.timer import Timer

    from dtq_core.control import ConsoleAPI

#: Events kept for the log (and carried by each :class:`EventsArrived`).
TAIL = 300

#: Longest wait between reconnection attempts.
MAX_BACKOFF = 5.0


class ReadOnlyRefused(PermissionError):
    """An action that changes state was asked for in read-only mode."""


class Feed:
    """Polls the console for the app and runs queries and actions off the UI thread.

    Args:
        app: The app that receives the messages.
        console: The Console API.
        interval: Seconds between the end of one poll and the start of the next.
        read_only: Refuse every action that changes state.
    """

    def __init__(
        self, app: App[Any], console: ConsoleAPI, interval: float = 0.33, read_only: bool = False
    ) -> None:
        self.app = app
        self.console = console
        self.interval = max(0.02, interval)
        self.read_only = read_only
        self.polls = 0
        self.paused_polls = 0
        self._timer: Timer | None = None
        self._running = False
        self._stopped = False
        self._since: int | None = None
        self._tail: deque[Event] = deque(maxlen=TAIL)
        self._lost = False
        self._failures = 0
        self.last_poll_s = 0.0

    # -- the refresh loop ------------------------------------------------------------------

    def start(self) -> None:
        """Poll now, then keep polling."""
        self._stopped = False
        self._arm(0.0)

    def stop(self) -> None:
        """Stop polling (a poll in flight finishes and is dropped)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    def refresh_now(self) -> None:
        """Poll as soon as the current poll (if any) has finished."""
        if not self._running:
            self._arm(0.0)

    def poll_finished(self, delay: float) -> None:
        """Called on the UI thread when a poll ended: arm the next one."""
        self._running = False
        self._arm(delay)

    def _arm(self, delay: float) -> None:
        if self._stopped:
            return
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if delay <= 0:
            self.app.call_later(self._tick)
        else:
            self._timer = self.app.set_timer(delay, self._tick, name="dtq-feed")

    def _tick(self) -> None:
        self._timer = None
        if self._stopped or self._running:
            return
        stack = self.app.screen_stack
        if not stack:  # starting or closing
            self._arm(self.interval)
            return
        if isinstance(stack[-1], ModalScreen):
            self.paused_polls += 1
            self._arm(self.interval)
            return
        self._running = True
        self.app.run_worker(
            self._poll, name="dtq-feed-poll", group="dtq-feed", thread=True, exit_on_error=False
        )

    def _poll(self) -> None:
        """One poll, in a worker thread."""
        post = self.app.post_message
        delay = self.interval
        t0 = time.perf_counter()
        try:
            snap = self.console.snapshot()
            events: list[Event] = []
            skipped = 0
            if self._since is None:
                self._since = max(0, snap.last_event - TAIL)
            if snap.last_event > self._since or snap.last_event < self._since:
                if snap.last_event < self._since:  # the engine restarted
                    self._since = max(0, snap.last_event - TAIL)
                events = self.console.events(self._since, TAIL)
                if events:
                    skipped = max(0, events[0].seq - self._since - 1)
                    self._since = events[-1].seq
        except Exception as exc:
            self._failures += 1
            delay = min(MAX_BACKOFF, self.interval * 2**self._failures)
            if not self._lost:
                self._lost = True
                post(ConnectionLost(_describe(exc), delay))
        else:
            self._failures = 0
            if self._lost:
                self._lost = False
                post(ConnectionRestored())
            self.polls += 1
            post(SnapshotUpdated(snap))
            if events:
                self._tail.extend(events)
                post(EventsArrived(tuple(self._tail), skipped))
        finally:
            self.last_poll_s = time.perf_counter() - t0
            post(PollFinished(delay))

    # -- queries and actions ---------------------------------------------------------------

    def call(
        self,
        method: str,
        *args: Any,
        label: str,
        then: Callable[[Any], None] | None = None,
        failed: Callable[[BaseException], None] | None = None,
        mutates: bool = False,
        **kwargs: Any,
    ) -> bool:
        """Call ``console.<method>(*args, **kwargs)`` in a thread worker.

        ``then(result)`` runs on the UI thread when it succeeds; a failure is notified
        (and passed to ``failed``). Returns whether the call was started: it is not in
        read-only mode for an action that ``mutates``, nor when the console lacks the
        method.
        """
        if mutates and self.read_only:
            self.app.notify(
                f"{label}: refused, the console is read-only (--read-only)",
                title="Read-only",
                severity="warning",
            )
            if failed is not None:
                failed(ReadOnlyRefused(label))
            return False
        fn = getattr(self.console, method, None)
        if fn is None or not callable(fn):
            self.app.notify(
                f"{label}: this engine's console has no {method}() yet",
                title="Not supported",
                severity="error",
            )
            if failed is not None:
                failed(NotImplementedError(method))
            return False
        self.app.run_worker(
            partial(self._run, fn, args, kwargs, label, then, failed),
            name=f"dtq-{method}",
            group=f"dtq-{method}",
            thread=True,
            exit_on_error=False,
        )
        return True

    def _run(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        label: str,
        then: Callable[[Any], None] | None,
        failed: Callable[[BaseException], None] | None,
    ) -> None:
        try:
            result, error = fn(*args, **kwargs), None
        except Exception as exc:
            result, error = None, exc
        mutated = getattr(fn, "__name__", "") not in _QUERIES
        self.app.post_message(Reply(label, result, error, then, failed, mutated))

    # Typed wrappers: one per Console API method the screens use.

    def tasks(self, flt: str | None, offset: int, limit: int, then: Callable[[Any], None]) -> bool:
        """A page of task records."""
        return self.call("tasks", flt, offset, limit, label="List tasks", then=then)

    def task(self, task_id: str, then: Callable[[Any], None]) -> bool:
        """One task record."""
        return self.call("task", task_id, label="Load task", then=then)

    def dead_groups(self, flt: str | None, then: Callable[[Any], None]) -> bool:
        """Dead tasks grouped by cause."""
        return self.call("dead_groups", flt, label="Load dead letters", then=then)

    def tasks_by_id(self, ids: Sequence[str], then: Callable[[Any], None]) -> bool:
        """Several task records (missing ones are left out), in one worker."""
        fn = getattr(self.console, "task", None)
        if fn is None:
            return False

        def load(_: object = None) -> list[Any]:
            return [r for r in (fn(i) for i in ids) if r is not None]

        load.__name__ = "task"
        self.app.run_worker(
            partial(self._run, load, (), {}, "Load tasks", then, None),
            name="dtq-tasks-by-id",
            group="dtq-tasks-by-id",
            thread=True,
            exit_on_error=False,
        )
        return True

    def replay(
        self,
        ids: Sequence[str],
        then: Callable[[Any], None],
        *,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        note: str = "",
        dry_run: bool = False,
        again: bool = False,
    ) -> bool:
        """Replay dead tasks (``dry_run`` only plans, and is allowed read-only).

        Dead tasks replayed before are left out by the engine unless ``again``.
        """
        return self.call(
            "replay",
            list(ids),
            label="Replay (dry run)" if dry_run else "Replay",
            then=then,
            mutates=not dry_run,
            args=args,
            kwargs=kwargs,
            note=note,
            dry_run=dry_run,
            again=again,
        )

    def purge(self, ids: Sequence[str], then: Callable[[Any], None]) -> bool:
        """Delete dead tasks."""
        return self.call("purge", list(ids), label="Purge", then=then, mutates=True)

    def cancel(self, task_id: str, then: Callable[[Any], None]) -> bool:
        """Cancel a task that has not started."""
        return self.call("cancel", task_id, label="Cancel", then=then, mutates=True)

    def run_now(self, task_id: str, then: Callable[[Any], None]) -> bool:
        """Run a delayed or retrying task now."""
        return self.call("run_now", task_id, label="Run now", then=then, mutates=True)

    def set_queue_paused(self, queue: str, paused: bool, then: Callable[[Any], None]) -> bool:
        """Pause or resume a queue."""
        method = "pause_queue" if paused else "resume_queue"
        label = f"{'Pause' if paused else 'Resume'} queue {queue}"
        return self.call(method, queue, label=label, then=then, mutates=True)

    def pause_schedule(self, name: str, paused: bool, then: Callable[[Any], None]) -> bool:
        """Pause or resume a schedule."""
        label = f"{'Pause' if paused else 'Resume'} schedule {name}"
        return self.call("pause_schedule", name, paused, label=label, then=then, mutates=True)

    def trigger_schedule(self, name: str, then: Callable[[Any], None]) -> bool:
        """Enqueue a schedule's task now."""
        return self.call("trigger_schedule", name, label=f"Trigger {name}", then=then, mutates=True)

    def set_rate_limit(
        self, scope: str, key: str, rate: float, burst: int | None, then: Callable[[Any], None]
    ) -> bool:
        """Change a rate limit."""
        return self.call(
            "set_rate_limit",
            scope,
            key,
            rate,
            burst,
            label=f"Set rate of {scope} {key}",
            then=then,
            mutates=True,
        )

    def set_breaker(self, key: str, state: str, then: Callable[[Any], None]) -> bool:
        """Force a breaker open or closed."""
        return self.call(
            "set_breaker", key, state, label=f"Breaker {key} {state}", then=then, mutates=True
        )

    def retry_workflow(self, run_id: str, then: Callable[[Any], None]) -> bool:
        """Rerun a failed DAG run from its failed nodes."""
        return self.call(
            "retry_workflow", run_id, label=f"Retry run {run_id}", then=then, mutates=True
        )


_QUERIES = frozenset(
    {"snapshot", "events", "tasks", "task_page", "task", "dead_groups", "dead_letters", "waiting"}
)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text
