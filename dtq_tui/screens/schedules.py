"""Schedules: cron entries in words, next runs, last result; pause or trigger one."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from dtq_core.snapshot import ScheduleSnapshot, SystemSnapshot
from dtq_tui.fmt import ago, clock, count
from dtq_tui.palette import palette_for
from dtq_tui.plain import plain
from dtq_tui.screens.base import DTQScreen, matches
from dtq_tui.widgets.live_table import FLEX, TablePane
from dtq_tui.widgets.memo import update_static


class SchedulesScreen(DTQScreen):
    """Periodic (cron) schedules.

    | Key | Action |
    | :- | :- |
    | `p` | Pause or resume the selected schedule. |
    | `t` | Trigger it now (enqueue its task). |
    """

    BINDINGS = [
        Binding("p", "toggle_pause", "Pause/resume", id="schedules.pause"),
        Binding("t", "trigger", "Trigger now", id="schedules.trigger"),
    ]

    MODE = "schedules"
    TITLE = "Schedules"
    FILTER_HINT = "schedule name, task or expression"
    MUTATING = frozenset({"toggle_pause", "trigger"})

    def compose_body(self) -> ComposeResult:
        """Table and the selected schedule's detail."""
        yield TablePane(
            [
                ("Schedule", "name", 14, 8),
                # Never cut: fit to the longest expression (render_snapshot widens it).
                ("Cron", "expr", 12, 9),
                ("When", "desc", FLEX),
                ("Next", "next", 9, 6),
                ("Last", "last", 8, 5),
                ("Result", "state", 10, 4),
            ],
            empty_text="no schedules: none are registered, or this engine does not report them",
            id="schedules",
        )
        yield Static(id="schedule-detail", classes="panel detail")

    def on_mount(self) -> None:
        """Titles."""
        self.query_one("#schedule-detail").border_title = "schedule"

    @property
    def schedules(self) -> TablePane:
        """The schedule table."""
        return self.query_one("#schedules", TablePane)

    def render_snapshot(self, snap: SystemSnapshot) -> None:
        """One row per schedule, then the detail of the selected one."""
        pal = palette_for(self.app.theme_variables)
        now = snap.taken_at
        widest = max((plain(s.expr, limit=None).cell_len for s in snap.schedules), default=4)
        self.schedules.table.fit_column("expr", max(4, widest))
        rows: list[tuple[str, list[Any]]] = []
        for s in snap.schedules:
            if not matches(self.filter_text, s.name, s.task, s.expr, s.description):
                continue
            name = plain(s.name)
            if s.paused:
                name = plain(f"⏸ {s.name}", style=pal.role("warn"))
            nxt = ago(s.next_runs[0], now) if s.next_runs and not s.paused else "paused"
            rows.append(
                (
                    s.name,
                    [
                        name,
                        plain(s.expr, limit=None),
                        plain(s.description),
                        nxt,
                        ago(s.last_fire, now).replace(" ago", "") if s.last_fire else "never",
                        pal.state_text(s.last_state) if s.last_state else Text("-"),
                    ],
                )
            )
        self.schedules.sync(rows, "no schedules match the filter" if snap.schedules else None)
        self._detail()

    def on_data_table_row_highlighted(self) -> None:
        """Follow the cursor."""
        self._detail()

    def _selected(self) -> ScheduleSnapshot | None:
        key = self.schedules.table.current_key
        if key is None or self.snapshot is None:
            return None
        return next((s for s in self.snapshot.schedules if s.name == key), None)

    def _detail(self) -> None:
        detail = self.query_one("#schedule-detail", Static)
        s = self._selected()
        snap = self.snapshot
        if s is None or snap is None:
            update_static(detail, Text("select a schedule", style="italic"), layout=True)
            return
        pal = palette_for(self.app.theme_variables)
        text = Text()
        text.append_text(plain(s.name, style="bold", limit=None))
        text.append_text(plain(f"  runs {s.task} · {s.expr} ({s.description}, {s.tz})", limit=None))
        text.append(f" · fired {count(s.fired)} · missed runs: {s.missed}")
        if s.paused:
            text.append("  ·  PAUSED", pal.role("warn"))
        runs = "  ".join(f"{clock(t)} ({ago(t, snap.taken_at)})" for t in s.next_runs[:5])
        text.append(f"\nnext: {runs or '-'}")
        if s.last_fire is not None:
            how = "triggered by hand" if s.last_manual else "tick"
            text.append(f"\nlast: {clock(s.last_fire)} ({how}) task ")
            text.append_text(plain(s.last_task_id or "-"))
            text.append(" ")
            text.append_text(pal.state_text(s.last_state) if s.last_state else Text("unknown"))
        update_static(detail, text, layout=True)

    def status_text(self) -> str:
        """Counts."""
        snap = self.snapshot
        if snap is None:
            return ""
        paused = sum(1 for s in snap.schedules if s.paused)
        return f"{len(snap.schedules)} schedules" + (f", {paused} paused" if paused else "")

    def action_toggle_pause(self) -> None:
        """Pause the selected schedule (resume when paused)."""
        s = self._selected()
        if s is None:
            self.notify("select a schedule first", severity="warning")
            return
        pause = not s.paused
        self.feed.pause_schedule(
            s.name,
            pause,
            lambda _: self.notify(f"{s.name} {'paused' if pause else 'resumed'}", markup=False),
        )

    def action_trigger(self) -> None:
        """Enqueue the selected schedule's task now."""
        s = self._selected()
        if s is None:
            self.notify("select a schedule first", severity="warning")
            return
        self.feed.trigger_schedule(
            s.name, lambda tid: self.notify(f"{s.name}: enqueued {tid}", markup=False)
        )
