"""Dead letters: the hook that buries exhausted tasks, and grouping failures by cause."""

from __future__ import annotations

import builtins
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dtq_core.backends.base import NewTask
from dtq_core.codec import decode_message, encode_message
from dtq_core.errors import ConfigError, SerializationError, TaskNotFound
from dtq_core.filters import TaskFilter, parse_filter
from dtq_core.hooks import FailureDecision, Hook, RunContext
from dtq_core.ids import new_id as make_id
from dtq_core.redact import restore
from dtq_core.task import TaskRecord, TaskState

if TYPE_CHECKING:
    from dtq_core.broker import Broker

_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?\d+(?:\.\d+)?")
_HEX = re.compile(r"\b(?:0x)?[0-9a-fA-F]{8,}\b")
_UUID = re.compile(
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
#: "lease expired on worker host:pid:t3": tasks lost on any worker group together.
_WORKER = re.compile(r"\bon worker \S+")


class DeadLetterHook(Hook):
    """Sends a failed task that will not be retried to the dead-letter queue.

    The task option ``dead_letter=False`` keeps such a task FAILED instead.
    """

    options = frozenset({"dead_letter"})

    def on_failure(self, ctx: RunContext, exc: BaseException, decision: FailureDecision) -> None:
        """Bury when no retry was decided."""
        if decision.retry_at is not None or decision.dead_reason is not None:
            return
        if not ctx.option("dead_letter", True):
            return
        decision.dead_reason = decision.notes[-1] if decision.notes else "failed"


def normalise_message(message: str) -> str:
    """A failure message with its variable parts folded, so alike failures group.

    Worker ids, UUIDs, long hex ids, quoted strings and numbers become placeholders.
    """
    text = _WORKER.sub("on worker <worker>", message)
    text = _UUID.sub("<uuid>", text)
    text = _HEX.sub("<hex>", text)
    text = _QUOTED.sub("<str>", text)
    text = _NUMBER.sub("<n>", text)
    return " ".join(text.split())[:200]


def cause_key(rec: TaskRecord) -> tuple[str, str, str]:
    """``(task name, exception type, normalised message)`` of a dead task."""
    if rec.error is None:
        return rec.name, "", normalise_message(rec.dead_reason or "")
    return rec.name, rec.error.type, normalise_message(rec.error.message)


@dataclass(frozen=True, slots=True)
class FailureGroup:
    """Dead tasks that failed for the same cause."""

    task: str
    exc_type: str
    message: str
    count: int
    first_seen: float
    last_seen: float
    task_ids: tuple[str, ...]
    reasons: tuple[str, ...]
    #: For tasks lost with their worker process (``worker_lost``): the names of the
    #: tasks that were running beside them, with how many of the group's tasks each
    #: was beside, most first. A task that killed its process is beside all of them.
    beside: tuple[tuple[str, int], ...] = ()
    #: Ids of the group's dead tasks that were replayed already (a subset of task_ids).
    replayed_ids: tuple[str, ...] = ()

    @property
    def replayed(self) -> int:
        """How many of the group's dead tasks were replayed already."""
        return len(self.replayed_ids)

    @property
    def key(self) -> str:
        """A stable text key for the group."""
        return f"{self.task}|{self.exc_type}|{self.message}"

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form."""
        return {
            "key": self.key,
            "task": self.task,
            "exc_type": self.exc_type,
            "message": self.message,
            "count": self.count,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "task_ids": list(self.task_ids),
            "reasons": list(self.reasons),
            "beside": [list(b) for b in self.beside],
            "replayed_ids": list(self.replayed_ids),
        }


def group_by_cause(records: list[TaskRecord]) -> list[FailureGroup]:
    """Group dead records by :func:`cause_key`, largest group first."""
    groups: dict[tuple[str, str, str], list[TaskRecord]] = {}
    for rec in records:
        groups.setdefault(cause_key(rec), []).append(rec)
    out = []
    for (name, etype, msg), recs in groups.items():
        times = [r.finished_at or r.enqueued_at for r in recs]
        out.append(
            FailureGroup(
                task=name,
                exc_type=etype,
                message=msg,
                count=len(recs),
                first_seen=min(times),
                last_seen=max(times),
                task_ids=tuple(r.id for r in recs),
                reasons=tuple(sorted({r.dead_reason or "" for r in recs})),
                beside=_beside(recs),
                replayed_ids=tuple(r.id for r in recs if r.replayed_to),
            )
        )
    out.sort(key=lambda g: (-g.count, -g.last_seen, g.key))
    return out


def _beside(recs: list[TaskRecord]) -> tuple[tuple[str, int], ...]:
    """Task names running beside the group's lost tasks, by how many they were beside."""
    seen: Counter[str] = Counter()
    for rec in recs:
        if rec.error is not None:
            seen.update({name for _, name in rec.error.beside})
    return tuple(sorted(seen.items(), key=lambda kv: (-kv[1], kv[0])))


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    """One dead task and what replaying it does (or did)."""

    dead_id: str
    name: str
    queue: str
    args: list[Any] | None
    kwargs: dict[str, Any] | None
    new_id: str | None = None
    edited: bool = False
    #: The tasks this dead letter was replayed as before (empty: never replayed).
    replayed_to: tuple[str, ...] = ()
    #: Not replayed because it was replayed before and ``again`` was not asked for.
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "dead_id": self.dead_id,
            "name": self.name,
            "queue": self.queue,
            "args": self.args,
            "kwargs": self.kwargs,
            "new_id": self.new_id,
            "edited": self.edited,
            "replayed_to": list(self.replayed_to),
            "skipped": self.skipped,
        }


