"""``v``: the whole text of the selected row, every column, nothing cut.

Columns a narrow terminal hides are listed too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from dtq_tui.plain import plain


def full_text(cell: Any) -> Any:
    """A cell as shown in full: text wraps instead of being cut; other renderables as is."""
    if isinstance(cell, Text):
        whole = cell.copy()
        whole.no_wrap = False
        whole.overflow = "fold"
        return whole
    if isinstance(cell, str):
        return plain(cell, multiline=True, limit=None)
    return cell


class RowDialog(ModalScreen[None]):
    """Every cell of one row, label and value, wrapped to the width of the terminal.

    | Key | Action |
    | :- | :- |
    | `escape`, `v`, `q` | Close. |
    """

    BINDINGS = [
        Binding("escape", "close", "Close", show=False),
        Binding("v", "close", "Close", show=False),
        Binding("q", "close", "Close", show=False),
    ]

    def __init__(self, title: str, cells: Sequence[tuple[str, Any]]) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.cells = list(cells)

    def compose(self) -> ComposeResult:
        """The row as a two-column table."""
        table = Table.grid(padding=(0, 2), expand=True)
        table.add_column(style="bold", no_wrap=True)
        table.add_column(ratio=1)
        for label, cell in self.cells:
            table.add_row(plain(label), full_text(cell))
        with Vertical(classes="dialog-box help-box"):
            yield Static(plain(self.title_text), classes="dialog-title")
            with VerticalScroll():
                yield Static(table)
            yield Static("esc closes", classes="dialog-help", markup=False)

    def action_close(self) -> None:
        """Close."""
        self.dismiss(None)
