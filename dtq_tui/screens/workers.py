"""Workers: their processes (host, pid, RSS, CPU, version), then every worker thread."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult

from dtq_core.snapshot import SystemSnapshot
from dtq_tui.alerts import SILENT_WORKER_S
from dtq_tui.fmt import count, duration, rate, short_id
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

    DEFAULT_CSS = """
    WorkersScreen #processes {
        height: auto;
        max-height: 9;
    }
    """

    def compose_body(self) -> ComposeResult:
        """Processes (from every host), then their workers (grouped by process)."""
        yield TablePane(
            [
                ("Process", "proc", FLEX),
                ("Role", "role", 8, 3),
                ("Pool", "pool", 7, 4),
                ("Conc", "conc", 4, 5),
                ("Busy", "busy", 4, 6),
                ("Tasks/s", "rate", 7, 6),
                ("RSS", "rss", 7, 5),
                ("CPU%", "cpu", 5, 5),
                ("Version", "version", 8, 2),
                ("Beat", "beat", 6, 4),
            ],
            empty_text="no worker process has published its record yet",
            id="processes",
        )
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
        """One row per process, then one per worker (ids sort by host and process)."""
        pal = palette_for(self.app.theme_variables)
        procs: list[tuple[str, list[Any]]] = []
        for p in snap.processes:
            if not matches(self.filter_text, p.id, p.host, p.pool, p.role, p.version):
                continue
            beat = Text(duration(p.heartbeat_age), justify="right")
            if p.heartbeat_age > SILENT_WORKER_S:
                beat.stylize(pal.role("warn"))
            procs.append(
                (
                    p.id,
                    [
                        plain(p.id),
                        plain(p.role or "-"),
                        plain(p.pool),
                        Text(str(p.concurrency), justify="right"),
                        Text(str(p.busy), justify="right"),
                        Text(rate(p.tasks_per_s), justify="right"),
                        Text(_bytes(p.rss_bytes), justify="right"),
                        Text(f"{p.cpu_percent:.0f}", justify="right"),
                        plain(p.version),
                        beat,
                    ],
                )
            )
        self.query_one("#processes", TablePane).sync(
            procs, "no processes match the filter" if snap.processes else None
        )
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
        """Busy / total, and processes."""
        snap = self.snapshot
        if snap is None:
            return ""
        hosts = len({p.host for p in snap.processes})
        n = len(snap.processes)
        procs = (
            f", {n} process{'es' if n != 1 else ''} on {hosts} host{'s' if hosts != 1 else ''}"
            if n
            else ""
        )
        return f"{snap.workers_busy} busy of {len(snap.workers)}{procs}"

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


def _bytes(n: int) -> str:
    """``512K``, ``48M``, ``1.2G``."""
    for unit, size in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n >= size:
            v = n / size
            return f"{v:.1f}{unit}" if v < 10 else f"{v:.0f}{unit}"
    return str(n)
