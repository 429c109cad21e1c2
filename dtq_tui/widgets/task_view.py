"""One task record rendered for the detail view: args redacted, attempts with tracebacks."""

from __future__ import annotations

import difflib
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from dtq_core.task import TaskRecord, TaskState
from dtq_tui.fmt import ago, compact_json, duration, pretty_json, stamp
from dtq_tui.palette import Palette
from dtq_tui.plain import plain
from dtq_tui.redact import redact


def decoded_args(rec: TaskRecord) -> tuple[list[Any] | None, dict[str, Any] | None, str | None]:
    """``(args, kwargs, problem)``: the record's arguments, or why they cannot be shown."""
    try:
        msg = rec.message()
        return list(msg["args"]), dict(msg["kwargs"]), None
    except Exception as exc:
        return None, None, f"the payload cannot be decoded ({type(exc).__name__}: {exc})"


def deadline(rec: TaskRecord) -> float | None:
    """When a running task's time limit runs out (``None`` without a limit)."""
    if rec.state is not TaskState.RUNNING or rec.started_at is None or not rec.time_limit:
        return None
    return rec.started_at + rec.time_limit


def render_task(rec: TaskRecord, now: float, pal: Palette) -> RenderableType:
    """Every section of the detail view."""
    parts: list[RenderableType] = []
    head = Text()
    head.append_text(_long(rec.name, style="bold"))
    head.append("  ")
    head.append_text(pal.state_text(rec.state.value))
    head.append_text(_long(f"  queue {rec.queue}  priority {rec.priority}  id {rec.id}"))
    parts.append(head)

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    _row(facts, "created", f"{stamp(rec.created_at)} ({ago(rec.created_at, now)})")
    _row(facts, "enqueued", f"{stamp(rec.enqueued_at)} ({ago(rec.enqueued_at, now)})")
    if rec.eta is not None:
        _row(facts, "due", f"{stamp(rec.eta)} ({ago(rec.eta, now)})")
    if rec.started_at is not None:
        _row(facts, "started", f"{stamp(rec.started_at)} ({ago(rec.started_at, now)})")
    if rec.finished_at is not None and rec.started_at is not None:
        _row(
            facts,
            "finished",
            f"{stamp(rec.finished_at)} after {duration(rec.finished_at - rec.started_at)}",
        )
    elif rec.state is TaskState.RUNNING and rec.started_at is not None:
        _row(facts, "running for", duration(now - rec.started_at))
    dl = deadline(rec)
    if dl is not None:
        left = dl - now
        style = pal.role("bad" if left < 0 else "warn" if left < 5 else "good")
        _row(
            facts,
            "deadline",
            Text.assemble(
                f"{stamp(dl)} (time limit {duration(rec.time_limit)}) ",
                (
                    f"{'overdue by ' + duration(-left) if left < 0 else duration(left) + ' left'}",
                    style,
                ),
            ),
        )
    if rec.state is TaskState.RUNNING and rec.lease_deadline is not None:
        _row(facts, "lease until", f"{stamp(rec.lease_deadline)} ({ago(rec.lease_deadline, now)})")
    _row(
        facts,
        "attempts",
        f"{rec.attempt} of {rec.max_retries + 1}, {rec.deliveries} deliveries"
        + (f", worker {rec.worker}" if rec.worker else ""),
    )
    if rec.dead_reason:
        _row(facts, "dead because", _long(rec.dead_reason, style=pal.role("bad")))
    if rec.replayed_from:
        _row(facts, "replay of", rec.replayed_from)
    if rec.replayed_to:
        _row(facts, "replayed as", ", ".join(rec.replayed_to))
    if rec.workflow:
        _row(facts, "workflow", rec.workflow)
    if rec.dedup_key:
        _row(facts, "dedup key", rec.dedup_key)
    parts += [Text(""), facts]

    args, kwargs, problem = decoded_args(rec)
    parts.append(_section("arguments (sensitive values redacted)"))
    if problem:
        parts.append(_long(problem, style=pal.role("bad")))
    else:
        parts.append(_long(_json({"args": redact(args), "kwargs": redact(kwargs)})))
    if rec.state is TaskState.SUCCESS:
        parts += [_section("result"), _long(_json(redact(rec.result)))]

    attempts = rec.attempts()
    if attempts:
        parts.append(_section("attempt history"))
        for a in attempts:
            line = Text()
            line.append(f"#{a.number} ", "bold")
            line.append_text(pal.state_text(a.outcome))
            took = (
                duration(a.finished_at - a.started_at)
                if a.finished_at is not None and a.started_at is not None
                else "-"
            )
            line.append_text(
                _long(f"  {stamp(a.started_at)}  took {took}  worker {a.worker or '-'}")
            )
            parts.append(line)
            if a.error is not None:
                parts.append(_long(f"   {a.error.type}: {a.error.message}", style=pal.role("bad")))
                if a.error.traceback:
                    parts.append(
                        _long(_indent(a.error.traceback.rstrip()), style=pal.role("muted"))
                    )
    elif rec.error is not None:
        parts += [
            _section("error"),
            _long(f"{rec.error.type}: {rec.error.message}", style=pal.role("bad")),
        ]
        if rec.error.traceback:
            parts.append(_long(_indent(rec.error.traceback.rstrip()), style=pal.role("muted")))

    if rec.edits:
        parts.append(_section("edit trail"))
        for e in rec.edits:
            head = Text(f"{stamp(e.get('at'))} ", "bold")
            head.append_text(_long(f"note: {e.get('note') or '-'}"))
            parts.append(head)
            before = {"args": redact(e.get("old_args")), "kwargs": redact(e.get("old_kwargs"))}
            after = {"args": redact(e.get("args")), "kwargs": redact(e.get("kwargs"))}
            parts.append(args_diff(before, after, pal))
    return Group(*parts)


def args_diff(before: Any, after: Any, pal: Palette) -> Text:
    """What an edit changed, as a unified diff of the indented JSON (``-`` old, ``+`` new).

    Unchanged lines are kept around the changes (up to two), so the place is clear.
    """
    old = pretty_json(before).splitlines()
    new = pretty_json(after).splitlines()
    text = Text()
    lines = list(difflib.unified_diff(old, new, lineterm="", n=2))[2:]  # drop ---/+++
    if not lines:
        return _long("   (no change)", style=pal.role("muted"))
    for i, line in enumerate(lines):
        if line.startswith("@@"):
            continue
        role = {"-": "bad", "+": "good"}.get(line[:1], "muted")
        text.append_text(_long(f"   {line}", style=pal.role(role)))
        if i < len(lines) - 1:
            text.append("\n")
    return text


def _row(table: Table, label: str, value: Any) -> None:
    """A fact row; a ``str`` value is data: literal text, never markup."""
    table.add_row(label, _long(value) if isinstance(value, str) else value)


def _long(value: Any, style: Any = "") -> Text:
    """Data shown whole (the detail view is where long values are read)."""
    return plain(value, style=style, multiline=True, limit=None)


def _json(value: Any) -> str:
    """One line when it is short, indented otherwise."""
    line = compact_json(value, 10_000)
    return line if len(line) <= 76 else pretty_json(value)


def _section(title: str) -> Text:
    return Text(f"\n── {title} ", style="bold")


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())
