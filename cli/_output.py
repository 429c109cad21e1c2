"""Output: rich tables on a terminal, plain aligned text when piped, stable JSON.

``rich`` is imported only when stdout (or stderr, for progress bars) is a terminal, so
scripts that pipe ``dtq`` never pay for it.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dtq_core.text import escape_controls

#: Colours of task states on a terminal.
STATE_STYLES = {
    "PENDING": "cyan",
    "RUNNING": "bold blue",
    "SUCCESS": "green",
    "FAILED": "red",
    "RETRY": "yellow",
    "DEAD": "bold red",
    "CANCELLED": "dim",
    "ok": "green",
    "degraded": "yellow",
    "down": "bold red",
    "closed": "green",
    "open": "bold red",
    "half_open": "yellow",
    "busy": "bold blue",
    "idle": "dim",
    "success": "green",
    "failed": "red",
    "running": "bold blue",
    "waiting": "dim",
    "pending": "cyan",
    "upstream_failed": "magenta",
}


def is_tty(stream: Any = None) -> bool:
    """Whether ``stream`` (stdout by default) is a terminal; ``NO_COLOR`` never changes it."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def rich_console(stderr: bool = False) -> Any:
    """A rich ``Console`` on stdout or stderr."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=False)


# -- JSON ----------------------------------------------------------------------------------


def _default(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    to_dict = getattr(obj, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return str(obj)


def to_json(data: Any, *, compact: bool = False) -> str:
    """``data`` as JSON text; NaN and infinities become ``null`` (strict JSON)."""
    return json.dumps(
        _finite(data),
        indent=None if compact else 2,
        default=_default,
        ensure_ascii=False,
        allow_nan=False,
    )


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


def print_json(data: Any, *, compact: bool = False) -> None:
    """Print ``data`` as JSON on stdout."""
    sys.stdout.write(to_json(data, compact=compact) + "\n")
    sys.stdout.flush()


# -- formatting ----------------------------------------------------------------------------


def fmt_time(ts: float | None) -> str:
    """An epoch time as local ``YYYY-MM-DD HH:MM:SS`` (``-`` when unknown)."""
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def fmt_iso(ts: float | None) -> str | None:
    """An epoch time as ISO 8601 UTC, for JSON."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat()


def fmt_duration(seconds: float | None) -> str:
    """``0.8ms``, ``12.3s``, ``4m05s``, ``2h07m``, ``3d04h`` (``-`` when unknown)."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = max(0.0, seconds)
    if s < 1:
        return f"{s * 1000:.1f}ms"
    if s < 60:
        return f"{s:.1f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{int(s // 86400)}d{int(s % 86400 // 3600):02d}h"


def fmt_ago(ts: float | None, now: float | None = None) -> str:
    """How long ago ``ts`` was (``-`` when unknown)."""
    if ts is None:
        return "-"
    return fmt_duration((time.time() if now is None else now) - ts) + " ago"


def fmt_rate(r: float) -> str:
    """A rate per second, compact."""
    if r == 0:
        return "0"
    if r < 10:
        return f"{r:.2f}"
    return f"{r:.0f}"


def fmt_value(value: Any, width: int = 60) -> str:
    """A JSON-ish value as short text."""
    text = value if isinstance(value, str) else to_json(value, compact=True)
    return text if len(text) <= width else text[: width - 1] + "…"


# -- tables --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Column:
    """One table column: header, alignment, and a style chosen from the cell text."""

    header: str
    justify: str = "left"
    style: Callable[[str], str | None] | None = None


def state_style(text: str) -> str | None:
    """The colour of a state name."""
    return STATE_STYLES.get(text)


@dataclass(frozen=True, slots=True)
class TableBlock:
    """A table to print: headers (or :class:`Column`), rows, a title and an empty text."""

    columns: Sequence[Column | str]
    rows: Sequence[Sequence[Any]]
    title: str | None = None
    empty: str | None = None


@dataclass(frozen=True, slots=True)
class FieldsBlock:
    """``key: value`` pairs to print under an optional title."""

    pairs: Sequence[tuple[str, Any]]
    title: str | None = None


Block = TableBlock | FieldsBlock


def _cols(block: TableBlock) -> list[Column]:
    return [c if isinstance(c, Column) else Column(c) for c in block.columns]


def _cells(block: TableBlock) -> list[list[str]]:
    return [["" if v is None else escape_controls(str(v)) for v in row] for row in block.rows]


def _field(v: Any) -> str:
    """A field's value as one line of text (data: control characters escaped)."""
    return "-" if v is None else escape_controls(str(v))


