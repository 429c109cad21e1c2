"""Replay, edit-and-replay and purge flows shared by the dead-letter and detail screens.

Every one asks first, in a dialog naming the ids (or their count) and the group or
queue, in the CLI's ``--dry-run`` words ("would replay 3 dead task(s)"). A dead task
that was replayed before is left out unless the operator chooses "replay again": the
engine enforces it (``again``), the dialog says it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dtq_core.reliability.deadletter import ReplayPlan
from dtq_core.task import TaskRecord
from dtq_tui.dialogs.confirm import ALT, ConfirmDialog
from dtq_tui.dialogs.edit_args import ArgsEdit, EditArgsDialog
from dtq_tui.dialogs.replay_preview import ReplayPreviewDialog
from dtq_tui.screens.base import DTQScreen
from dtq_tui.widgets.task_view import decoded_args

#: The most tasks one bulk replay sends (the rest wait for the next batch).
BATCH_LIMIT = 100

#: Ids named in a dialog before "and N more".
NAMED_IDS = 5

Done = Callable[[Any], None]


def tasks_word(n: int) -> str:
    """``1 dead task`` / ``3 dead tasks`` (the CLI says ``dead task(s)``)."""
    return f"{n} dead task{'s' if n != 1 else ''}"


def name_ids(ids: Sequence[str], limit: int = NAMED_IDS) -> str:
    """``a, b, c`` or ``a, b, c, d, e and 7 more``."""
    ids = list(ids)
    shown = ", ".join(ids[:limit])
    return shown if len(ids) <= limit else f"{shown} and {len(ids) - limit} more"


def queues_of(plans: Sequence[ReplayPlan]) -> str:
    """``queue payments`` / ``queues bulk, payments``."""
    names = sorted({p.queue for p in plans})
    return f"queue{'s' if len(names) != 1 else ''} {', '.join(names)}"


def replay_message(plans: Sequence[ReplayPlan], what: str) -> tuple[str, str, bool]:
    """``(title, message, only_again)`` for the replay dialog, from a dry run's plans."""
    fresh = [p for p in plans if not p.skipped]
    before = [p for p in plans if p.skipped]
    lines = []
    if fresh:
        lines.append(
            f"would replay {tasks_word(len(fresh))} ({what}) from {queues_of(fresh)}: "
            f"{name_ids([p.dead_id for p in fresh])}."
        )
        lines.append(
            "Each is enqueued again as a new task (replayed_from links it); the dead records stay."
        )
    if before:
        where = "; ".join(f"{p.dead_id} as {', '.join(p.replayed_to)}" for p in before[:3])
        more = f" and {len(before) - 3} more" if len(before) > 3 else ""
        lines.append(
            f"{tasks_word(len(before))} already replayed ({where}{more}): "
            + ("left out unless you choose 'Replay again too'." if fresh else "replay again?")
        )
    if fresh:
        return f"Replay {tasks_word(len(fresh))}?", "\n".join(lines), False
    return f"Replay {tasks_word(len(before))} again?", "\n".join(lines), True


