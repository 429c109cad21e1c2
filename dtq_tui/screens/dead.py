"""Dead letters: failures grouped by cause; inside a group, its tasks."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding

from dtq_core.reliability.deadletter import FailureGroup
from dtq_core.snapshot import SystemSnapshot
from dtq_core.task import TaskRecord
from dtq_tui.fmt import age, count, short_id
from dtq_tui.palette import palette_for
from dtq_tui.plain import plain
from dtq_tui.screens.base import Throttle
from dtq_tui.screens.dead_actions import DeadActions
from dtq_tui.screens.tasks import check_filter
from dtq_tui.widgets.live_table import FLEX, TablePane

#: Task records shown inside a group (the group's newest).
GROUP_PAGE = 200


def describe(g: FailureGroup) -> str:
    """``charge · ConnectionError: gateway timeout after <n>s`` (names a group in dialogs)."""
    return f"{g.task} · {g.exc_type.rsplit('.', 1)[-1] or 'dead'}: {g.message or '-'}"


class DeadLettersScreen(DeadActions):
    """Dead tasks grouped by task name, exception type and normalised message.

    | Key | Action |
    | :- | :- |
    | `enter` | Open the group's tasks. |
    | `R` | Replay the whole group (dry run first, batch limit). |
    | `d` | Purge the whole group (asks, stating the count). |
    | `/` | Filter: ``task:NAME exc:TYPE queue:NAME since:1h`` words. |
    """

    BINDINGS = [
        Binding("R", "replay_group", "Replay group", id="dead.replay_group"),
        Binding("d", "purge_group", "Purge group", id="dead.purge_group"),
    ]

    MODE = "dead"
    TITLE = "Dead letters"
    FILTER_HINT = "task:NAME exc:TYPE queue:NAME since:1h words"
    MUTATING = frozenset({"replay_group", "purge_group"})

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[FailureGroup] = []
        self.loaded = False
        self._throttle = Throttle(1.5)

    def compose_body(self) -> ComposeResult:
        """The group table."""
        yield TablePane(
            [
                ("Count", "count", 5, 8),
                ("Task", "task", 14, 7),
                ("Exception", "exc", 14, 5),
                ("Message (normalised)", "message", FLEX),
                ("↻", "replayed", 4, 6),
                ("Last", "last", 6, 3),
                ("First", "first", 6, 2),
            ],
            empty_text="loading…",
            id="groups",
        )

    @property
    def table(self) -> TablePane:
        """The group table."""
        return self.query_one("#groups", TablePane)

    def validate_filter(self, text: str) -> str | None:
        """The filter language decides."""
        return check_filter(text)

    def render_snapshot(self, snap: SystemSnapshot) -> None:
        """Re-group now and then."""
        self.load()

    def load(self, force: bool = False) -> None:
        """Fetch the groups."""
        if not self._throttle.ready(force):
            return
        ok = self.feed.call(
            "dead_groups",
            self.filter_text or None,
            label="Load dead letters",
            then=self._loaded,
            failed=lambda _: self._throttle.done(),
        )
        if not ok:
            self._throttle.done()

    def apply_filter(self, text: str) -> None:
        """Regroup with the filter."""
        self.load(force=True)

    def _loaded(self, groups: Any) -> None:
        self._throttle.done()
        self.loaded = True
        self.groups = list(groups or [])
        pal = palette_for(self.app.theme_variables)
        now = self.snapshot.taken_at if self.snapshot else 0.0
        rows = []
        for g in self.groups:
            rows.append(
                (
                    g.key,
                    [
                        Text(count(g.count), justify="right", style=pal.role("bad")),
                        plain(g.task),
                        plain(g.exc_type.rsplit(".", 1)[-1] or "-"),
                        plain(g.message or "-"),
                        Text(
                            f"↻ {g.replayed}" if g.replayed else "",
                            justify="right",
                            style=pal.role("muted"),
                        ),
                        age(now - g.last_seen) if now else "-",
                        age(now - g.first_seen) if now else "-",
                    ],
                )
            )
        empty = "no dead letters match the filter" if self.filter_text else "no dead letters 🎉"
        self.table.sync(rows, empty)
        self.refresh_status()

    def status_text(self) -> str:
        """Totals."""
        total = sum(g.count for g in self.groups)
        replayed = sum(g.replayed for g in self.groups)
        again = f" · {replayed} replayed before (↻)" if replayed else ""
        return f"{len(self.groups)} causes · {total} dead{again}"

    def selected(self) -> FailureGroup | None:
        """The group under the cursor."""
        key = self.table.table.current_key
        return next((g for g in self.groups if g.key == key), None)

    def on_data_table_row_selected(self) -> None:
        """``enter``: the group's tasks."""
        g = self.selected()
        if g is not None:
            self.app.push_screen(DeadGroupScreen(g))

    def action_replay_group(self) -> None:
        """Replay the selected group (dry run first)."""
        g = self.selected()
        if g is None:
            self.notify("select a group first", severity="warning")
            return
        # Oldest first: they have waited longest.
        self.replay_with_preview(list(reversed(g.task_ids)), g.count, lambda _: self.load(True))

    def action_purge_group(self) -> None:
        """Purge the selected group, after confirmation."""
        g = self.selected()
        if g is None:
            self.notify("select a group first", severity="warning")
            return
        self.purge_confirmed(g.task_ids, describe(g), lambda _: self.load(True))


