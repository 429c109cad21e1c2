"""How the feed's messages reach the visible screen (a mixin of the app)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.css.query import NoMatches
from textual.dom import DOMNode

from dtq_core.events import Event
from dtq_core.snapshot import SystemSnapshot
from dtq_tui import messages as m
from dtq_tui.screens import DTQScreen
from dtq_tui.widgets.chrome import ConnectionBanner

if TYPE_CHECKING:
    from textual.screen import Screen

    from dtq_tui.feed import Feed


class FeedRelay:
    """Keeps the latest snapshot and event tail, and hands them to the visible screen.

    Screens own their state: the relay only tells the topmost console screen (under any
    dialog) that something arrived; a screen that is not composed yet catches up when it
    is.
    """

    feed: Feed
    snapshot: SystemSnapshot | None
    events_tail: tuple[Event, ...]
    show_log: bool
    connection_error: tuple[str, float] | None
    screen_stack: list[Screen[object]]

    if TYPE_CHECKING:  # provided by App (a stub here would shadow it)

        def notify(
            self,
            message: str,
            *,
            title: str = "",
            severity: Any = "information",
            timeout: float | None = None,
            markup: bool = True,
        ) -> None:
            """Show a toast."""

    @property
    def dtq_screen(self) -> DTQScreen | None:
        """The topmost console screen (under any modal), once it is composed."""
        screen = next((s for s in reversed(self.screen_stack) if isinstance(s, DTQScreen)), None)
        return screen if screen is not None and screen.ready else None

    def on_snapshot_updated(self, message: m.SnapshotUpdated) -> None:
        """Keep the latest snapshot; the visible screen renders it."""
        self.snapshot = message.snapshot
        if (screen := self.dtq_screen) is not None:
            screen.show_snapshot(message.snapshot)

    def on_events_arrived(self, message: m.EventsArrived) -> None:
        """Keep the event tail; an open log appends it."""
        self.events_tail = message.events
        if self.show_log and (screen := self.dtq_screen) is not None:
            screen.event_log.add_events(message.events, message.skipped)

    def on_connection_lost(self, message: m.ConnectionLost) -> None:
        """Show the reconnecting banner."""
        self.connection_error = (message.error, message.retry_in)
        if (screen := self.dtq_screen) is not None:
            for banner in screen.query(ConnectionBanner):
                banner.show_error(message.error, message.retry_in)

    def on_connection_restored(self) -> None:
        """Hide the banner."""
        self.connection_error = None
        if (screen := self.dtq_screen) is not None:
            for banner in screen.query(ConnectionBanner):
                banner.clear_error()
        self.notify("connection restored")

    def on_poll_finished(self, message: m.PollFinished) -> None:
        """Arm the next poll."""
        self.feed.poll_finished(message.delay)

    def on_reply(self, message: m.Reply) -> None:
        """Deliver a query's or an action's outcome on the UI thread.

        The screen that asked may have closed, or not be composed yet: its answer is
        then dropped (the next refresh asks again), never raised.
        """
        owner = getattr(message.then or message.failed, "__self__", None)
        if isinstance(owner, DOMNode) and not owner.is_attached:
            return
        try:
            if message.error is not None:
                error = f"{message.label} failed: {message.error}"
                self.notify(error, title="Error", severity="error")
                if message.failed is not None:
                    message.failed(message.error)
            elif message.then is not None:
                message.then(message.result)
        except NoMatches:
            pass
        if message.mutated:
            self.feed.refresh_now()