class DeadActions(DTQScreen):
    """A screen that can replay, edit and purge dead tasks through the feed."""

    batch_limit: int = BATCH_LIMIT

    def replay_now(self, ids: Sequence[str], then: Done | None = None, again: bool = False) -> None:
        """Replay ``ids`` (those replayed before only with ``again``); report what happened."""
        ids = list(ids)

        def done(plans: Any) -> None:
            plans = list(plans or [])
            made = [p for p in plans if not p.skipped]
            skipped = [p for p in plans if p.skipped]
            msg = f"replayed {tasks_word(len(made))}"
            if len(made) == 1:
                msg += f": {made[0].dead_id} as {made[0].new_id}"
            if skipped:
                msg += f"; {len(skipped)} left out (replayed before)"
            self.notify(msg, title="Replay")
            if then is not None:
                then(plans)

        self.feed.replay(ids, done, again=again)

    def replay_confirmed(self, ids: Sequence[str], what: str, then: Done | None = None) -> None:
        """Dry-run ``ids``, ask (naming them), then replay; "again" only if chosen."""
        ids = list(ids)
        if not ids:
            self.notify("nothing selected to replay", severity="warning")
            return

        def planned(plans: Any) -> None:
            plans = list(plans or [])
            title, message, only_again = replay_message(plans, what)
            fresh = [p.dead_id for p in plans if not p.skipped]
            some_before = any(p.skipped for p in plans)

            def answered(choice: bool | str | None) -> None:
                if choice is True and not only_again:
                    self.replay_now(fresh, then)
                elif choice is ALT or (choice is True and only_again):
                    self.replay_now([p.dead_id for p in plans], then, again=True)
                else:
                    self.notify("replay cancelled")

            self.app.push_screen(
                ConfirmDialog(
                    title,
                    message,
                    yes="Replay again" if only_again else f"Replay {len(fresh)}",
                    alt="Replay again too" if some_before and not only_again else None,
                    danger=only_again,
                ),
                answered,
            )

        self.feed.replay(ids, planned, dry_run=True)

    def replay_with_preview(
        self, ids: Sequence[str], total: int | None = None, then: Done | None = None
    ) -> None:
        """Dry-run up to the batch limit, show the plan, replay on confirmation."""
        batch = list(ids)[: self.batch_limit]
        total = len(ids) if total is None else total
        if not batch:
            self.notify("nothing to replay", severity="warning")
            return

        def planned(plans: Any) -> None:
            plans = list(plans or [])

            def answered(choice: bool | str | None) -> None:
                if choice is True:
                    fresh = [p.dead_id for p in plans if not p.skipped]
                    if fresh:
                        self.replay_now(fresh, then)
                    else:
                        self.notify("nothing replayed: every one was replayed before")
                elif choice == ALT:
                    self.replay_now([p.dead_id for p in plans], then, again=True)

            self.app.push_screen(ReplayPreviewDialog(plans, total, self.batch_limit), answered)

        self.feed.replay(batch, planned, dry_run=True)

    def edit_and_replay(self, rec: TaskRecord, then: Done | None = None) -> None:
        """Open the args editor for a dead task; replay with the edit and its note."""
        args, kwargs, problem = decoded_args(rec)
        if problem:
            self.notify(f"{problem}: start from empty args", severity="warning", markup=False)

        def answered(edit: ArgsEdit | None) -> None:
            if edit is None:
                return

            def done(plans: Any) -> None:
                plan = plans[0] if plans else None
                if plan is not None and plan.skipped:
                    self.notify(
                        f"{rec.id} not replayed: the args are unchanged and it was replayed "
                        f"before as {', '.join(plan.replayed_to)} (use r and 'Replay again')",
                        severity="warning",
                    )
                elif plan is not None and not plan.edited:
                    self.notify(
                        f"replayed {rec.id} as {plan.new_id} (args unchanged: a plain replay)",
                        title="Replay",
                    )
                else:
                    new = plan.new_id if plan else None
                    self.notify(
                        f"replayed {rec.id} with edited args as {new}", title="Replay", markup=False
                    )
                if then is not None:
                    then(plans)

            self.feed.replay([rec.id], done, args=edit.args, kwargs=edit.kwargs, note=edit.note)

        self.app.push_screen(
            EditArgsDialog(f"{rec.name} {rec.id}", args or [], kwargs or {}), answered
        )

    def purge_confirmed(self, ids: Sequence[str], what: str, then: Done | None = None) -> None:
        """Ask to delete ``ids`` (naming them and what they are), then purge."""
        ids = list(ids)
        if not ids:
            self.notify("nothing to purge", severity="warning")
            return
        n = len(ids)

        def answered(yes: bool | str | None) -> None:
            if yes is not True:
                self.notify("purge cancelled")
                return

            def done(count: Any) -> None:
                self.notify(f"purged {tasks_word(int(count or 0))}", title="Purge", markup=False)
                if then is not None:
                    then(count)

            self.feed.purge(ids, done)

        self.app.push_screen(
            ConfirmDialog(
                f"Purge {tasks_word(n)}?",
                f"would purge {tasks_word(n)} ({what}): {name_ids(ids)}.\n"
                "This deletes the dead records for good: they cannot be replayed afterwards.",
                yes=f"Purge {n}",
                danger=True,
            ),
            answered,
        )
