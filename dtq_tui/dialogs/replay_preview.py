"""The dry run of a bulk replay: every task that would be replayed, then confirm."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Static

from dtq_core.reliability.deadletter import ReplayPlan
from dtq_tui.dialogs.confirm import ALT
from dtq_tui.fmt import compact_json, short_id
from dtq_tui.plain import plain
from dtq_tui.redact import redact


class ReplayPreviewDialog(ModalScreen[bool | str]):
    """Lists a dry run's plans; ``True`` replays the new ones, :data:`ALT` all of them.

    Dead tasks replayed before are listed with where they went, and left out unless the
    operator chooses "replay again too".

    | Key | Action |
    | :- | :- |
    | `y` | Replay the tasks not replayed before. |
    | `a` | Replay them all, those replayed before again too. |
    | `n`, `escape` | Cancel. |
    """

    #: Cancel has the focus (not set from ``on_mount``: a dialog answered while it
    #: mounts has no buttons left to query).
    AUTO_FOCUS = "#no"

    BINDINGS = [
        Binding("y", "answer(True)", "Replay", id="preview.yes"),
        Binding("a", "again", "Replay again too", show=False, id="preview.again"),
        Binding("n", "answer(False)", "Cancel", id="preview.no"),
        Binding("escape", "answer(False)", "Cancel", show=False),
    ]

    def __init__(self, plans: Sequence[ReplayPlan], total: int, batch_limit: int) -> None:
        super().__init__(classes="dialog")
        self.plans = list(plans)
        self.total = total
        self.batch_limit = batch_limit

    @property
    def fresh(self) -> list[ReplayPlan]:
        """Plans of dead tasks never replayed."""
        return [p for p in self.plans if not p.skipped]

    @property
    def before(self) -> list[ReplayPlan]:
        """Plans of dead tasks replayed before (left out unless "again")."""
        return [p for p in self.plans if p.skipped]

    def compose(self) -> ComposeResult:
        """Summary, the plan table and buttons."""
        n, k = len(self.fresh), len(self.before)
        queues = sorted({p.queue for p in self.plans})
        with Vertical(classes="dialog-box preview-box"):
            yield Static(
                plain(
                    f"Dry run: would replay {n} of {self.total} dead task(s) "
                    f"(queue{'s' if len(queues) != 1 else ''} {', '.join(queues)})"
                ),
                classes="dialog-title",
            )
            held = self.total - len(self.plans)
            summary = (
                "Each is enqueued again as a new task (replayed_from links it); the dead "
                "records stay. Attempts start from zero."
                + (f" {k} replayed before are left out unless you press a." if k else "")
                + (
                    f" {held} more are left for a later batch (limit {self.batch_limit})."
                    if held
                    else ""
                )
            )
            yield Static(plain(summary, multiline=True), classes="dialog-message")
            table: DataTable[Text] = DataTable(cursor_type="row", zebra_stripes=True)
            table.add_columns("dead task", "task", "queue", "args", "replayed before")
            for p in self.plans:
                args = {"args": p.args, "kwargs": p.kwargs} if p.kwargs else p.args
                table.add_row(
                    plain(short_id(p.dead_id)),
                    plain(p.name, 30),
                    plain(p.queue, 20),
                    plain(compact_json(redact(args), 40)),
                    plain(", ".join(short_id(i) for i in p.replayed_to) or "-", 30),
                )
            yield table
            with Horizontal(classes="dialog-buttons"):
                yield Button(f"Replay {n} (y)", id="yes", variant="primary", disabled=not n)
                if k:
                    yield Button(f"Replay all {n + k}, again too (a)", id="alt", variant="warning")
                yield Button("Cancel (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        """Answer by button."""
        if event.button.id == "alt":
            self.dismiss(ALT)
        else:
            self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        """Answer by key (``y`` with nothing new to replay does nothing)."""
        if yes and not self.fresh:
            return
        self.dismiss(yes)

    def action_again(self) -> None:
        """Replay every planned task, those replayed before again too."""
        if self.before:
            self.dismiss(ALT)
