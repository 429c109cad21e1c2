"""The event log pane: state changes streaming in, coloured by their new state."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.text import Text
from textual.widgets import RichLog

from dtq_core.events import Event
from dtq_tui.fmt import clock, short_id
from dtq_tui.palette import Palette, palette_for
from dtq_tui.plain import plain


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
        for ev in causal_order(fresh):
            self.write(line(ev, pal))
        self.last_seq = fresh[-1].seq

    def reset(self, events: Iterable[Event]) -> None:
        """Show ``events`` from scratch."""
        self.clear()
        self.last_seq = 0
        self.add_events(events)


def causal_order(events: Sequence[Event]) -> list[Event]:
    """Events in sequence order, except that a task's creation comes before its other events.

    The engine publishes ``new → PENDING`` after the enqueue returns, and a worker that
    claims the task at once can publish ``PENDING → RUNNING`` first; the log shows what
    happened, so the creation moves up to just before that task's first event.
    """
    out: list[Event] = []
    first: dict[str, int] = {}
    for ev in events:
        at = first.get(ev.task_id)
        if ev.old is None and at is not None:
            out.insert(at, ev)
            first = {t: (i + 1 if i >= at and t != ev.task_id else i) for t, i in first.items()}
            first[ev.task_id] = at
            continue
        if ev.task_id not in first:
            first[ev.task_id] = len(out)
        out.append(ev)
    return out


def line(ev: Event, pal: Palette) -> Text:
    """One event as a log line."""
    text = Text(no_wrap=True)
    text.append(clock(ev.ts), pal.role("muted"))
    text.append(" ")
    text.append_text(_cell(short_id(ev.task_id, 10), 10))
    text.append(" ")
    text.append_text(_cell(ev.name, 18))
    text.append(" ")
    text.append_text(_cell(ev.queue, 10, pal.role("muted")))
    text.append(" ")
    old = ev.old or "new"
    text.append(f"{old:>9}", pal.state(ev.old) if ev.old else pal.role("muted"))
    text.append(" → ")
    text.append(f"{ev.new:<9}", pal.state(ev.new))
    if ev.worker:
        text.append(" ")
        text.append_text(plain(ev.worker, 24, style=pal.role("muted")))
    if ev.note:
        text.append("  ")
        text.append_text(plain(ev.note, 80))
    return text


def _cell(value: object, width: int, style: Any = "") -> Text:
    """``value`` as literal text cut to ``width`` cells and padded to it (wide chars too)."""
    text = plain(value, width, style=style)
    text.pad_right(max(0, width - text.cell_len))
    return text
