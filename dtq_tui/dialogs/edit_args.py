"""``e`` on a dead task: edit its args as JSON, validate, note why, replay with them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static, TextArea

from dtq_tui.plain import plain
from dtq_tui.redact import REDACTED, redact, restore


@dataclass(frozen=True, slots=True)
class ArgsEdit:
    """What the editor returns: the new arguments and the note for the edit trail."""

    args: list[Any]
    kwargs: dict[str, Any]
    note: str


def parse_args_json(text: str) -> tuple[list[Any], dict[str, Any]]:
    """``{"args": [...], "kwargs": {...}}`` -> ``(args, kwargs)``.

    Raises:
        ValueError: Naming what is wrong (bad JSON with its line, or the wrong shape).
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    if not isinstance(data, dict):
        raise ValueError('write an object: {"args": [...], "kwargs": {...}}')
    unknown = set(data) - {"args", "kwargs"}
    if unknown:
        raise ValueError(f"unknown key {sorted(unknown)[0]!r}: only args and kwargs")
    args = data.get("args", [])
    kwargs = data.get("kwargs", {})
    if not isinstance(args, list):
        raise ValueError('"args" must be a JSON array, e.g. [1, 2]')
    if not isinstance(kwargs, dict):
        raise ValueError('"kwargs" must be a JSON object, e.g. {"x": 1}')
    return args, kwargs


class EditArgsDialog(ModalScreen[ArgsEdit | None]):
    """A JSON editor for one dead task's arguments, with a required note.

    Sensitive values are shown as ``«redacted»``; leaving one as is keeps the original.

    | Key | Action |
    | :- | :- |
    | `ctrl+s` | Validate and replay with these args. |
    | `escape` | Cancel. |
    """

    BINDINGS = [
        Binding("ctrl+s", "save", "Replay edited", id="edit.save"),
        Binding("escape", "cancel", "Cancel", id="edit.cancel"),
    ]

    def __init__(self, task_label: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        super().__init__(classes="dialog")
        self.task_label = task_label
        self.original_args = args
        self.original_kwargs = kwargs
        shown = {"args": redact(args), "kwargs": redact(kwargs)}
        self.initial_text = json.dumps(shown, indent=2, ensure_ascii=False, default=repr)

    def compose(self) -> ComposeResult:
        """Editor, note, error line and buttons."""
        with Vertical(classes="dialog-box editor-box"):
            yield Static(plain(f"Edit args and replay: {self.task_label}"), classes="dialog-title")
            yield TextArea(
                self.initial_text,
                id="args-editor",
                show_line_numbers=True,
                tab_behavior="focus",  # tab moves to the note; the JSON needs no tabs
            )
            yield Input(placeholder="note for the edit trail (required)", id="note")
            yield Static("", id="edit-error", classes="dialog-error", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Replay edited (ctrl+s)", id="save", variant="primary")
                yield Button("Cancel (esc)", id="cancel")
            if REDACTED in self.initial_text:
                yield Static(
                    f"{REDACTED} values are kept as they were unless you replace them.",
                    classes="dialog-help",
                    markup=False,
                )

    def on_mount(self) -> None:
        """Start in the editor (its cursor still when headless: tests, screenshots)."""
        blink = not self.app.is_headless
        for editor in self.query(TextArea):  # none left when answered while mounting
            editor.cursor_blink = blink
            editor.focus()
        for note in self.query("#note").results(Input):
            note.cursor_blink = blink

    def validate(self) -> ArgsEdit | str:
        """The edit, or what is wrong with it."""
        try:
            args, kwargs = parse_args_json(self.query_one(TextArea).text)
        except ValueError as exc:
            return str(exc)
        note = self.query_one("#note", Input).value.strip()
        if not note:
            return "write a note: it is recorded with the edit (who changed what and why)"
        return ArgsEdit(
            restore(args, self.original_args), restore(kwargs, self.original_kwargs), note
        )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Save or cancel by button."""
        if event.button.id == "save":
            self.action_save()
        else:
            self.action_cancel()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        """Enter in the note field saves."""
        event.stop()
        self.action_save()

    def action_save(self) -> None:
        """Validate; answer the edit or show the error."""
        result = self.validate()
        error = self.query_one("#edit-error", Static)
        if isinstance(result, str):
            error.update(plain(f"✘ {result}", multiline=True))
            if result.startswith("write a note"):
                self.query_one("#note", Input).focus()
            return
        self.dismiss(result)

    def action_cancel(self) -> None:
        """Leave without replaying."""
        self.dismiss(None)
