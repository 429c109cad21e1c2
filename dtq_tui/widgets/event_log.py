"""The event log pane: state changes streaming in, coloured by their new state."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.widgets import RichLog

from dtq_core.events import Event
from dtq_tui.fmt import clip, clock, short_id
from dtq_tui.palette import Palette, palette_for


class EventLog(RichLog):
    """A bounded log of events, appended by sequence number (never duplicated)."""

    DEFAULT_CSS = """
    EventLog {
        display: none;
        height: 8;
        border-top: hkey $primary;
        background: $surface;
        &.-open {
            display: block;
        }
    }
    """

    def __init__(
        self, *, name: str | None = None, id: str | None = None, classes: str | None = None
    ) -> None:
        super().__init__(
            max_lines=500,
            wrap=False,
            markup=False,
            auto_scroll=True,
            name=name,
            id=id,
            classes=classes,
        )
        self.last_seq = 0
        self.border_title = "events"

    def add_events(self, events: Iterable[Event], skipped: int = 0) -> None:
        """Append the events newer than what is shown."""
        pal = palette_for(self.app.theme_variables)
        fresh = [e for e in events if e.seq > self.last_seq]
        if not fresh:
            return
        if self.last_seq and fresh[0].seq > self.last_seq + 1:
            gap = fresh[0].seq - self.last_seq - 1
            self.write(Text(f"… {gap} events not shown (the stream outran the log)", "italic"))
        elif skipped:
            self.write(Text(f"… {skipped} events not shown", "italic"))
        for ev in fresh:
            self.write(line(ev, pal))
        self.last_seq = fresh[-1].seq

    def reset(self, events: Iterable[Event]) -> None:
        """Show ``events`` from scratch."""
        self.clear()
        self.last_seq = 0
        self.add_events(events)


def line(ev: Event, pal: Palette) -> Text:
    """One event as a log line."""
    text = Text(no_wrap=True)
    text.append(clock(ev.ts), pal.role("muted"))
    text.append(f" {short_id(ev.task_id, 10):<10} ")
    text.append(f"{clip(ev.name, 18):<18} ")
    text.append(f"{clip(ev.queue, 10):<10} ", pal.role("muted"))
    old = ev.old or "new"
    text.append(f"{old:>9}", pal.state(ev.old) if ev.old else pal.role("muted"))
    text.append(" → ")
    text.append(f"{ev.new:<9}", pal.state(ev.new))
    if ev.worker:
        text.append(f" {ev.worker}", pal.role("muted"))
    if ev.note:
        text.append(f"  {clip(ev.note, 80)}")
    return text
