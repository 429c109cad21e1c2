"""Scheduled and Retry: the tasks waiting for a time, soonest first (Sidekiq's two tabs).

Reached from the Tasks screen (``t`` scheduled, ``R`` retries). Each row can be run now
or cancelled, after a confirmation naming it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding

from dtq_core.snapshot import SystemSnapshot
from dtq_core.task import TaskRecord, TaskState
from dtq_tui.dialogs.confirm import ConfirmDialog
from dtq_tui.fmt import ago, short_id
from dtq_tui.palette import palette_for
from dtq_tui.plain import plain
from dtq_tui.screens.base import DTQScreen, Throttle
from dtq_tui.screens.tasks import confirm_cancel
from dtq_tui.widgets.live_table import FLEX, TablePane

#: The most waiting tasks listed (the soonest).
LIMIT = 500

#: kind -> (title, state, empty text)
KINDS: dict[str, tuple[str, TaskState, str]] = {
    "scheduled": (
        "Scheduled",
        TaskState.PENDING,
        "no delayed tasks: nothing waits for a time",
    ),
    "retry": ("Retry", TaskState.RETRY, "no task waits for a retry"),
}


class WaitingScreen(DTQScreen):
    """Tasks waiting for their time: delayed (``scheduled``) or between retries (``retry``).

    | Key | Action |
    | :- | :- |
    | `n` | Run the task now (after confirmation). |
    | `c` | Cancel the task (after confirmation). |
    | `enter` | The task's detail. |
    | `escape` | Back to the tasks. |
    """

    BINDINGS = [
        Binding("n", "run_now", "Run now", id="waiting.run_now"),
        Binding("c", "cancel_task", "Cancel", id="waiting.cancel"),
    ]

    MODE = "tasks"
    TITLE = "Waiting"
    FILTERABLE = False
    MUTATING: ClassVar[frozenset[str]] = frozenset({"run_now", "cancel_task"})

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.records: list[TaskRecord] = []
        self.loaded = False
        self._throttle = Throttle(2.0)

    @property
    def heading(self) -> str:
        """``Scheduled`` or ``Retry``."""
        return KINDS[self.kind][0]

    def compose_body(self) -> ComposeResult:
        """The table of waiting tasks."""
        yield TablePane(
            [
                ("ID", "id", 10, 8),
                ("Task", "name", 14, 7),
                ("Queue", "queue", 9, 4),
                ("Due", "due", 9, 8),
                ("Try", "attempt", 3, 3),
                ("Last error" if self.kind == "retry" else "Args", "info", FLEX),
            ],
            empty_text="loading…",
            id="waiting",
        )

    def on_mount(self) -> None:
        """Title, then load."""
        self.query_one("#waiting").border_title = self.heading.lower()
        self.load(force=True)

    @property
    def table(self) -> TablePane:
        """The table."""
        return self.query_one("#waiting", TablePane)

    def render_snapshot(self, snap: SystemSnapshot) -> None:
        """Reload now and then (due times move)."""
        self.load()
        if self.loaded:
            self._show()

    def load(self, force: bool = False) -> None:
        """Fetch the waiting tasks."""
        if not self._throttle.ready(force):
            return
        # From the store's due-time index, soonest first: a listing of the newest
        # records would miss them behind thousands of ready tasks.
        ok = self.feed.call(
            "waiting",
            KINDS[self.kind][1],
            LIMIT,
            label=f"List {self.heading.lower()} tasks",
            then=self._loaded,
            failed=lambda _: self._throttle.done(),
        )
        if not ok:
            self._throttle.done()

    def _loaded(self, records: Any) -> None:
        self._throttle.done()
        self.loaded = True
        self.records = list(records or [])
        self._show()

    def _show(self) -> None:
        pal = palette_for(self.app.theme_variables)
        now = self.snapshot.taken_at if self.snapshot else 0.0
        rows = []
        for r in self.records:
            if self.kind == "retry":
                info = plain(
                    f"{r.error.type.rsplit('.', 1)[-1]}: {r.error.message}" if r.error else "-",
                    style=pal.role("bad"),
                )
            else:
                info = plain(_args(r))
            due = ago(r.eta, now) if now and r.eta else "-"
            late = bool(now and r.eta and r.eta <= now)
            rows.append(
                (
                    r.id,
                    [
                        plain(short_id(r.id, 10)),
                        plain(r.name),
                        plain(r.queue),
                        Text(due, style=pal.role("warn") if late else ""),
                        Text(str(r.attempt), justify="right"),
                        info,
                    ],
                )
            )
        self.table.sync(rows, KINDS[self.kind][2])
        self.refresh_status()

    def status_text(self) -> str:
        """How many wait."""
        n = len(self.records)
        more = f" (the soonest {LIMIT})" if n >= LIMIT else ""
        return f"{self.heading}: {n} waiting{more}"

    def selected(self) -> TaskRecord | None:
        """The record under the cursor."""
        key = self.table.table.current_key
        return next((r for r in self.records if r.id == key), None)

    def on_data_table_row_selected(self) -> None:
        """``enter``: the detail."""
        rec = self.selected()
        if rec is not None:
            self.dtq.open_task(rec.id)

    def action_run_now(self) -> None:
        """Run the selected task now, after confirmation."""
        rec = self.selected()
        if rec is None:
            self.notify("select a task first", severity="warning")
            return

        def done(new_id: Any) -> None:
            self.notify(f"{rec.id} runs now as {new_id}", title="Run now", markup=False)
            self.load(force=True)

        def answered(yes: bool | str | None) -> None:
            if yes is True:
                self.feed.run_now(rec.id, done)

        due = ago(rec.eta, self.snapshot.taken_at) if self.snapshot and rec.eta else "later"
        self.app.push_screen(
            ConfirmDialog(
                f"Run task {rec.id} now?",
                f"would run task {rec.id} ({rec.name}) in queue {rec.queue} now instead of "
                f"{due}: it is cancelled and a copy with the same arguments is enqueued, "
                "ready at once.",
                yes="Run now",
            ),
            answered,
        )

    def action_cancel_task(self) -> None:
        """Cancel the selected task, after confirmation."""
        rec = self.selected()
        if rec is None:
            self.notify("select a task first", severity="warning")
            return
        confirm_cancel(self, rec, lambda: self.load(force=True))


def _args(rec: TaskRecord) -> str:
    from dtq_tui.fmt import compact_json
    from dtq_tui.redact import redact
    from dtq_tui.widgets.task_view import decoded_args

    args, kwargs, problem = decoded_args(rec)
    if problem:
        return problem
    return compact_json({"args": redact(args), "kwargs": redact(kwargs)}, 200)
