"""Replay, edit-and-replay and purge flows shared by the dead-letter and detail screens."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dtq_core.task import TaskRecord
from dtq_tui.dialogs.confirm import ConfirmDialog
from dtq_tui.dialogs.edit_args import ArgsEdit, EditArgsDialog
from dtq_tui.dialogs.replay_preview import ReplayPreviewDialog
from dtq_tui.screens.base import DTQScreen
from dtq_tui.widgets.task_view import decoded_args

#: The most tasks one bulk replay sends (the rest wait for the next batch).
BATCH_LIMIT = 100

Done = Callable[[Any], None]


class DeadActions(DTQScreen):
    """A screen that can replay, edit and purge dead tasks through the feed."""

    batch_limit: int = BATCH_LIMIT

    def replay_now(self, ids: Sequence[str], then: Done | None = None) -> None:
        """Replay ``ids`` as they are."""
        ids = list(ids)

        def done(plans: Any) -> None:
            n = len(plans or [])
            self.notify(f"replayed {n} task{'s' if n != 1 else ''}", title="Replay")
            if then is not None:
                then(plans)

        self.feed.replay(ids, done)

    def replay_with_preview(
        self, ids: Sequence[str], total: int | None = None, then: Done | None = None
    ) -> None:
        """Dry-run up to the batch limit, show the plan, replay on confirmation."""
        batch = list(ids)[: self.batch_limit]
        total = len(ids) if total is None else total
        if not batch:
            self.notify("nothing to replay", severity="warning")
            return
        if self.dtq.read_only:
            self.feed.replay(batch, lambda _: None)  # refused with the read-only notice
            return

        def planned(plans: Any) -> None:
            def answered(yes: bool | None) -> None:
                if yes:
                    self.replay_now([p.dead_id for p in plans], then)

            self.app.push_screen(ReplayPreviewDialog(plans, total, self.batch_limit), answered)

        self.feed.replay(batch, planned, dry_run=True)

    def edit_and_replay(self, rec: TaskRecord, then: Done | None = None) -> None:
        """Open the args editor for a dead task; replay with the edit and its note."""
        if self.dtq.read_only:
            self.feed.replay([rec.id], lambda _: None)
            return
        args, kwargs, problem = decoded_args(rec)
        if problem:
            self.notify(f"{problem}: start from empty args", severity="warning")

        def answered(edit: ArgsEdit | None) -> None:
            if edit is None:
                return

            def done(plans: Any) -> None:
                new = plans[0].new_id if plans else None
                self.notify(f"replayed {rec.id} with edited args as {new}", title="Replay")
                if then is not None:
                    then(plans)

            self.feed.replay([rec.id], done, args=edit.args, kwargs=edit.kwargs, note=edit.note)

        self.app.push_screen(
            EditArgsDialog(f"{rec.name} {rec.id}", args or [], kwargs or {}), answered
        )

    def purge_confirmed(self, ids: Sequence[str], what: str, then: Done | None = None) -> None:
        """Ask to delete ``ids`` (stating how many), then purge."""
        ids = list(ids)
        if not ids:
            self.notify("nothing to purge", severity="warning")
            return
        if self.dtq.read_only:
            self.feed.purge(ids, lambda _: None)
            return
        n = len(ids)

        def answered(yes: bool | None) -> None:
            if not yes:
                self.notify("purge cancelled")
                return

            def done(count: Any) -> None:
                self.notify(f"purged {count} dead task{'s' if count != 1 else ''}", title="Purge")
                if then is not None:
                    then(count)

            self.feed.purge(ids, done)

        self.app.push_screen(
            ConfirmDialog(
                f"Purge {n} dead task{'s' if n != 1 else ''}?",
                f"This deletes {n} dead record{'s' if n != 1 else ''} ({what}) for good: "
                "they cannot be replayed afterwards.",
                yes=f"Purge {n}",
                danger=True,
            ),
            answered,
        )
