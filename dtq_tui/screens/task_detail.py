"""One task: arguments (redacted), result, attempts with tracebacks, deadline, edits."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from dtq_core.snapshot import SystemSnapshot
from dtq_core.task import TERMINAL, TaskRecord, TaskState
from dtq_tui.palette import palette_for
from dtq_tui.plain import plain
from dtq_tui.screens.base import Throttle
from dtq_tui.screens.dead_actions import DeadActions
from dtq_tui.screens.tasks import confirm_cancel
from dtq_tui.widgets.memo import update_static
from dtq_tui.widgets.task_view import render_task


class TaskDetailScreen(DeadActions):
    """The detail of one task, refreshed while it is not finished.

    | Key | Action |
    | :- | :- |
    | `c` | Cancel (if it has not started). |
    | `r` | Replay (a dead task). |
    | `e` | Edit args and replay (a dead task). |
    | `escape` | Back. |
    """

    BINDINGS = [
        Binding("c", "cancel_task", "Cancel", id="detail.cancel"),
        Binding("r", "replay", "Replay", id="detail.replay"),
        Binding("e", "edit", "Edit", id="detail.edit"),
    ]

    TITLE = "Task"
    FILTERABLE = False
    MUTATING = frozenset({"cancel_task", "replay", "edit"})

    def __init__(self, task_id: str, mode: str) -> None:
        super().__init__()
        self.task_id = task_id
        self.tab = mode
        self.record: TaskRecord | None = None
        self._throttle = Throttle(1.0)

    def compose_body(self) -> ComposeResult:
        """A scrolling detail."""
        with VerticalScroll(id="detail-scroll"):
            yield Static(plain(f"loading {self.task_id}…", style="italic"), id="detail")

    def on_mount(self) -> None:
        """Load at once."""
        self.query_one("#detail-scroll").border_title = plain(f"task {self.task_id}", 80)
        self.load(force=True)

    def load(self, force: bool = False) -> None:
        """Fetch the record."""
        if self._throttle.ready(force):
            ok = self.feed.call(
                "task",
                self.task_id,
                label="Load task",
                then=self._loaded,
                failed=lambda _: self._throttle.done(),
            )
            if not ok:
                self._throttle.done()

    def render_snapshot(self, snap: SystemSnapshot) -> None:
        """Refresh an unfinished task (its run time and deadline move)."""
        if self.record is None or self.record.state not in TERMINAL:
            self.load()
        elif self.record is not None:
            self._show()

    def _loaded(self, rec: Any) -> None:
        self._throttle.done()
        self.record = rec
        self._show()
        # The state on the status line: now, not at the next snapshot (which may come
        # before the record or after it).
        self.refresh_status()

    def _show(self) -> None:
        detail = self.query_one("#detail", Static)
        if self.record is None:
            missing = f"no task {self.task_id}: unknown, or its record expired"
            update_static(detail, plain(missing, style="italic"), layout=True)
            return
        now = self.snapshot.taken_at if self.snapshot else (self.record.finished_at or 0.0)
        pal = palette_for(self.app.theme_variables)
        key = (self.record, int(now), self.app.theme)
        update_static(detail, render_task(self.record, now, pal), key, layout=True)

    def selected_id(self) -> str | None:
        """This task's id."""
        return self.task_id

    def action_view_row(self) -> None:
        """The detail already shows everything whole."""
        self.notify("the detail shows every field whole: scroll it")

    def status_text(self) -> str:
        """The state."""
        return self.record.state.value if self.record else ""

    def action_cancel_task(self) -> None:
        """Cancel the task."""
        rec = self.record
        if rec is None:
            return
        if rec.state not in (TaskState.PENDING, TaskState.RETRY):
            self.notify(
                f"a {rec.state.value} task cannot be cancelled", severity="warning", markup=False
            )
            return

        confirm_cancel(self, rec, lambda: self.load(force=True))

    def _dead(self) -> TaskRecord | None:
        rec = self.record
        if rec is None or rec.state is not TaskState.DEAD:
            self.notify("only a dead task can be replayed", severity="warning")
            return None
        return rec

    def action_replay(self) -> None:
        """Replay this dead task."""
        rec = self._dead()
        if rec is not None:
            self.replay_confirmed([rec.id], rec.name, lambda _: self.load(force=True))

    def action_edit(self) -> None:
        """Edit this dead task's args and replay it."""
        rec = self._dead()
        if rec is not None:
            self.edit_and_replay(rec, lambda _: self.load(force=True))
