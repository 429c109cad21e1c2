"""Tasks: a paged table with the filter language, sorting, and a drill-down detail."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from dtq_core.errors import ConfigError
from dtq_core.filters import parse_filter
from dtq_core.snapshot import SystemSnapshot
from dtq_core.task import TaskRecord, TaskState
from dtq_tui.fmt import age, clip, duration, short_id
from dtq_tui.palette import palette_for
from dtq_tui.screens.base import DTQScreen, Throttle
from dtq_tui.widgets.live_table import FLEX, TablePane

#: Rows per page: a page is what one Console API call returns.
PAGE = 100

#: Column key -> sort key of a record (``now`` for ages and run times).
SORTS: dict[str, Callable[[TaskRecord, float], Any]] = {
    "id": lambda r, now: r.id,
    "name": lambda r, now: r.name,
    "queue": lambda r, now: r.queue,
    "state": lambda r, now: r.state.value,
    "attempt": lambda r, now: r.attempt,
    "enqueued": lambda r, now: r.enqueued_at,
    "runtime": lambda r, now: runtime(r, now) or 0.0,
    "error": lambda r, now: r.error.message if r.error else "",
}


def runtime(rec: TaskRecord, now: float) -> float | None:
    """How long the task ran (or has been running)."""
    if rec.started_at is None:
        return None
    end = rec.finished_at if rec.finished_at is not None else now
    return max(0.0, end - rec.started_at)


def check_filter(text: str) -> str | None:
    """The filter language's own error message, or ``None``."""
    try:
        parse_filter(text)
    except ConfigError as exc:
        return str(exc)
    return None


