"""One task record rendered for the detail view: args redacted, attempts with tracebacks."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from dtq_core.task import TaskRecord, TaskState
from dtq_tui.fmt import ago, compact_json, duration, pretty_json, stamp
from dtq_tui.palette import Palette
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
    head.append(rec.name, "bold")
    head.append("  ")
    head.append_text(pal.state_text(rec.state.value))
    head.append(f"  queue {rec.queue}  priority {rec.priority}  id {rec.id}")
    parts.append(head)

    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold", no_wrap=True)
    facts.add_column()
    facts.add_row("created", f"{stamp(rec.created_at)} ({ago(rec.created_at, now)})")
    facts.add_row("enqueued", f"{stamp(rec.enqueued_at)} ({ago(rec.enqueued_at, now)})")
    if rec.eta is not None:
        facts.add_row("due", f"{stamp(rec.eta)} ({ago(rec.eta, now)})")
    if rec.started_at is not None:
        facts.add_row("started", f"{stamp(rec.started_at)} ({ago(rec.started_at, now)})")
    if rec.finished_at is not None and rec.started_at is not None:
        facts.add_row(
            "finished",
            f"{stamp(rec.finished_at)} after {duration(rec.finished_at - rec.started_at)}",
        )
    elif rec.state is TaskState.RUNNING and rec.started_at is not None:
        facts.add_row("running for", duration(now - rec.started_at))
    dl = deadline(rec)
    if dl is not None:
        left = dl - now
        style = pal.role("bad" if left < 0 else "warn" if left < 5 else "good")
        facts.add_row(
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
        facts.add_row(
            "lease until", f"{stamp(rec.lease_deadline)} ({ago(rec.lease_deadline, now)})"
        )
    facts.add_row(
        "attempts",
        f"{rec.attempt} of {rec.max_retries + 1}, {rec.deliveries} deliveries"
        + (f", worker {rec.worker}" if rec.worker else ""),
    )
    if rec.dead_reason:
        facts.add_row("dead because", Text(rec.dead_reason, style=pal.role("bad")))
    if rec.replayed_from:
        facts.add_row("replay of", rec.replayed_from)
    if rec.replayed_to:
        facts.add_row("replayed as", ", ".join(rec.replayed_to))
    if rec.workflow:
        facts.add_row("workflow", rec.workflow)
    if rec.dedup_key:
        facts.add_row("dedup key", rec.dedup_key)
    parts += [Text(""), facts]

    args, kwargs, problem = decoded_args(rec)
    parts.append(_section("arguments (sensitive values redacted)"))
    if problem:
        parts.append(Text(problem, style=pal.role("bad")))
    else:
        parts.append(Text(_json({"args": redact(args), "kwargs": redact(kwargs)})))
    if rec.state is TaskState.SUCCESS:
        parts += [_section("result"), Text(_json(redact(rec.result)))]

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
            line.append(f"  {stamp(a.started_at)}  took {took}  worker {a.worker or '-'}")
            parts.append(line)
            if a.error is not None:
                parts.append(Text(f"   {a.error.type}: {a.error.message}", style=pal.role("bad")))
                if a.error.traceback:
                    parts.append(Text(_indent(a.error.traceback.rstrip()), style=pal.role("muted")))
    elif rec.error is not None:
        parts += [
            _section("error"),
            Text(f"{rec.error.type}: {rec.error.message}", pal.role("bad")),
        ]
        if rec.error.traceback:
            parts.append(Text(_indent(rec.error.traceback.rstrip()), style=pal.role("muted")))

    if rec.edits:
        parts.append(_section("edit trail"))
        for e in rec.edits:
            parts.append(
                Text.assemble(
                    (f"{stamp(e.get('at'))} ", "bold"),
                    f"note: {e.get('note') or '-'}",
                )
            )
            before = {"args": redact(e.get("old_args")), "kwargs": redact(e.get("old_kwargs"))}
            after = {"args": redact(e.get("args")), "kwargs": redact(e.get("kwargs"))}
            parts.append(Text(f"   before {pretty_json(before)}".replace("\n", " ")))
            parts.append(Text(f"   after  {pretty_json(after)}".replace("\n", " ")))
    return Group(*parts)


def _json(value: Any) -> str:
    """One line when it is short, indented otherwise."""
    line = compact_json(value, 10_000)
    return line if len(line) <= 76 else pretty_json(value)


def _section(title: str) -> Text:
    return Text(f"\n── {title} ", style="bold")


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())
