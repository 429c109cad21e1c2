"""Workers: state, current task and its run time, processed/failed, heartbeat age."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult

from dtq_core.snapshot import SystemSnapshot
from dtq_tui.alerts import SILENT_WORKER_S
from dtq_tui.fmt import count, duration, short_id
from dtq_tui.palette import palette_for
from dtq_tui.plain import plain
from dtq_tui.screens.base import DTQScreen, matches
from dtq_tui.widgets.live_table import FLEX, TablePane


class WorkersScreen(DTQScreen):
    """Every worker as its last heartbeat (or this process) describes it.

    | Key | Action |
    | :- | :- |
    | `enter` | Open the task the worker is running. |
    """

    MODE = "workers"
    TITLE = "Workers"
    FILTER_HINT = "worker id, pool, state or task name"

    def compose_body(self) -> ComposeResult:
        """One table."""
        yield TablePane(
            [
                ("Worker", "id", 13),
                ("State", "state", 8),
                ("Task", "task", FLEX),
                ("Running", "runtime", 7),
                ("Done", "processed", 6),
                ("Failed", "failed", 6),
                ("Beat", "heartbeat", 6),
            ],
            empty_text="no workers: start one with `dtq worker` (this console runs none)",
            id="workers",
        )

    @property
    def worker_table(self) -> TablePane:
        """The worker table."""
        return self.query_one("#workers", TablePane)

    def render_snapshot(self, snap: SystemSnapshot) -> None:
        """One row per worker."""
        pal = palette_for(self.app.theme_variables)
        rows: list[tuple[str, list[Any]]] = []
        for w in snap.workers:
            if not matches(self.filter_text, w.id, w.pool, w.state, w.task_name, w.task_id):
                continue
            task = Text("-", style=pal.role("muted"))
            if w.task_name:
                task = plain(f"{w.task_name} {short_id(w.task_id, 8)}")
            hb = Text(duration(w.heartbeat_age), justify="right")
            if w.heartbeat_age > SILENT_WORKER_S:
                hb.stylize(pal.role("warn"))
            rows.append(
                (
                    w.id,
                    [
                        plain(w.id),
                        _state(pal.state_text(w.state), w.restarts),
                        task,
                        Text(duration(w.task_runtime), justify="right"),
                        Text(count(w.processed), justify="right"),
                        Text(
                            count(w.failed),
                            justify="right",
                            style=pal.role("bad") if w.failed else "",
                        ),
                        hb,
                    ],
                )
            )
        self.worker_table.sync(rows, "no workers match the filter" if snap.workers else None)

    def status_text(self) -> str:
        """Busy / total."""
        snap = self.snapshot
        if snap is None:
            return ""
        return f"{snap.workers_busy} busy of {len(snap.workers)}"

    def on_data_table_row_selected(self) -> None:
        """Open the running task's detail."""
        key = self.worker_table.table.current_key
        snap = self.snapshot
        if key is None or snap is None:
            return
        w = next((w for w in snap.workers if w.id == key), None)
        if w is not None and w.task_id:
            self.dtq.open_task(w.task_id)


def _state(text: Text, restarts: int) -> Text:
    """The state cell; a worker whose loop died and was restarted says how often."""
    if restarts:
        text = text.copy()
        text.append(f" ↻{restarts}")
    return text