class TasksScreen(DTQScreen):
    """Task records, newest first, a page at a time (never all of them).

    | Key | Action |
    | :- | :- |
    | `/` | Filter: ``state:dead queue:email task:NAME id:PREFIX exc:TYPE since:1h`` words. |
    | `enter` | Open the task's detail. |
    | `c` | Cancel the task (if it has not started). |
    | `s` / `S` | Sort by the next column / reverse (or click a header). |
    | `]` / `[` | Next / previous page. |
    """

    BINDINGS = [
        Binding("c", "cancel_task", "Cancel", id="tasks.cancel"),
        Binding("s", "sort_next", "Sort", id="tasks.sort"),
        Binding("S", "sort_reverse", "Reverse", show=False, id="tasks.reverse"),
        Binding("right_square_bracket", "page(1)", "Next page", id="tasks.next"),
        Binding("left_square_bracket", "page(-1)", "Prev page", show=False, id="tasks.prev"),
    ]

    MODE = "tasks"
    TITLE = "Tasks"
    FILTER_HINT = "state:running queue:email task:NAME id:PREFIX exc:TYPE since:1h words"
    MUTATING = frozenset({"cancel_task"})

    def __init__(self, initial_filter: str = "") -> None:
        super().__init__()
        self.filter_text = initial_filter
        self.page = 0
        self.records: list[TaskRecord] = []
        self.sort_key: str | None = None
        self.sort_reverse = False
        self.loaded = False
        # A page read scans the backend's records: every 5 s at most, slower if slow.
        self._throttle = Throttle(5.0, backoff=50.0)

    def compose_body(self) -> ComposeResult:
        """The table."""
        yield TablePane(
            [
                ("ID", "id", 10),
                ("Task", "name", 14),
                ("Queue", "queue", 8),
                ("State", "state", 11),
                ("Try", "attempt", 3),
                ("Age", "enqueued", 5),
                ("Ran", "runtime", 6),
                ("Error", "error", FLEX),
            ],
            empty_text="loading…",
            id="tasks",
        )

    def on_mount(self) -> None:
        """Show the filter in the bar (and a page that arrived before the table)."""
        self.filter_bar.applied = self.filter_text
        if self.loaded:
            self._show()

    @property
    def table(self) -> TablePane:
        """The task table."""
        return self.query_one("#tasks", TablePane)

    def validate_filter(self, text: str) -> str | None:
        """The filter language decides."""
        return check_filter(text)

    def render_snapshot(self, snap: SystemSnapshot) -> None:
        """Re-query the page now and then (a page costs the backend a scan)."""
        self.load()

    def load(self, force: bool = False) -> None:
        """Fetch the current page through the feed."""
        if not self._throttle.ready(force):
            return
        started = self.feed.call(
            "tasks",
            self.filter_text or None,
            self.page * PAGE,
            PAGE,
            label="List tasks",
            then=self._loaded,
            failed=lambda _: self._throttle.done(),
        )
        if not started:
            self._throttle.done()

    def _loaded(self, records: Any) -> None:
        self._throttle.done()
        self.loaded = True
        self.records = list(records or [])
        if not self.records and self.page > 0:
            self.page -= 1
            self.load(force=True)
            return
        self._show()

    def _show(self) -> None:
        if not self.query("#tasks"):  # not composed yet: on_mount shows it
            return
        pal = palette_for(self.app.theme_variables)
        now = self.snapshot.taken_at if self.snapshot else 0.0
        recs = list(self.records)
        if self.sort_key is not None:
            keyf = SORTS[self.sort_key]
            recs.sort(key=lambda r: keyf(r, now), reverse=self.sort_reverse)
        rows = []
        for r in recs:
            err = Text("")
            if r.error is not None:
                err = Text(clip(f"{r.error.type.rsplit('.', 1)[-1]}: {r.error.message}", 60))
                err.stylize(pal.role("bad"))
            elif r.dead_reason:
                err = Text(clip(r.dead_reason, 60), style=pal.role("bad"))
            rows.append(
                (
                    r.id,
                    [
                        short_id(r.id, 10),
                        clip(r.name, 14),
                        clip(r.queue, 8),
                        pal.state_text(r.state.value),
                        Text(str(r.attempt), justify="right"),
                        age(now - r.enqueued_at) if now else "-",
                        Text(duration(runtime(r, now)), justify="right"),
                        err,
                    ],
                )
            )
        empty = "no tasks match the filter" if self.filter_text else "no tasks"
        if self.page:
            empty += f" on page {self.page + 1}"
        self.table.sync(rows, empty)
        self.refresh_status()

    def status_text(self) -> str:
        """Page, rows and sort."""
        first = self.page * PAGE + 1
        last = self.page * PAGE + len(self.records)
        rows = f"rows {first}-{last}" if self.records else "no rows"
        sort = ""
        if self.sort_key:
            sort = f" · sort {self.sort_key}{' ↓' if self.sort_reverse else ' ↑'} (this page)"
        return f"page {self.page + 1} · {rows}{sort}"

    def apply_filter(self, text: str) -> None:
        """A new filter starts at page 1."""
        self.page = 0
        self.load(force=True)

    def selected(self) -> TaskRecord | None:
        """The record under the cursor."""
        key = self.table.table.current_key
        return next((r for r in self.records if r.id == key), None)

    def on_data_table_row_selected(self) -> None:
        """``enter``: the detail view."""
        rec = self.selected()
        if rec is not None:
            self.dtq.open_task(rec.id)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        """Sort by a clicked header (again: reverse)."""
        key = str(event.column_key.value)
        if self.sort_key == key:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_key, self.sort_reverse = key, False
        self._show()

    def action_sort_next(self) -> None:
        """Sort by the next column."""
        keys = list(SORTS)
        i = keys.index(self.sort_key) if self.sort_key in keys else -1
        self.sort_key = keys[(i + 1) % len(keys)]
        self._show()

    def action_sort_reverse(self) -> None:
        """Reverse the sort."""
        self.sort_reverse = not self.sort_reverse
        self._show()

    def action_page(self, step: int) -> None:
        """Next or previous page."""
        if step > 0 and len(self.records) < PAGE:
            self.notify("this is the last page")
            return
        self.page = max(0, self.page + step)
        self.load(force=True)

    def action_cancel_task(self) -> None:
        """Cancel the selected task (PENDING or RETRY only)."""
        rec = self.selected()
        if rec is None:
            return
        if rec.state not in (TaskState.PENDING, TaskState.RETRY):
            self.notify(
                f"{rec.id} is {rec.state.value}: only a task that has not started can be cancelled",
                severity="warning",
            )
            return

        def done(ok: Any) -> None:
            self.notify(f"cancelled {rec.id}" if ok else f"{rec.id} had already started")
            self.load(force=True)

        self.feed.cancel(rec.id, done)