def render_rich(blocks: Sequence[Block]) -> Any:
    """The blocks as one rich renderable (tables with colours)."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    for block in blocks:
        if isinstance(block, FieldsBlock):
            width = max((len(k) for k, _ in block.pairs), default=0)
            if block.title:
                parts.append(Text(block.title, style="bold underline"))
            for k, v in block.pairs:
                text = _field(v)
                line = Text(k.ljust(width) + "  ", style="bold")
                line.append(text, style=state_style(text) or "")
                parts.append(line)
            parts.append(Text(""))
            continue
        cols, cells = _cols(block), _cells(block)
        if not cells and block.empty is not None:
            head = f"{block.title}: " if block.title else ""
            parts.append(Text(head + block.empty, style="dim"))
            parts.append(Text(""))
            continue
        table = Table(title=block.title, title_justify="left", header_style="bold")
        for c in cols:
            table.add_column(c.header, justify=c.justify, overflow="fold")  # type: ignore[arg-type]
        for row in cells:
            table.add_row(
                *(
                    Text(v, style=(c.style(v) if c.style else None) or "")
                    for c, v in zip(cols, row, strict=False)
                )
            )
        parts.append(table)
    return Group(*parts)


def render_plain(blocks: Sequence[Block]) -> str:
    """The blocks as plain text: aligned columns, no colour, no box drawing."""
    out: list[str] = []
    for i, block in enumerate(blocks):
        if i and len(blocks) > 1:
            out.append("")
        if isinstance(block, FieldsBlock):
            width = max((len(k) for k, _ in block.pairs), default=0)
            if block.title:
                out.append(block.title)
            out += [f"{k.ljust(width)}  {_field(v)}" for k, v in block.pairs]
            continue
        cols, cells = _cols(block), _cells(block)
        if not cells and block.empty is not None:
            out.append(f"{block.title}: {block.empty}" if block.title else block.empty)
            continue
        widths = [len(c.header) for c in cols]
        for row in cells:
            for j, v in enumerate(row):
                widths[j] = max(widths[j], len(v))
        if block.title:
            out.append(block.title)
        out.append(_plain_row([c.header.upper() for c in cols], cols, widths))
        out.extend(_plain_row(row, cols, widths) for row in cells)
    return "\n".join(out)


def print_blocks(blocks: Sequence[Block]) -> None:
    """Print blocks: rich on a terminal, plain text when piped."""
    if is_tty():
        rich_console().print(render_rich(blocks))
    else:
        sys.stdout.write(render_plain(blocks) + "\n")
        sys.stdout.flush()


def print_table(
    columns: Sequence[Column | str],
    rows: Sequence[Sequence[Any]],
    *,
    title: str | None = None,
    empty: str | None = None,
) -> None:
    """One table (see :class:`TableBlock`)."""
    print_blocks([TableBlock(columns, rows, title, empty)])


def _plain_row(row: Sequence[str], cols: Sequence[Column], widths: Sequence[int]) -> str:
    parts = []
    for i, v in enumerate(row):
        if cols[i].justify == "right":
            parts.append(v.rjust(widths[i]))
        else:
            parts.append(v.ljust(widths[i]))
    return "  ".join(parts).rstrip()


def print_fields(pairs: Sequence[tuple[str, Any]], *, title: str | None = None) -> None:
    """``key: value`` lines (see :class:`FieldsBlock`)."""
    print_blocks([FieldsBlock(pairs, title)])


def write_line(text: str = "") -> None:
    """One line on stdout (its data's control characters escaped; newlines kept)."""
    sys.stdout.write(escape_controls(text, multiline=True) + "\n")
    sys.stdout.flush()


def info(text: str) -> None:
    """A progress or status line on stderr (silenced by ``-q``)."""
    from cli._common import state

    if not state.quiet:
        sys.stderr.write(escape_controls(text, multiline=True) + "\n")
        sys.stderr.flush()


# -- progress ------------------------------------------------------------------------------


class _NoProgress:
    def advance(self, n: int = 1) -> None:
        pass


class _RichProgress:
    def __init__(self, progress: Any, task: Any) -> None:
        self._progress = progress
        self._task = task

    def advance(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)


@contextmanager
def progress(total: int, description: str) -> Iterator[_NoProgress | _RichProgress]:
    """A progress bar on stderr for a bulk action (nothing when piped or ``-q``)."""
    from cli._common import state

    if state.quiet or not is_tty(sys.stderr) or os.environ.get("DTQ_NO_PROGRESS"):
        yield _NoProgress()
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=rich_console(stderr=True),
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=total)
        yield _RichProgress(bar, task)


def confirm(question: str, *, yes: bool, action: str) -> None:
    """Ask ``question`` unless ``yes``; refuse (exit 2) when there is no terminal to ask on.

    Raises:
        CliError: No terminal and no ``--yes``.
        typer.Exit: The operator said no (exit 1).
    """
    import typer

    from cli._errors import EXIT_FAILED, CliError

    if yes:
        return
    if not is_tty(sys.stdin):
        raise CliError(
            f"refusing to {action} without confirmation: stdin is not a terminal; "
            "pass --yes to confirm, or --dry-run to preview"
        )
    if not typer.confirm(question, default=False, err=True):
        sys.stderr.write("dtq: cancelled, nothing changed\n")
        raise typer.Exit(EXIT_FAILED)