class DeadLetters:
    """Dead-letter operations on one broker: list, group, replay (with edits), purge."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.backend = broker.backend

    def list(
        self, flt: TaskFilter | str | None = None, offset: int = 0, limit: int = 100
    ) -> builtins.list[TaskRecord]:
        """Dead tasks matching the filter, newest first."""
        return self.backend.list_dead(_filter(flt), self.broker.clock.now(), offset, limit)

    def count(self, flt: TaskFilter | str | None = None) -> int:
        """How many dead tasks match."""
        return self.backend.count_dead(_filter(flt), self.broker.clock.now())

    def groups(
        self, flt: TaskFilter | str | None = None, limit: int = 10_000
    ) -> builtins.list[FailureGroup]:
        """Dead tasks grouped by cause, largest group first."""
        return group_by_cause(self.list(flt, 0, limit))

    def replay(
        self,
        task_ids: Sequence[str],
        *,
        args: builtins.list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        note: str = "",
        dry_run: bool = False,
        again: bool = False,
    ) -> builtins.list[ReplayPlan]:
        """Enqueue each dead task again as a new task linked by ``replayed_from``.

        ``args``/``kwargs`` replace the originals; when they differ from them the edit
        is recorded with time and ``note`` on both records (an "edit" that changes
        nothing is a plain replay). Attempts start from zero. With ``dry_run`` nothing
        changes and the plan is returned.

        A replay happens once: a dead task that was already replayed is skipped (its
        plan says ``skipped`` and where it went) unless ``again`` is given or the args
        are changed. Every face (console, CLI, RPC) goes through here, so all behave
        alike.

        Raises:
            TaskNotFound: An id is not a dead task (nothing after it is replayed).
            ConfigError: ``args`` is not a list or ``kwargs`` not a dict.
        """
        if args is not None and not isinstance(args, list):
            raise ConfigError("replay args must be a JSON array, e.g. [1, 2]")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise ConfigError('replay kwargs must be a JSON object, e.g. {"x": 1}')
        b = self.broker
        plans: builtins.list[ReplayPlan] = []
        for dead_id in task_ids:
            rec = self.backend.get(dead_id)
            if rec is None or rec.state is not TaskState.DEAD:
                raise TaskNotFound(f"no dead task {dead_id!r}")
            try:
                msg = decode_message(rec.payload)
                old_args, old_kwargs, opts = msg["args"], msg["kwargs"], msg.get("opts") or {}
            except SerializationError:
                if args is None and kwargs is None:
                    raise ConfigError(
                        f"task {dead_id}: its payload cannot be decoded; replay it with new "
                        "args (and kwargs)"
                    ) from None
                old_args, old_kwargs, opts = None, None, {}
            # Views mask secrets: a masked value the edit left as it was keeps the original.
            new_args = restore(args, old_args) if args is not None else old_args
            new_kwargs = restore(kwargs, old_kwargs) if kwargs is not None else old_kwargs
            # An "edit" that changes nothing is a plain replay (no trail, not an edit).
            edited = (args is not None and new_args != old_args) or (
                kwargs is not None and new_kwargs != (old_kwargs or {})
            )
            before = tuple(rec.replayed_to)
            skip = bool(before) and not again and not edited
            if dry_run or skip:
                plans.append(
                    ReplayPlan(
                        dead_id,
                        rec.name,
                        rec.queue,
                        new_args,
                        new_kwargs,
                        None,
                        edited,
                        before,
                        skip,
                    )
                )
                continue
            new_id = make_id()
            payload = encode_message(
                new_id, rec.name, new_args or [], new_kwargs or {}, opts, b.config.codec
            )
            now = b.clock.now()
            nt = NewTask(
                new_id,
                rec.name,
                rec.queue,
                rec.priority,
                payload,
                None,
                rec.max_retries,
                rec.time_limit,
                None,
                dead_id,
                rec.workflow,
            )
            edit = None
            if edited:
                edit = {
                    "at": now,
                    "note": note,
                    "old_args": old_args,
                    "old_kwargs": old_kwargs,
                    "args": new_args,
                    "kwargs": new_kwargs,
                }
            # A plain replay happens once, checked by the store with the write: of two
            # operators replaying the task at once, one makes the new task, the other
            # is told where it went.
            once = None if again or edited else len(before)
            done = self.backend.replay(dead_id, nt, edit, now, after=once)
            if not done:
                now_rec = self.backend.get(dead_id)
                went = tuple(now_rec.replayed_to) if now_rec is not None else before
                plans.append(
                    ReplayPlan(
                        dead_id, rec.name, rec.queue, new_args, new_kwargs, None, edited, went,
                        True,
                    )
                )  # fmt: skip
                continue
            b.emit(done, None)
            plans.append(
                ReplayPlan(
                    dead_id, rec.name, rec.queue, new_args, new_kwargs, new_id, edited, before
                )
            )
        return plans

    def replay_matching(
        self,
        flt: TaskFilter | str | None,
        limit: int = 1000,
        dry_run: bool = False,
        again: bool = False,
    ) -> builtins.list[ReplayPlan]:
        """Replay up to ``limit`` dead tasks matching the filter (oldest first).

        Dead tasks replayed before are left out (so replaying one filter twice enqueues
        nothing the second time) unless ``again``.
        """
        recs = reversed(self.list(flt, 0, 1_000_000))
        ids = [r.id for r in recs if again or not r.replayed_to][:limit]
        return self.replay(ids, dry_run=dry_run, again=again)

    def purge(self, task_ids: Sequence[str]) -> int:
        """Delete dead records; return how many."""
        return self.backend.purge(task_ids)

    def purge_matching(
        self, flt: TaskFilter | str | None, dry_run: bool = False
    ) -> builtins.list[str]:
        """Delete every dead task matching the filter; return their ids."""
        ids = [r.id for r in self.list(flt, 0, 10_000_000)]
        if not dry_run:
            self.backend.purge(ids)
        return ids


def _filter(flt: TaskFilter | str | None) -> TaskFilter:
    if isinstance(flt, TaskFilter):
        return flt
    return parse_filter(flt)