class DeadGroupScreen(DeadActions):
    """The dead tasks of one cause; tag some and act on them.

    | Key | Action |
    | :- | :- |
    | `space` | Tag or untag the row (htop style). |
    | `a` | Tag all rows / clear the tags. |
    | `h` | Hide or show the tasks replayed before (marked ↻). |
    | `r` | Replay the tagged tasks (or the current one), after confirmation. |
    | `R` | Replay the whole group (dry run first, batch limit). |
    | `e` | Edit the current task's args as JSON and replay it. |
    | `d` | Purge the tagged tasks (or the current one), after confirmation. |
    | `enter` | The task's detail. |
    | `escape` | Back to the groups. |
    """

    BINDINGS = [
        Binding("space", "tag", "Tag", id="group.tag"),
        Binding("a", "tag_all", "Tag all", show=False, id="group.tag_all"),
        Binding("h", "hide_replayed", "Hide replayed", id="group.hide_replayed"),
        Binding("r", "replay", "Replay", id="group.replay"),
        Binding("R", "replay_group", "All", id="group.replay_group"),
        Binding("e", "edit", "Edit", id="group.edit"),
        Binding("d", "purge", "Purge", id="group.purge"),
    ]

    MODE = "dead"
    TITLE = "Dead letters: group"
    FILTERABLE = False
    MUTATING = frozenset({"replay", "replay_group", "edit", "purge"})

    def __init__(self, group: FailureGroup) -> None:
        super().__init__()
        self.group = group
        self.records: list[TaskRecord] = []
        self.tagged: set[str] = set()
        self.loaded = False
        #: Leave out the dead tasks that were replayed before.
        self.hide_replayed = False
        self._throttle = Throttle(2.0)

    def compose_body(self) -> ComposeResult:
        """The task table."""
        yield TablePane(
            [
                ("", "tag", 1, 9),
                ("ID", "id", 10, 8),
                ("Queue", "queue", 9, 4),
                ("Try", "attempt", 3, 2),
                ("Died", "died", 6, 3),
                ("Replayed as", "replayed", 12, 5),
                ("Error", "error", FLEX),
            ],
            empty_text="loading…",
            id="group-tasks",
        )

    def on_mount(self) -> None:
        """Title the group."""
        g = self.group
        pane = self.query_one("#group-tasks")
        pane.border_title = plain(describe(g), 70)
        if g.beside:
            # Lost with their process: what ran beside them (the poison is beside all).
            pane.border_subtitle = plain(
                "ran beside: " + ", ".join(f"{name} ({n})" for name, n in g.beside), 70
            )
        self.load(force=True)

    @property
    def table(self) -> TablePane:
        """The task table."""
        return self.query_one("#group-tasks", TablePane)

    def render_snapshot(self, snap: SystemSnapshot) -> None:
        """Reload now and then."""
        self.load()

    def load(self, force: bool = False) -> None:
        """Refresh the group, then its records."""
        if not self._throttle.ready(force):
            return
        g = self.group
        flt = f"task:{g.task}" + (f" exc:{g.exc_type}" if g.exc_type else "")
        ok = self.feed.call(
            "dead_groups",
            flt,
            label="Load group",
            then=self._regrouped,
            failed=lambda _: self._throttle.done(),
        )
        if not ok:
            self._throttle.done()

    def _regrouped(self, groups: Any) -> None:
        fresh = next((g for g in groups or [] if g.key == self.group.key), None)
        if fresh is None:
            self._throttle.done()
            self.records = []
            self.tagged.clear()
            self._show("this group is empty now: every task was replayed or purged")
            return
        self.group = fresh
        ids = fresh.task_ids[:GROUP_PAGE]
        ok = self.feed.tasks_by_id(ids, self._loaded)
        if not ok:
            self._throttle.done()

    def _loaded(self, records: Any) -> None:
        self._throttle.done()
        self.loaded = True
        self.records = list(records or [])
        self.tagged &= {r.id for r in self.records}
        self._show()

    def _show(self, empty: str = "no tasks") -> None:
        pal = palette_for(self.app.theme_variables)
        now = self.snapshot.taken_at if self.snapshot else 0.0
        rows = []
        for r in self.shown:
            tag = Text("●", style=pal.role("accent")) if r.id in self.tagged else Text(" ")
            again = plain(
                "↻ " + ", ".join(short_id(i, 9) for i in r.replayed_to) if r.replayed_to else "",
                style=pal.role("muted"),
            )
            err = r.error.message if r.error else (r.dead_reason or "")
            rows.append(
                (
                    r.id,
                    [
                        tag,
                        plain(short_id(r.id, 10)),
                        plain(r.queue),
                        Text(str(r.attempt), justify="right"),
                        age(now - r.finished_at) if now and r.finished_at else "-",
                        again,
                        plain(err, style=pal.role("bad")),
                    ],
                )
            )
        self.table.sync(rows, empty)
        self.refresh_status()

    @property
    def shown(self) -> list[TaskRecord]:
        """The records listed (without those replayed before, when hidden)."""
        if not self.hide_replayed:
            return self.records
        return [r for r in self.records if not r.replayed_to]

    def status_text(self) -> str:
        """Counts and tags."""
        shown = len(self.shown)
        more = f" (showing {shown})" if shown < self.group.count else ""
        replayed = sum(1 for r in self.records if r.replayed_to)
        hidden = " hidden" if self.hide_replayed else ""
        again = f" · {replayed} replayed before{hidden} (h)" if replayed else ""
        return f"{self.group.count} dead{more}{again} · {len(self.tagged)} tagged"

    def current(self) -> TaskRecord | None:
        """The record under the cursor."""
        key = self.table.table.current_key
        return next((r for r in self.shown if r.id == key), None)

    def targets(self) -> list[str]:
        """The tagged ids, else the current one."""
        if self.tagged:
            return [r.id for r in self.shown if r.id in self.tagged]
        rec = self.current()
        return [rec.id] if rec else []

    def _after(self, _: Any = None) -> None:
        self.tagged.clear()
        self.load(force=True)

    def action_tag(self) -> None:
        """Tag or untag the current row and move down."""
        rec = self.current()
        if rec is None:
            return
        self.tagged ^= {rec.id}
        self._show()
        table = self.table.table
        if table.cursor_row < table.row_count - 1:
            table.move_cursor(row=table.cursor_row + 1)

    def action_tag_all(self) -> None:
        """Tag every row, or clear the tags when all are tagged."""
        ids = {r.id for r in self.shown}
        self.tagged = set() if ids and self.tagged >= ids else ids
        self._show()

    def action_hide_replayed(self) -> None:
        """Hide or show the dead tasks replayed before."""
        self.hide_replayed = not self.hide_replayed
        self.tagged &= {r.id for r in self.shown}
        self._show()

    def action_replay(self) -> None:
        """Replay the tagged tasks (or the current one), after confirmation."""
        ids = self.targets()
        what = f"{'tagged' if self.tagged else 'selected'} in {describe(self.group)}"
        self.replay_confirmed(ids, what, self._after)

    def action_replay_group(self) -> None:
        """Replay the whole group (dry run first)."""
        self.replay_with_preview(list(reversed(self.group.task_ids)), self.group.count, self._after)

    def action_edit(self) -> None:
        """Edit the current task's args and replay it."""
        rec = self.current()
        if rec is None:
            self.notify("select a task first", severity="warning")
            return
        self.edit_and_replay(rec, self._after)

    def action_purge(self) -> None:
        """Purge the tagged tasks (or the current one)."""
        ids = self.targets()
        what = f"{'tagged' if self.tagged else 'selected'} in {describe(self.group)}"
        self.purge_confirmed(ids, what, self._after)

    def on_data_table_row_selected(self) -> None:
        """``enter``: the detail."""
        rec = self.current()
        if rec is not None:
            self.dtq.open_task(rec.id)
