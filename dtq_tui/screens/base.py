"""What every console screen shares: the frame, the filter, the live snapshot and the log."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, ClassVar, cast

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import Screen

from dtq_core.snapshot import SystemSnapshot
from dtq_tui.fmt import count, duration
from dtq_tui.widgets.chrome import ConnectionBanner, DTQFooter, StatusLine, TopBar
from dtq_tui.widgets.event_log import EventLog
from dtq_tui.widgets.filter_bar import FilterBar
from dtq_tui.widgets.live_table import LiveTable

if TYPE_CHECKING:
    from dtq_tui.app import DTQApp
    from dtq_tui.feed import Feed

#: (key, tab label, mode) of every top-level screen, in number-key order.
TABS: tuple[tuple[str, str, str], ...] = (
    ("1", "Overview", "overview"),
    ("2", "Latency", "latency"),
    ("3", "Tasks", "tasks"),
    ("4", "Dead", "dead"),
    ("5", "Flows", "workflows"),
    ("6", "Cron", "schedules"),
    ("7", "Limits", "limits"),
    ("8", "Workers", "workers"),
)


class DTQScreen(Screen[None]):
    """A console screen: subclasses compose a body and render snapshots into it.

    | Key | Action |
    | :- | :- |
    | `/` | Filter this screen. |
    | `y` | Copy the selected id to the clipboard (OSC 52: works over SSH). |
    | `v` | View the selected row whole: every column, nothing cut. |
    """

    BINDINGS = [
        Binding("slash", "filter", "Filter", id="screen.filter"),
        Binding("y", "copy_id", "Copy id", show=False, id="screen.copy"),
        Binding("v", "view_row", "View row", show=False, id="screen.view"),
    ]

    #: The mode (top-level screen) this screen belongs to; lights its tab.
    MODE: ClassVar[str] = "overview"
    #: Shown in the help and the command palette.
    TITLE: ClassVar[str] = "Overview"
    #: Placeholder of the filter bar.
    FILTER_HINT: ClassVar[str] = "filter"
    #: Actions that change state (marked in the help; the feed refuses them read-only).
    MUTATING: ClassVar[frozenset[str]] = frozenset()
    #: Whether ``/`` filters this screen.
    FILTERABLE: ClassVar[bool] = True

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self.snapshot: SystemSnapshot | None = None
        #: The tab lit in the top bar (a drill-down screen lights its parent's).
        self.tab = self.MODE

    def compose(self) -> ComposeResult:
        """The frame around :meth:`compose_body`."""
        yield TopBar(TABS, self.tab)
        yield ConnectionBanner()
        yield FilterBar(self.FILTER_HINT, self.validate_filter)
        with Vertical(id="body"):
            yield from self.compose_body()
        yield EventLog()
        yield StatusLine()
        yield DTQFooter(compact=True)

    def compose_body(self) -> ComposeResult:
        """The screen's own widgets."""
        yield from ()

    @property
    def ready(self) -> bool:
        """Composed and attached: its widgets can be queried."""
        return self.is_attached and bool(self.query_children(TopBar))

    @property
    def dtq(self) -> DTQApp:
        """The app, typed."""
        return cast("DTQApp", self.app)

    @property
    def feed(self) -> Feed:
        """The app's feed: every Console API call goes through it."""
        return self.dtq.feed

    @property
    def filter_bar(self) -> FilterBar:
        """The ``/`` filter input."""
        return self.query_one(FilterBar)

    @property
    def event_log(self) -> EventLog:
        """The event log pane."""
        return self.query_one(EventLog)

    # -- snapshots -------------------------------------------------------------------------

    def show_snapshot(self, snap: SystemSnapshot) -> None:
        """Render a snapshot: the frame, then the body."""
        self.snapshot = snap
        if not self.ready:  # pushed but not composed yet: the next snapshot will do
            return
        self.query_one(TopBar).health = snap.health.status
        self.render_snapshot(snap)
        self.query_one(StatusLine).show(self.context_text(snap), self.status_text())

    def render_snapshot(self, snap: SystemSnapshot) -> None:
        """Subclasses draw their panes from ``snap``."""

    def context_text(self, snap: SystemSnapshot) -> str:
        """The status line's left side."""
        parts = [snap.backend]
        if snap.uptime is not None:
            parts.append(f"up {duration(snap.uptime)}")
        busy = f"{snap.workers_busy}/{len(snap.workers)} busy"
        parts += [busy, f"{count(snap.dead_letters)} dead"]
        if self.filter_text:
            parts.append(f"/ {self.filter_text}")
        return " · ".join(parts)

    def status_text(self) -> str:
        """The status line's right side (the screen's own state)."""
        return ""

    def refresh_status(self) -> None:
        """Redraw the status line now."""
        if self.snapshot is not None:
            self.query_one(StatusLine).show(self.context_text(self.snapshot), self.status_text())

    # -- the frame ---------------------------------------------------------------------------

    def on_screen_resume(self) -> None:
        """Catch up with what happened while another screen was shown."""
        if not self.ready:  # still composing: on_mount catches up
            return
        app = self.dtq
        self.event_log.set_class(app.show_log, "-open")
        if app.show_log:
            self.event_log.reset(app.events_tail)
        banner = self.query_one(ConnectionBanner)
        if app.connection_error is None:
            banner.clear_error()
        else:
            banner.show_error(*app.connection_error)
        if app.snapshot is not None:
            self.show_snapshot(app.snapshot)

    def on_mount(self) -> None:
        """Composed: catch up if this screen is already the one shown."""
        if self.dtq.dtq_screen is self:
            self.on_screen_resume()

    def set_log_visible(self, visible: bool) -> None:
        """Show or hide the event log."""
        if not self.ready:  # on_screen_resume applies it
            return
        log = self.event_log
        log.set_class(visible, "-open")
        if visible:
            log.reset(self.dtq.events_tail)

    # -- the filter ------------------------------------------------------------------------

    def validate_filter(self, text: str) -> str | None:
        """An error message for a bad filter (``None`` when it is fine)."""
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide the filter key where there is nothing to filter; read-only dims changes.

        ``None`` makes Textual show the key dimmed in the footer; pressing it reaches
        :meth:`on_key`, which says why it is refused.
        """
        if action == "filter":
            return self.FILTERABLE
        if action in self.MUTATING and self.dtq.read_only:
            return None
        return True

    def on_key(self, event: events.Key) -> None:
        """A key of an action refused in read-only mode says so (instead of nothing)."""
        if not self.dtq.read_only:
            return
        for binding in self._bindings.key_to_bindings.get(event.key, []):
            action = binding.action.split("(", 1)[0]
            if action in self.MUTATING:
                event.stop()
                self.notify(
                    f"{binding.description or action}: refused, the console is read-only "
                    "(started with --read-only)",
                    title="Read-only",
                    severity="warning",
                )
                return

    def action_filter(self) -> None:
        """Open the filter bar."""
        self.filter_bar.open()

    # -- the selected row ------------------------------------------------------------------

    def current_table(self) -> LiveTable | None:
        """The table the operator is on: the focused one, else the first of the body."""
        focused = self.focused
        if isinstance(focused, LiveTable):
            return focused
        tables = list(self.query_one("#body").query(LiveTable))
        return tables[0] if tables else None

    def selected_id(self) -> str | None:
        """The id of what is selected (a task id, a queue or schedule name...)."""
        table = self.current_table()
        return table.current_key if table is not None else None

    def action_copy_id(self) -> None:
        """``y``: copy the selected id with OSC 52 (the terminal's clipboard, over SSH too)."""
        ident = self.selected_id()
        if not ident:
            self.notify("nothing selected to copy", severity="warning")
            return
        self.app.copy_to_clipboard(ident)
        self.notify(f"copied {ident} to the clipboard (OSC 52)", title="Copied", markup=False)

    def action_view_row(self) -> None:
        """``v``: the selected row's whole text, every column (hidden ones too)."""
        table = self.current_table()
        cells = table.row_cells() if table is not None else []
        if table is None or not cells:
            self.notify("no row selected", severity="warning")
            return
        from dtq_tui.dialogs.row import RowDialog

        self.app.push_screen(RowDialog(f"{self.TITLE}: {table.current_key}", cells))

    @on(FilterBar.Applied)
    def _filter_applied(self, event: FilterBar.Applied) -> None:
        self.filter_text = event.text
        self.apply_filter(event.text)
        self.refresh_status()
        self.focus_body()

    @on(FilterBar.Closed)
    def _filter_closed(self) -> None:
        self.focus_body()

    def apply_filter(self, text: str) -> None:
        """Subclasses narrow what they show (default: re-render the snapshot)."""
        if self.snapshot is not None:
            self.render_snapshot(self.snapshot)

    def focus_body(self) -> None:
        """Focus the main widget of the body."""
        body = self.query_one("#body")
        for widget in body.query("*"):
            if widget.focusable:
                widget.focus()
                return

    def clear_filter(self) -> bool:
        """Drop the filter; return whether there was one (``esc`` does this first)."""
        if not self.filter_text:
            return False
        self.filter_bar.applied = ""
        self.filter_text = ""
        self.apply_filter("")
        self.refresh_status()
        return True


def matches(text: str, *fields: object) -> bool:
    """Whether every word of a screen filter appears in one of ``fields``."""
    if not text:
        return True
    hay = " ".join(str(f) for f in fields if f is not None).lower()
    return all(word in hay for word in text.lower().split())


class Throttle:
    """Paces a screen's own query (a task page, the dead-letter groups): one at a time.

    It runs at most once per ``every`` seconds, and never more often than ``backoff``
    times its own last duration: a query that makes the backend scan a million records
    is asked for rarely, so the console's load on the engine stays bounded. A forced
    query asked for while one is in flight runs as soon as that one answers.
    """

    def __init__(self, every: float, backoff: float = 20.0) -> None:
        self.every = every
        self.backoff = backoff
        self.last = 0.0
        self.took = 0.0
        self.busy = False
        self.pending = False

    @property
    def interval(self) -> float:
        """Seconds between two unforced queries now."""
        return max(self.every, self.backoff * self.took)

    def ready(self, force: bool = False) -> bool:
        """Whether to query now (and mark the query started if so)."""
        now = time.monotonic()
        if self.busy:
            self.pending = self.pending or force
            return False
        if not force and not self.pending and now - self.last < self.interval:
            return False
        self.busy = True
        self.pending = False
        self.last = now
        return True

    def done(self) -> None:
        """The query answered (or failed)."""
        self.busy = False
        self.took = time.monotonic() - self.last
