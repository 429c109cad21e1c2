"""Latency: queue-wait and run-time histograms per queue and task name."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding

from dtq_core.snapshot import LatencySnapshot, SystemSnapshot
from dtq_tui.fmt import count, duration
from dtq_tui.palette import palette_for
from dtq_tui.plain import plain
from dtq_tui.screens.base import DTQScreen, matches
from dtq_tui.widgets.histogram import HistogramView
from dtq_tui.widgets.live_table import FLEX, TablePane

KINDS = ("all", "wait", "run")


def key_of(h: LatencySnapshot) -> str:
    """A stable row key for a histogram."""
    return f"{h.scope}:{h.key}:{h.kind}:{h.window_s}"


class LatencyScreen(DTQScreen):
    """Pick a histogram; its bars and percentiles show below (beside, when wide).

    | Key | Action |
    | :- | :- |
    | `w` | Next window (e.g. 1 min, 5 min, 1 h). |
    | `k` | Wait, run or both. |
    | `/` | Filter by queue or task name (``queue:NAME``, ``task:NAME``, or words). |
    """

    BINDINGS = [
        Binding("w", "next_window", "Window", id="latency.window"),
        Binding("k", "next_kind", "Wait/run", id="latency.kind"),
    ]

    MODE = "latency"
    TITLE = "Latency"
    FILTER_HINT = "queue:NAME, task:NAME or words"

    def __init__(self) -> None:
        super().__init__()
        self.window: int | None = None
        self.kind = "all"

    def compose_body(self) -> ComposeResult:
        """Histogram list and the selected histogram."""
        yield TablePane(
            [
                ("Scope", "scope", 5),
                ("Name", "key", FLEX),
                ("Kind", "kind", 4),
                ("n", "count", 6),
                ("P50", "p50", 6),
                ("P95", "p95", 6),
                ("P99", "p99", 6),
                ("max", "max", 6),
            ],
            empty_text="no latency data: nothing has run yet, or this engine does not report it",
            id="histograms",
        )
        yield HistogramView(id="bars", classes="panel")

    def on_mount(self) -> None:
        """Titles."""
        self.query_one("#bars").border_title = "distribution"
        self.query_one("#histograms").border_title = "histograms"

    @property
    def histograms(self) -> TablePane:
        """The histogram list."""
        return self.query_one("#histograms", TablePane)

    def windows(self) -> list[int]:
        """The windows the snapshot offers."""
        snap = self.snapshot
        return sorted({h.window_s for h in snap.latency}) if snap else []

    def _visible(self, snap: SystemSnapshot) -> list[LatencySnapshot]:
        windows = sorted({h.window_s for h in snap.latency})
        if windows and self.window not in windows:
            self.window = windows[0]
        out = []
        for h in snap.latency:
            if h.window_s != self.window or self.kind not in ("all", h.kind):
                continue
            if not _filter_ok(self.filter_text, h):
                continue
            out.append(h)
        out.sort(key=lambda h: (h.scope, h.key, h.kind))
        return out

    def render_snapshot(self, snap: SystemSnapshot) -> None:
        """Rows for the window and kind, then the selected histogram's bars."""
        pal = palette_for(self.app.theme_variables)
        rows: list[tuple[str, list[Any]]] = []
        for h in self._visible(snap):
            rows.append(
                (
                    key_of(h),
                    [
                        plain(h.scope),
                        plain(h.key),
                        plain(h.kind),
                        Text(count(h.count), justify="right"),
                        Text(duration(h.p50), justify="right"),
                        Text(duration(h.p95), justify="right", style=pal.role("warn")),
                        Text(duration(h.p99), justify="right", style=pal.role("bad")),
                        Text(duration(h.max), justify="right"),
                    ],
                )
            )
        empty = None
        if snap.latency and not rows:
            empty = "no histograms match the window, kind or filter"
        self.histograms.sync(rows, empty)
        self._show_selected()

    def _show_selected(self) -> None:
        snap = self.snapshot
        view = self.query_one(HistogramView)
        key = self.histograms.table.current_key
        if snap is None or key is None:
            view.histogram = None
            return
        view.histogram = next((h for h in snap.latency if key_of(h) == key), None)

    def on_data_table_row_highlighted(self) -> None:
        """Follow the cursor."""
        self._show_selected()

    def on_resize(self) -> None:
        """Side by side when there is room."""
        self.set_class(self.size.width >= 140, "-wide")

    def status_text(self) -> str:
        """Window and kind."""
        window = f"window {duration(self.window)}" if self.window else "no windows"
        return f"{window} · {self.kind} (w, k)"

    def action_next_window(self) -> None:
        """Cycle through the windows."""
        windows = self.windows()
        if not windows:
            self.notify("no latency windows reported", severity="warning")
            return
        i = windows.index(self.window) if self.window in windows else -1
        self.window = windows[(i + 1) % len(windows)]
        self._rerender()

    def action_next_kind(self) -> None:
        """Cycle all / wait / run."""
        self.kind = KINDS[(KINDS.index(self.kind) + 1) % len(KINDS)]
        self._rerender()

    def _rerender(self) -> None:
        if self.snapshot is not None:
            self.render_snapshot(self.snapshot)
        self.refresh_status()


def _filter_ok(text: str, h: LatencySnapshot) -> bool:
    words = []
    for tok in text.split():
        scope, sep, val = tok.partition(":")
        if sep and scope in ("queue", "task"):
            if h.scope != scope or h.key != val:
                return False
        else:
            words.append(tok)
    return matches(" ".join(words), h.scope, h.key, h.kind)
