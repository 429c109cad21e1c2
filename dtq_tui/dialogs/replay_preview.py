"""The dry run of a bulk replay: every task that would be replayed, then confirm."""

from __future__ import annotations

from collections.abc import Sequence

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Static

from dtq_core.reliability.deadletter import ReplayPlan
from dtq_tui.fmt import compact_json, short_id
from dtq_tui.redact import redact


class ReplayPreviewDialog(ModalScreen[bool]):
    """Lists a dry run's plans; ``True`` means replay them for real.

    | Key | Action |
    | :- | :- |
    | `y` | Replay these tasks. |
    | `n`, `escape` | Cancel. |
    """

    BINDINGS = [
        Binding("y", "answer(True)", "Replay", id="preview.yes"),
        Binding("n", "answer(False)", "Cancel", id="preview.no"),
        Binding("escape", "answer(False)", "Cancel", show=False),
    ]

    def __init__(self, plans: Sequence[ReplayPlan], total: int, batch_limit: int) -> None:
        super().__init__(classes="dialog")
        self.plans = list(plans)
        self.total = total
        self.batch_limit = batch_limit

    def compose(self) -> ComposeResult:
        """Summary, the plan table and buttons."""
        n = len(self.plans)
        with Vertical(classes="dialog-box preview-box"):
            yield Static(f"Dry run: replay {n} of {self.total} dead tasks", classes="dialog-title")
            held = self.total - n
            summary = (
                "Each is enqueued again as a new task (replayed_from links it); the dead "
                "records stay. Attempts start from zero."
                + (
                    f" {held} more are left for a later batch (limit {self.batch_limit})."
                    if held
                    else ""
                )
            )
            yield Static(summary, classes="dialog-message")
            table: DataTable[str] = DataTable(cursor_type="row", zebra_stripes=True)
            table.add_columns("dead task", "task", "queue", "args")
            for p in self.plans:
                args = {"args": p.args, "kwargs": p.kwargs} if p.kwargs else p.args
                table.add_row(short_id(p.dead_id), p.name, p.queue, compact_json(redact(args), 40))
            yield table
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"Replay {n} (y)", id="yes", variant="primary")
                yield Button("Cancel (n)", id="no")

    def on_mount(self) -> None:
        """Focus Cancel."""
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Answer by button."""
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        """Answer by key."""
        self.dismiss(yes)
