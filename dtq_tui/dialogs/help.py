"""``?``: every key of the current screen, and what read-only mode disables."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from dtq_tui.plain import plain

#: (keys, description, changes state)
HelpRow = tuple[str, str, bool]


class HelpDialog(ModalScreen[None]):
    """The keys of one screen, then the keys that work everywhere."""

    BINDINGS = [
        Binding("escape", "close", "Close", show=False),
        Binding("question_mark", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(
        self,
        screen_title: str,
        screen_keys: Sequence[HelpRow],
        global_keys: Sequence[HelpRow],
        read_only: bool,
    ) -> None:
        super().__init__(classes="dialog")
        self.screen_title = screen_title
        self.screen_keys = list(screen_keys)
        self.global_keys = list(global_keys)
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        """Two key tables."""
        with Vertical(classes="dialog-box help-box"):
            yield Static(plain(f"Keys: {self.screen_title}"), classes="dialog-title")
            if self.read_only:
                yield Static(
                    "READ-ONLY: keys marked ✎ change state and are disabled (--read-only).",
                    classes="dialog-error",
                    markup=False,
                )
            with VerticalScroll():
                yield Static(self._table(self.screen_keys, "This screen"))
                yield Static(self._table(self.global_keys, "Everywhere"))
            yield Static(
                "esc closes · ctrl+p finds any command", classes="dialog-help", markup=False
            )

    def _table(self, rows: Sequence[HelpRow], title: str) -> Table:
        table = Table(title=title, title_justify="left", box=None, expand=True, show_header=False)
        table.add_column("key", style="bold", no_wrap=True, width=12)
        table.add_column("what", ratio=1)
        for keys, desc, mutates in rows:
            label = plain(desc, multiline=True)
            if mutates:
                label.append("  ✎", style="bold")
                if self.read_only:
                    label.append(" disabled", style="italic")
            table.add_row(plain(keys), label)
        if not rows:
            table.add_row("", Text("no keys of its own", style="italic"))
        return table

    def action_close(self) -> None:
        """Close the help."""
        self.dismiss(None)
