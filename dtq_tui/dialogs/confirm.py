"""A yes/no confirmation that states exactly what will happen."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmDialog(ModalScreen[bool]):
    """Dismisses with ``True`` only on an explicit yes.

    | Key | Action |
    | :- | :- |
    | `y` | Confirm. |
    | `n`, `escape` | Cancel. |
    """

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n", "answer(False)", "No", id="confirm.no"),
        Binding("escape", "answer(False)", "Cancel", show=False),
    ]

    def __init__(self, title: str, message: str, yes: str = "Yes", danger: bool = False) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.message = message
        self.yes_label = yes
        self.danger = danger

    def compose(self) -> ComposeResult:
        """Title, message, buttons."""
        with Vertical(classes="dialog-box"):
            yield Static(self.title_text, classes="dialog-title")
            yield Static(self.message, classes="dialog-message")
            with Horizontal(classes="dialog-buttons"):
                yield Button(
                    f"{self.yes_label} (y)",
                    id="yes",
                    variant="error" if self.danger else "primary",
                )
                yield Button("Cancel (n)", id="no")

    def on_mount(self) -> None:
        """Focus Cancel: a stray enter never destroys anything."""
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Answer by button."""
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        """Answer by key."""
        self.dismiss(yes)
