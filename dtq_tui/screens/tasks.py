"""Tasks: a paged table with the filter language, sorting, and a drill-down detail.

Sorting and paging happen in the backend, across every matching task: a page is one
``task_page`` call, ordered by ``(sort key, id)`` and continued by keyset cursor, so
pages stay put while tasks arrive, and it carries the total shown in the status bar.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable

from dtq_core.errors import ConfigError
from dtq_core.filters import parse_filter
from dtq_core.paging import DEFAULT_SORT, SORT_KEYS, Cursor, TaskPage, describe_total
from dtq_core.snapshot import SystemSnapshot
from dtq_core.task import TaskRecord, TaskState
from dtq_tui.dialogs.confirm import ConfirmDialog
from dtq_tui.fmt import age, duration, short_id
from dtq_tui.palette import palette_for
from dtq_tui.plain import plain
from dtq_tui.screens.base import DTQScreen, Throttle
from dtq_tui.widgets.live_table import FLEX, TablePane

#: Between the first and last row numbers of a page (a range, as typeset).
EN_DASH = "\u2013"

#: Rows per page: a page is what one Console API call returns.
PAGE = 50

#: ``(label, column key, width)``; the columns whose key is a backend sort key sort.
#: (label, key, width, priority): on a narrow terminal lower priorities give way first.
COLUMNS: list[tuple[str, str, int, int]] = [
    ("ID", "id", 10, 8),
    ("Task", "name", 14, 7),
    ("Queue", "queue", 8, 4),
    ("State", "state", 11, 6),
    ("Try", "attempt", 3, 2),
    ("Age", "enqueued", 5, 3),
    ("Ran", "runtime", 6, 3),
    ("Error", "error", FLEX, 9),
]


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
    | `s` / `S` | Sort by the next sortable column / reverse (or click a header). |
    | `]` / `[` | Next / previous page. |
    | `t` | Scheduled: the delayed tasks, soonest first (run now, cancel). |
    | `R` | Retry: the tasks waiting for a retry (run now, cancel). |
    """

    BINDINGS = [
        Binding("c", "cancel_task", "Cancel", id="tasks.cancel"),
        Binding("s", "sort_next", "Sort", id="tasks.sort"),
        Binding("S", "sort_reverse", "Reverse", show=False, id="tasks.reverse"),
        Binding("right_square_bracket", "page(1)", "Next page", id="tasks.next"),
        Binding("left_square_bracket", "page(-1)", "Prev page", show=False, id="tasks.prev"),
        Binding("t", "waiting('scheduled')", "Scheduled", id="tasks.scheduled"),
        Binding("R", "waiting('retry')", "Retry", id="tasks.retry"),
    ]

    MODE = "tasks"
    TITLE = "Tasks"
    FILTER_HINT = "state:running queue:email task:NAME id:PREFIX exc:TYPE since:1h words"
    MUTATING = frozenset({"cancel_task"})

    def __init__(self, initial_filter: str = "") -> None:
        super().__init__()
        self.filter_text = initial_filter
        self.records: list[TaskRecord] = []
        #: The backend sort key and direction (newest first until the operator picks).
        self.sort_key = DEFAULT_SORT
        self.descending = True
        #: The cursor each page so far started after (``None``: the first page).
        self.cursors: list[Cursor | None] = [None]
        self.last_page: TaskPage | None = None
        self.loaded = False
        # A page read is an index lookup, but a search scans: every 2 s at most, and
        # slower when a page took long.
        self._throttle = Throttle(2.0, backoff=20.0)

    def compose_body(self) -> ComposeResult:
        """The table."""
        yield TablePane(self._labelled(), empty_text="loading…", id="tasks")

    def on_mount(self) -> None:
        """Show the filter in the bar (and a page that arrived before the table)."""
        self.filter_bar.applied = self.filter_text
        self.table.table.set_labels({key: label for label, key, *_ in self._labelled()})
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

    @property
    def page(self) -> int:
        """The page shown, from 0."""
        return len(self.cursors) - 1

    def _labelled(self) -> list[tuple[str, str, int, int]]:
        """The columns, the sort column's label marked with its direction."""
        arrow = " ▼" if self.descending else " ▲"
        return [
            (label + arrow if key == self.sort_key else label, key, width, priority)
            for label, key, width, priority in COLUMNS
        ]

    def load(self, force: bool = False) -> None:
        """Fetch the current page through the feed."""
        if not self._throttle.ready(force):
            return
        started = self.feed.call(
            "task_page",
            self.filter_text or None,
            self.sort_key,
            self.descending,
            self.cursors[-1],
            0,
            PAGE,
            label="List tasks",
            then=self._loaded,
            failed=lambda _: self._throttle.done(),
        )
        if not started:
            self._throttle.done()

    def _loaded(self, page: Any) -> None:
        self._throttle.done()
        self.loaded = True
        if not isinstance(page, TaskPage):
            return
        if (page.sort, page.descending) != (self.sort_key, self.descending):
            return  # an answer to a sort the operator already changed
        self.last_page = page
        self.records = list(page.records)
        if not self.records and page.next_after is None and len(self.cursors) > 1:
            # The page emptied (its tasks expired): back to the one before.
            self.cursors.pop()
            self.load(force=True)
            return
        self._show()

    def _show(self) -> None:
        if not self.query("#tasks"):  # not composed yet: on_mount shows it
            return
        pal = palette_for(self.app.theme_variables)
        now = self.snapshot.taken_at if self.snapshot else 0.0
        rows = []
        for r in self.records:
            err = Text("")
            if r.error is not None:
                err = plain(
                    f"{r.error.type.rsplit('.', 1)[-1]}: {r.error.message}", style=pal.role("bad")
                )
            elif r.dead_reason:
                err = plain(r.dead_reason, style=pal.role("bad"))
            rows.append(
                (
                    r.id,
                    [
                        plain(short_id(r.id, 10)),
                        plain(r.name),
                        plain(r.queue),
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
        page = self.last_page
        if page is not None and not page.total_exact and page.next_after is not None:
            # A search that stopped at its scan budget: more rows remain to be searched.
            empty = "no match in the rows searched so far: ] searches on"
        self.table.sync(rows, empty)
        self.refresh_status()

    def status_text(self) -> str:
        """Position and total: ``1\u201350 of 1,204,311`` (the sort is in the header)."""
        page = self.last_page
        if page is None:
            return ""
        total = describe_total(page)
        if not self.records:
            return f"0 of {total}"
        first = self.page * PAGE + 1
        last = self.page * PAGE + len(self.records)
        return f"{first:,}{EN_DASH}{last:,} of {total}"

    def apply_filter(self, text: str) -> None:
        """A new filter starts at page 1."""
        self.cursors = [None]
        self.load(force=True)

    def _sort_by(self, key: str, descending: bool) -> None:
        """Sort in the backend by ``key``, from the first page."""
        self.sort_key, self.descending = key, descending
        self.cursors = [None]
        self.table.table.set_labels({key: label for label, key, *_ in self._labelled()})
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
        if key not in SORT_KEYS:
            sortable = ", ".join(label for label, k, *_ in COLUMNS if k in SORT_KEYS)
            self.notify(f"the backend sorts by {sortable}", severity="warning", markup=False)
            return
        if self.sort_key == key:
            self._sort_by(key, not self.descending)
        else:
            self._sort_by(key, key == DEFAULT_SORT)

    def action_sort_next(self) -> None:
        """Sort by the next sortable column."""
        keys = [k for _, k, *_ in COLUMNS if k in SORT_KEYS]
        i = keys.index(self.sort_key) if self.sort_key in keys else -1
        key = keys[(i + 1) % len(keys)]
        self._sort_by(key, key == DEFAULT_SORT)

    def action_sort_reverse(self) -> None:
        """Reverse the sort."""
        self._sort_by(self.sort_key, not self.descending)

    def action_page(self, step: int) -> None:
        """Next or previous page (the next starts after the last row shown)."""
        if step > 0:
            page = self.last_page
            if page is None or page.next_after is None:
                self.notify("this is the last page")
                return
            self.cursors.append(page.next_after)
        elif len(self.cursors) > 1:
            self.cursors.pop()
        else:
            return
        self.load(force=True)

    def action_waiting(self, kind: str) -> None:
        """The Scheduled or Retry list."""
        from dtq_tui.screens.waiting import WaitingScreen

        self.app.push_screen(WaitingScreen(kind))

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

        confirm_cancel(self, rec, lambda: self.load(force=True))


def confirm_cancel(screen: DTQScreen, rec: TaskRecord, then: Callable[[], None]) -> None:
    """Ask (naming the task and its queue), then cancel a task that has not started."""

    def done(ok: Any) -> None:
        screen.notify(
            f"cancelled {rec.id}" if ok else f"{rec.id} had already started", markup=False
        )
        then()

    def answered(yes: bool | str | None) -> None:
        if yes is True:
            screen.feed.cancel(rec.id, done)
        else:
            screen.notify("cancel dropped: the task stays queued")

    when = "waiting for a retry" if rec.state is TaskState.RETRY else "waiting to run"
    screen.app.push_screen(
        ConfirmDialog(
            f"Cancel task {rec.id}?",
            f"would cancel task {rec.id} ({rec.name}) in queue {rec.queue}, {when}: "
            "it will not run, and its record says CANCELLED.",
            yes="Cancel the task",
            danger=True,
        ),
        answered,
    )
