"""A yes/no confirmation that states exactly what will happen."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from dtq_tui.plain import plain

#: What :class:`ConfirmDialog` answers when its third choice (``alt``) is taken.
ALT = "alt"


class ConfirmDialog(ModalScreen[bool | str]):
    """Dismisses with ``True`` only on an explicit yes (or :data:`ALT` for the third choice).

    The title and message are shown as literal text: they name ids, queues and breakers.

    | Key | Action |
    | :- | :- |
    | `y` | Confirm. |
    | `a` | The third choice, when there is one (e.g. "replay again too"). |
    | `n`, `escape` | Cancel. |
    """

    #: Cancel has the focus, so a stray enter never destroys anything. (Not focused from
    #: ``on_mount``: a dialog answered while it mounts has no buttons left to query.)
    AUTO_FOCUS = "#no"

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("a", "alt", "Also", show=False, id="confirm.alt"),
        Binding("n", "answer(False)", "No", id="confirm.no"),
        Binding("escape", "answer(False)", "Cancel", show=False),
    ]

    def __init__(
        self,
        title: str,
        message: str,
        yes: str = "Yes",
        danger: bool = False,
        *,
        alt: str | None = None,
    ) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.message = message
        self.yes_label = yes
        self.danger = danger
        self.alt_label = alt

    def compose(self) -> ComposeResult:
        """Title, message, buttons."""
        with Vertical(classes="dialog-box"):
            yield Static(plain(self.title_text, multiline=True), classes="dialog-title")
            yield Static(plain(self.message, multiline=True, limit=4000), classes="dialog-message")
            with Horizontal(classes="dialog-buttons"):
                yield Button(
                    plain(f"{self.yes_label} (y)"),
                    id="yes",
                    variant="error" if self.danger else "primary",
                )
                if self.alt_label:
                    yield Button(plain(f"{self.alt_label} (a)"), id="alt", variant="warning")
                yield Button("Cancel (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Answer by button."""
        if event.button.id == "alt":
            self.dismiss(ALT)
        else:
            self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        """Answer by key."""
        self.dismiss(yes)

    def action_alt(self) -> None:
        """The third choice, if offered."""
        if self.alt_label:
            self.dismiss(ALT)
