"""The ``/`` filter input: validates as you type, applies on enter, cancels on escape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual import on
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Input


class FilterBar(Input):
    """A one-line filter that hides itself when done.

    | Key | Action |
    | :- | :- |
    | `enter` | Apply the filter. |
    | `escape` | Close without changing the filter. |
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel filter", show=False)]

    DEFAULT_CSS = """
    FilterBar {
        display: none;
        height: 3;
        border: tall $accent;
        &.-open {
            display: block;
        }
        &.-invalid {
            border: tall $error;
        }
    }
    """

    @dataclass
    class Applied(Message):
        """The operator applied ``text`` (empty clears the filter)."""

        text: str

    @dataclass
    class Closed(Message):
        """The bar closed without applying."""

    def __init__(
        self,
        placeholder: str = "",
        validate: Callable[[str], str | None] | None = None,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(placeholder=placeholder, name=name, id=id, classes=classes)
        self._validate_text = validate
        self.applied = ""
        # Closed, it must not take focus (it would swallow every letter key).
        self.disabled = True

    def on_mount(self) -> None:
        """No blinking cursor when headless (tests and screenshots stay still)."""
        self.cursor_blink = not self.app.is_headless

    def open(self) -> None:
        """Show the bar with the current filter and focus it."""
        self.disabled = False
        self.value = self.applied
        self.add_class("-open")
        self.focus()

    def close(self) -> None:
        """Hide the bar."""
        self.remove_class("-open", "-invalid")
        self.border_subtitle = ""
        self.disabled = True

    @on(Input.Changed)
    def _check(self, event: Input.Changed) -> None:
        event.stop()
        error = self._validate_text(event.value) if self._validate_text else None
        self.set_class(error is not None, "-invalid")
        self.border_subtitle = error or ""

    @on(Input.Submitted)
    def _apply(self, event: Input.Submitted) -> None:
        event.stop()
        error = self._validate_text(event.value) if self._validate_text else None
        if error is not None:
            self.border_subtitle = error
            self.app.bell()
            return
        self.applied = event.value.strip()
        self.close()
        self.post_message(self.Applied(self.applied))

    def action_cancel(self) -> None:
        """Close without applying."""
        self.close()
        self.post_message(self.Closed())
