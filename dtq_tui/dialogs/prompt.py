"""A one-line prompt with validation (rate limits, notes, the ``:`` jump)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.suggester import SuggestFromList
from textual.widgets import Input, Static

from dtq_tui.plain import plain


class PromptDialog(ModalScreen[str | None]):
    """Dismisses with the entered text, or ``None`` on escape.

    Args:
        title: What is asked.
        value: The initial text.
        validate: Returns an error message for bad input, ``None`` when good.
        suggestions: Completions offered while typing.
        help_text: A line under the input.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel", show=False)]

    def __init__(
        self,
        title: str,
        value: str = "",
        *,
        placeholder: str = "",
        validate: Callable[[str], str | None] | None = None,
        suggestions: Sequence[str] = (),
        help_text: str = "",
    ) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.initial = value
        self.placeholder = placeholder
        self.check = validate
        self.suggestions = list(suggestions)
        self.help_text = help_text

    def compose(self) -> ComposeResult:
        """Title, input, help and error lines."""
        with Vertical(classes="dialog-box"):
            yield Static(plain(self.title_text, multiline=True), classes="dialog-title")
            yield Input(
                self.initial,
                placeholder=self.placeholder,
                suggester=SuggestFromList(self.suggestions, case_sensitive=False)
                if self.suggestions
                else None,
                id="prompt-input",
            )
            yield Static(self.help_text, classes="dialog-help", markup=False)
            yield Static("", id="prompt-error", classes="dialog-error", markup=False)

    def on_mount(self) -> None:
        """No blinking cursor when headless (tests and screenshots stay still)."""
        for field in self.query(Input):  # none left when answered while mounting
            field.cursor_blink = not self.app.is_headless

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Validate and answer."""
        event.stop()
        error = self.check(event.value) if self.check else None
        if error:
            self.query_one("#prompt-error", Static).update(plain(error, multiline=True))
            return
        self.dismiss(event.value)

    def action_cancel(self) -> None:
        """Answer nothing."""
        self.dismiss(None)
