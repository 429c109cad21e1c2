"""Overview: queues with sparklines, throughput, states, health and alerts."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.renderables.sparkline import Sparkline as SparklineRenderable

from dtq_core.snapshot import QueueSnapshot, SystemSnapshot
from dtq_tui.fmt import count, rate
from dtq_tui.palette import palette_for
from dtq_tui.plain import plain
from dtq_tui.screens.base import DTQScreen, matches
from dtq_tui.widgets.live_table import FLEX, TablePane
from dtq_tui.widgets.overview import HealthPanel, StatesPanel, ThroughputPanel


class OverviewScreen(DTQScreen):
    """Is the system healthy? Queue depth and flow, throughput, states, health, alerts.

    | Key | Action |
    | :- | :- |
    | `p` | Pause or resume the selected queue. |
    | `w` | Throughput per second (1 s, 10 s, 60 s) or per window (1 m, 10 m, 1 h, 24 h). |
    | `enter` | Show the selected queue's tasks. |
    """

    BINDINGS = [
        Binding("p", "toggle_pause", "Pause/resume", id="overview.pause"),
        Binding("w", "toggle_windows", "Windows", id="overview.windows"),
    ]

    MODE = "overview"
    TITLE = "Overview"
    FILTER_HINT = "queue name"
    MUTATING = frozenset({"toggle_pause"})

    def __init__(self) -> None:
        super().__init__()
        self._sparks: dict[str, tuple[Any, Any]] = {}

    def compose_body(self) -> ComposeResult:
        """Queue table on top; throughput, states and health below."""
        yield TablePane(
            [
                ("Queue", "queue", 14),
                ("Ready", "ready", 7),
                ("Delayed", "delayed", 7),
                ("Run", "running", 5),
                ("In/s", "in", 6),
                ("Out/s", "out", 6),
                ("Done/s, last 60 s", "spark", FLEX),
            ],
            empty_text="no queues yet: nothing has been enqueued",
            flex_min=10,  # a sparkline reads at 10 cells; the counts matter more
            id="queues",
        )
        with Horizontal(id="overview-panels"):
            yield ThroughputPanel(id="throughput", classes="panel")
            yield StatesPanel(id="states", classes="panel")
            yield HealthPanel(id="health", classes="panel")

    def on_mount(self) -> None:
        """Titles of the panels."""
        self.query_one("#throughput").border_title = "throughput"
        self.query_one("#states").border_title = "states"
        self.query_one("#health").border_title = "health"
        self.query_one("#queues").border_title = "queues"

    @property
    def queues(self) -> TablePane:
        """The queue table."""
        return self.query_one("#queues", TablePane)

    def render_snapshot(self, snap: SystemSnapshot) -> None:
        """Queue rows, then the panels."""
        pal = palette_for(self.app.theme_variables)
        spark_w = self.queues.table.column_width("spark")
        low = pal.role("muted").color or pal.foreground.rich_color
        high = pal.role("active").color or pal.foreground.rich_color
        rows: list[tuple[str, list[Any]]] = []
        for q in snap.queues:
            if not matches(self.filter_text, q.name):
                continue
            rows.append((q.name, self._cells(q, pal, spark_w, low, high)))
        self.queues.sync(
            rows,
            "no queues match the filter" if self.filter_text and snap.queues else None,
        )
        self.query_one(ThroughputPanel).show(snap)
        self.query_one(StatesPanel).show(snap)
        self.query_one(HealthPanel).show(snap)

    def _cells(self, q: QueueSnapshot, pal: Any, spark_w: int, low: Any, high: Any) -> list[Any]:
        name = plain(q.name)
        if q.paused:
            name = plain(f"⏸ {q.name}", style=pal.role("warn"))
        return [
            name,
            Text(count(q.ready), justify="right"),
            Text(count(q.delayed), justify="right"),
            Text(count(q.running), justify="right", style=pal.role("active") if q.running else ""),
            Text(rate(q.enqueued.r10), justify="right"),
            Text(rate(q.succeeded.r10 + q.failed.r10), justify="right"),
            self._spark(q.name, tuple(q.done_series[-60:]) or (0,), spark_w, low, high),
        ]

    def _spark(self, name: str, series: tuple[int, ...], width: int, low: Any, high: Any) -> Any:
        """The same renderable for the same series: an unchanged cell is not redrawn."""
        key = (series, width, low, high)
        cached = self._sparks.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        spark = SparklineRenderable(list(series), width=width, min_color=low, max_color=high)
        self._sparks[name] = (key, spark)
        return spark

    def status_text(self) -> str:
        """Queue count."""
        if self.snapshot is None:
            return ""
        paused = sum(1 for q in self.snapshot.queues if q.paused)
        return f"{len(self.snapshot.queues)} queues" + (f", {paused} paused" if paused else "")

    def _selected(self) -> QueueSnapshot | None:
        key = self.queues.table.current_key
        if key is None or self.snapshot is None:
            return None
        return next((q for q in self.snapshot.queues if q.name == key), None)

    def action_toggle_pause(self) -> None:
        """Pause the selected queue, or resume it when paused."""
        q = self._selected()
        if q is None:
            self.notify("select a queue first", severity="warning")
            return
        pause = not q.paused

        def done(_: object) -> None:
            self.notify(f"queue {q.name} {'paused' if pause else 'resumed'}", markup=False)

        self.feed.set_queue_paused(q.name, pause, done)

    def action_toggle_windows(self) -> None:
        """Switch the throughput panel between per-second rates and the long windows."""
        panel = self.query_one(ThroughputPanel)
        panel.view = "windows" if panel.view == "rates" else "rates"
        panel.border_title = "throughput" if panel.view == "rates" else "done, all processes"
        if self.snapshot is not None:
            panel.show(self.snapshot)

    def on_data_table_row_selected(self) -> None:
        """``enter``: the selected queue's tasks."""
        q = self._selected()
        if q is not None:
            self.dtq.open_tasks(f"queue:{q.name}")
