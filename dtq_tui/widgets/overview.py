"""The overview's panes: throughput, counts by state, and health with alerts."""

from __future__ import annotations

from typing import Any

from rich.style import Style
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from dtq_core.snapshot import Rates, SystemSnapshot
from dtq_core.task import TaskState
from dtq_tui.alerts import alerts
from dtq_tui.fmt import count, duration, rate
from dtq_tui.palette import ROLE_GLYPHS, palette_for, role_of
from dtq_tui.plain import plain
from dtq_tui.widgets.memo import update_static


def _theme(widget: Static | Vertical) -> str:
    return widget.app.theme


class ThroughputPanel(Vertical):
    """Succeeded, failed, retried and dead per second (1 s / 10 s / 60 s), with a sparkline."""

    DEFAULT_CSS = """
    ThroughputPanel {
        height: auto;
        & > #throughput-figures {
            height: 7;
        }
        & > Sparkline {
            height: 1fr;
            min-height: 2;
            margin: 0 1;
        }
    }
    """

    def compose(self) -> ComposeResult:
        """Figures, then the finished-per-second sparkline of the last minute."""
        yield Static(id="throughput-figures")
        yield Sparkline([], id="throughput-spark")

    #: ``rates``: per second over 1 s, 10 s and 60 s; ``windows``: every process's
    #: finished tasks and run times over 1 m, 10 m, 1 h and 24 h.
    view = "rates"

    def show(self, snap: SystemSnapshot) -> None:
        """Render ``snap``."""
        if self.view == "windows":
            self._show_windows(snap)
            return
        pal = palette_for(self.app.theme_variables)
        t = snap.throughput
        table = Table(box=None, padding=(0, 1), show_edge=False, expand=True)
        table.add_column("/s", style="bold", no_wrap=True)
        for head in ("1s", "10s", "60s"):
            table.add_column(head, justify="right", no_wrap=True)

        def row(label: str, r: Rates, role: str) -> None:
            style = pal.role(role)
            table.add_row(Text(label, style), rate(r.r1), rate(r.r10), rate(r.r60))

        row("enqueued", t.enqueued, "waiting")
        row("succeeded", t.succeeded, "good")
        row("failed", t.failed, "bad")
        row("retried", t.retried, "warn")
        row("dead", t.dead, "bad")
        summary = Text.assemble(
            (" in flight ", "bold"),
            (f"{snap.in_flight}", pal.role("active")),
            ("  busy ", "bold"),
            (f"{snap.workers_busy}/{len(snap.workers)}", pal.role("active")),
        )
        grid = Table.grid(expand=True)
        grid.add_row(table)
        grid.add_row(summary)
        key = (t, snap.in_flight, snap.workers_busy, len(snap.workers), _theme(self))
        update_static(self.query_one("#throughput-figures", Static), grid, key)
        series = [0] * 60
        for q in snap.queues:
            for i, v in enumerate(q.done_series[-60:]):
                series[i + 60 - len(q.done_series[-60:])] += v
        self.query_one("#throughput-spark", Sparkline).data = series

    def _show_windows(self, snap: SystemSnapshot) -> None:
        """Tasks finished, their rate and run-time percentiles per window (all processes)."""
        pal = palette_for(self.app.theme_variables)
        windows = (60, 600, 3600, 86_400)
        heads = ("1m", "10m", "1h", "24h")
        run = {
            h.window_s: h
            for h in snap.latency
            if (h.scope, h.key, h.kind) == ("system", "all", "run")
        }
        table = Table(box=None, padding=(0, 1), show_edge=False, expand=True)
        table.add_column("done", style="bold", no_wrap=True)
        for head in heads:
            table.add_column(head, justify="right", no_wrap=True)

        def cells(fn: Any) -> list[str]:
            return [fn(run[w], w) if w in run else "-" for w in windows]

        table.add_row(Text("tasks", pal.role("good")), *cells(lambda h, w: count(h.count)))
        table.add_row(Text("/s", pal.role("good")), *cells(lambda h, w: rate(h.count / w)))
        table.add_row(Text("p50 run"), *cells(lambda h, w: duration(h.p50)))
        table.add_row(Text("p99 run"), *cells(lambda h, w: duration(h.p99)))
        grid = Table.grid(expand=True)
        grid.add_row(table)
        grid.add_row(Text(" every worker process (w: per second)", pal.role("muted")))
        key = (tuple(sorted(run.items())), _theme(self), "windows")
        update_static(self.query_one("#throughput-figures", Static), grid, key)


class StatesPanel(Static):
    """How many retained tasks are in each state."""

    def show(self, snap: SystemSnapshot) -> None:
        """Render ``snap``."""
        pal = palette_for(self.app.theme_variables)
        table = Table(box=None, padding=(0, 1), show_header=False, expand=True)
        table.add_column("state", no_wrap=True)
        table.add_column("n", justify="right", no_wrap=True)
        for state in TaskState:
            n = snap.counts.get(state.value, 0)
            table.add_row(pal.state_text(state.value), Text(count(n), style="bold" if n else ""))
        table.add_row(Text("queues", style="bold"), count(len(snap.queues)))
        update_static(self, table, (tuple(snap.counts.items()), len(snap.queues), _theme(self)))


class HealthPanel(Static):
    """ok / degraded / down with the reasons, then alerts."""

    def show(self, snap: SystemSnapshot) -> None:
        """Render ``snap``: one line each, cut to fit, with a count of what did not fit."""
        pal = palette_for(self.app.theme_variables)
        h = snap.health
        role = role_of(h.status)
        lines: list[tuple[str, str, bool]] = [
            (role, f"{ROLE_GLYPHS[role]} {h.status.upper()}", True)
        ]
        lines += [(role, f"  {reason}", False) for reason in h.reasons]
        lines.append(("", "alerts", True))
        found = alerts(snap)
        if not found:
            lines.append(("muted", "  none", False))
        lines += [(arole, f"{ROLE_GLYPHS[arole]} {msg}", False) for arole, msg in found]
        room = self.size.height or len(lines)
        if len(lines) > room:
            hidden = len(lines) - room + 1
            lines = [*lines[: room - 1], ("muted", f"… {hidden} more", False)]
        text = Text(no_wrap=True, overflow="ellipsis")
        for i, (lrole, line, bold) in enumerate(lines):
            style = pal.role(lrole) if lrole else Style()
            text.append_text(plain(line, style=style + Style(bold=True) if bold else style))
            if i < len(lines) - 1:
                text.append("\n")
        update_static(self, text)
