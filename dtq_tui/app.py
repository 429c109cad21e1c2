"""The DTQ console app: screens, keys and the feed (``dtq-tui``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.command import CommandPalette
from textual.notifications import SeverityLevel
from textual.screen import ModalScreen, Screen

from dtq_core.events import Event
from dtq_core.snapshot import SystemSnapshot
from dtq_core.text import escape_controls
from dtq_tui.dialogs.help import HelpDialog
from dtq_tui.dialogs.jump import JumpDialog
from dtq_tui.feed import Feed
from dtq_tui.keys import palette_commands, screen_keys
from dtq_tui.relay import FeedRelay
from dtq_tui.screens import TABS, DTQScreen, modes, resolve

if TYPE_CHECKING:
    from dtq_core.control import ConsoleAPI

#: App actions that wait until an open dialog is answered.
_BLOCKED_BY_DIALOGS = frozenset({"goto", "jump", "toggle_log", "help", "go_back"})


class _CommandPalette(CommandPalette):
    """Textual's palette, minus a crash: page up/down before the list is laid out.

    ``OptionList._move_page`` indexes its line map before the first layout
    (``KeyError: 0``, found by the monkey test's random walk); the key then does nothing.
    """

    def _action_command_list(self, action: str) -> None:
        with contextlib.suppress(KeyError):
            super()._action_command_list(action)


class DTQApp(FeedRelay, App[None]):
    """The live operations console over a :class:`~dtq_core.control.ConsoleAPI`.

    Args:
        console: Where the data comes from and actions go.
        read_only: Refuse every action that changes state.
        refresh_s: Seconds between the end of one poll and the next.
        screen: The screen to open first (a mode name or alias, e.g. ``dlq``).
        prewarm: Build the other screens in the background once the first one shows,
            so that the first visit to each is as quick as the next ones (default: in a
            terminal, not headless, so that tests stay still).
    """

    CSS_PATH = "styles/dtq.tcss"
    TITLE = "DTQ"
    MODES = modes()  # type: ignore[assignment]
    BINDINGS = [
        *(Binding(k, f"goto('{m}')", label, show=False, id=f"goto.{m}") for k, label, m in TABS),
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
        prewarm: bool | None = None,
    ) -> None:
        super().__init__()
        self.prewarm = prewarm
        self.first_mode = resolve(screen) or "overview"
        self.api = console
        self.read_only = read_only
        self.feed = Feed(self, console, refresh_s, read_only)
        self.snapshot: SystemSnapshot | None = None
        self.events_tail: tuple[Event, ...] = ()
        self.show_log = False
        self.connection_error: tuple[str, float] | None = None
        self._history: list[str] = []
        self._built: set[str] = set()

    def on_mount(self) -> None:
        """Open the first screen and start polling."""
        self.switch_mode(self.first_mode)
        self.feed.start()
        if self.prewarm or (self.prewarm is None and not self.is_headless):
            self.set_timer(1.0, self._prewarm_next)

    def _prewarm_next(self) -> None:
        """Mount one screen not built yet (then the next, in idle time), staying put."""
        self._built.add(self.current_mode)
        todo = [mode for _, _, mode in TABS if mode not in self._built]
        if not todo or not self.screen_stack or isinstance(self.screen, ModalScreen):
            if todo:
                self.set_timer(1.0, self._prewarm_next)
            return
        here = self.current_mode
        with self.batch_update():
            self.switch_mode(todo[0])
            self.switch_mode(here)
        self._built.add(todo[0])
        if len(todo) > 1:
            self.set_timer(0.3, self._prewarm_next)

    def on_unmount(self) -> None:
        """Stop polling."""
        self.feed.stop()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """While a dialog is open, the keys that leave or cover it do nothing."""
        stack = self.screen_stack
        blocked = bool(stack) and isinstance(stack[-1], ModalScreen)
        return not (blocked and action in _BLOCKED_BY_DIALOGS)

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
            self._built.add(mode)
            self.switch_mode(mode)

    def action_go_back(self) -> None:
        """Close a drill-down, else drop the filter, else return to the previous screen."""
        stack = self.screen_stack
        if len(stack) > 1:
            self.pop_screen()
        elif stack and isinstance(stack[-1], DTQScreen) and stack[-1].clear_filter():
            return
        elif self._history:
            self.switch_mode(self._history.pop())

    def action_jump(self) -> None:
        """``:name`` jumps to a screen by name (k9s)."""

        def go(text: str | None) -> None:
            if (mode := resolve(text or "")) is not None:
                self.action_goto(mode)

        self.push_screen(JumpDialog(), go)

    def run_on(self, mode: str, action: str, label: str = "") -> None:
        """Go to the screen of ``mode`` and run one of its actions there (the palette)."""
        self.action_goto(mode)

        def when_ready(tries: int = 0) -> None:
            screen = self.dtq_screen
            if screen is not None and mode == screen.MODE and screen.snapshot is not None:
                if screen.check_action(action.split("(", maxsplit=1)[0], ()) is None:
                    self.notify(
                        f"{label or action}: refused, the console is read-only (--read-only)",
                        title="Read-only",
                        severity="warning",
                    )
                    return
                self.call_later(screen.run_action, action)
            elif tries < 50:  # the screen composes and gets its first snapshot
                self.set_timer(0.05, lambda: when_ready(tries + 1))

        self.call_after_refresh(when_ready)

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

    def action_command_palette(self) -> None:
        """The command palette (see :class:`_CommandPalette`)."""
        app: Any = self  # is_open is typed for App[object]; an App[None] is one too
        if self.use_command_palette and not CommandPalette.is_open(app):
            self.push_screen(_CommandPalette(id="--command-palette"))

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """A toast whose text is always literal: toasts carry ids, names and errors.

        ``markup`` is accepted (Textual's widgets pass it) and ignored: nothing the
        console says is markup, and data in a toast must never be parsed as markup.
        """
        super().notify(
            escape_controls(str(message), multiline=True),
            title=escape_controls(str(title)),
            severity=severity,
            timeout=timeout,
            markup=False,
        )

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        """Palette: every screen, every action of this screen, then Textual's own."""
        yield from palette_commands(self, screen, self.action_goto, self.run_on)
        yield SystemCommand("Toggle the event log", "key l", self.action_toggle_log)
        yield SystemCommand("Jump to a screen by name", "key :", self.action_jump)
        yield from super().get_system_commands(screen)


def main(argv: list[str] | None = None) -> int:
    """``dtq-tui``: parse arguments, connect (or start the demo), run."""
    from dtq_tui.launch import run

    return run(argv)
