"""The DTQ console app: screens, keys and the feed (``dtq-tui``)."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen

from dtq_core.events import Event
from dtq_core.snapshot import SystemSnapshot
from dtq_tui import messages as m
from dtq_tui.dialogs.help import HelpDialog
from dtq_tui.dialogs.prompt import PromptDialog
from dtq_tui.feed import Feed
from dtq_tui.keys import screen_keys
from dtq_tui.screens import ALIASES, TABS, DTQScreen, modes, resolve
from dtq_tui.widgets.chrome import ConnectionBanner

if TYPE_CHECKING:
    from dtq_core.control import ConsoleAPI

#: App actions that must wait until an open dialog is answered.
_BLOCKED_BY_DIALOGS = frozenset({"goto", "jump", "toggle_log", "help", "go_back"})

_GOTO = [
    Binding(k, f"goto('{mode}')", label, show=False, id=f"goto.{mode}") for k, label, mode in TABS
]


class DTQApp(App[None]):
    """The live operations console over a :class:`~dtq_core.control.ConsoleAPI`.

    Args:
        console: Where the data comes from and actions go.
        read_only: Refuse every action that changes state.
        refresh_s: Seconds between the end of one poll and the next.
        screen: The screen to open first (a mode name or alias, e.g. ``dlq``).
    """

    CSS_PATH = "styles/dtq.tcss"
    TITLE = "DTQ"
    MODES = modes()  # type: ignore[assignment]
    BINDINGS = [
        *_GOTO,
        Binding("question_mark", "help", "Help", id="app.help"),
        Binding("colon", "jump", "Jump", show=False, id="app.jump"),
        Binding("l", "toggle_log", "Log", id="app.log"),
        Binding("escape", "go_back", "Back", show=False, id="app.back"),
        Binding("q", "quit", "Quit", id="app.quit"),
    ]

    def __init__(
        self,
        console: ConsoleAPI,
        read_only: bool = False,
        refresh_s: float = 0.33,
        *,
        screen: str = "overview",
    ) -> None:
        super().__init__()
        self.first_mode = resolve(screen) or "overview"
        self.api = console
        self.read_only = read_only
        self.feed = Feed(self, console, refresh_s, read_only)
        self.snapshot: SystemSnapshot | None = None
        self.events_tail: tuple[Event, ...] = ()
        self.show_log = False
        self.connection_error: tuple[str, float] | None = None
        self._history: list[str] = []

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """While a dialog is open, the keys that leave or cover it do nothing."""
        stack = self.screen_stack
        blocked = bool(stack) and isinstance(stack[-1], ModalScreen)
        return not (blocked and action in _BLOCKED_BY_DIALOGS)

    def on_mount(self) -> None:
        """Open the first screen and start polling."""
        self.switch_mode(self.first_mode)
        self.feed.start()

    def on_unmount(self) -> None:
        """Stop polling."""
        self.feed.stop()

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
                self.notify(
                    f"{message.label} failed: {message.error}", title="Error", severity="error"
                )
                if message.failed is not None:
                    message.failed(message.error)
            elif message.then is not None:
                message.then(message.result)
        except NoMatches:
            pass
        if message.mutated:
            self.feed.refresh_now()

    def open_tasks(self, flt: str = "") -> None:
        """The tasks screen with a filter."""
        from dtq_tui.screens.tasks import TasksScreen

        self.push_screen(TasksScreen(flt))

    def open_task(self, task_id: str) -> None:
        """One task's detail."""
        from dtq_tui.screens.task_detail import TaskDetailScreen

        self.push_screen(TaskDetailScreen(task_id, self.current_mode))

    def action_goto(self, mode: str) -> None:
        """Switch to a top-level screen."""
        if mode != self.current_mode:
            self._history.append(self.current_mode)
            self.switch_mode(mode)

    def action_go_back(self) -> None:
        """Close a drill-down, else drop the filter, else return to the previous screen."""
        if not self.screen_stack:
            return
        screen = self.screen
        if len(self.screen_stack) > 1:
            self.pop_screen()
        elif isinstance(screen, DTQScreen) and screen.clear_filter():
            return
        elif self._history:
            self.switch_mode(self._history.pop())

    def action_jump(self) -> None:
        """``:name`` jumps to a screen by name (k9s)."""

        def check(text: str) -> str | None:
            return (
                None
                if resolve(text)
                else f"no screen {text!r}: try {', '.join(t[2] for t in TABS)}"
            )

        def go(text: str | None) -> None:
            if (mode := resolve(text or "")) is not None:
                self.action_goto(mode)

        self.push_screen(
            PromptDialog(
                ":", placeholder="screen name", validate=check, suggestions=sorted(ALIASES)
            ),
            go,
        )

    def action_toggle_log(self) -> None:
        """Show or hide the event log."""
        self.show_log = not self.show_log
        if (screen := self.dtq_screen) is not None:
            screen.set_log_visible(self.show_log)

    def action_help(self) -> None:
        """The keys of this screen (and what read-only disables)."""
        if (screen := self.dtq_screen) is not None:
            own, common = screen_keys(self, screen)
            self.push_screen(HelpDialog(screen.TITLE, own, common, self.read_only))

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Palette: every screen, every action of this screen, then Textual's own."""
        for key, _label, mode in TABS:
            yield SystemCommand(
                f"Go to {self.MODES[mode].TITLE}", f"key {key}", partial(self.action_goto, mode)
            )
        if isinstance(screen, DTQScreen):
            for active in screen.active_bindings.values():
                b = active.binding
                if active.node is screen and b.description:
                    key = self.get_key_display(b)
                    yield SystemCommand(
                        f"{screen.TITLE}: {b.description}",
                        f"key {key}",
                        partial(screen.run_action, b.action),
                    )
        yield SystemCommand("Toggle the event log", "key l", self.action_toggle_log)
        yield SystemCommand("Jump to a screen by name", "key :", self.action_jump)
        yield from super().get_system_commands(screen)


def main(argv: list[str] | None = None) -> int:
    """``dtq-tui``: parse arguments, connect (or start the demo), run."""
    from dtq_tui.launch import run

    return run(argv)
