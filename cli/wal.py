"""``dtq wal``: verify, repair, inspect, compact and upgrade an embedded store's log.

The CLI may not import backend modules; it reaches the log's tools through the facade
``dtq_core.control.wal_tools()``, whose ``verify(path)``, ``repair(path)``,
``inspect(path, limit)``, ``compact(path)`` and ``upgrade(path)`` wrap the embedded
backend's functions.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer

from cli._common import JsonOpt, make_group, want_json
from cli._errors import EXIT_FAILED, EXIT_USAGE, CliError
from cli._output import (
    Column,
    FieldsBlock,
    TableBlock,
    print_blocks,
    print_json,
    print_table,
    write_line,
)

app = make_group("wal", "The embedded store's log: verify, repair, inspect, compact, upgrade.")

PathArg = Annotated[
    Path,
    typer.Argument(metavar="PATH", help="The embedded store's data directory.", show_default=False),
]


def _tool(name: str) -> Any:
    """The facade's ``name`` function, or a clean exit 2 when this build lacks it."""
    try:
        from dtq_core import control
    except ImportError:  # pragma: no cover - the engine is always installed with the CLI
        raise CliError(f"dtq wal {name} is not available in this build", EXIT_USAGE) from None
    factory = getattr(control, "wal_tools", None)
    tools = factory() if callable(factory) else None
    fn = getattr(tools, name, None) if tools is not None else None
    if not callable(fn):
        raise CliError(
            f"dtq wal {name} is not available in this build "
            "(the engine has no dtq_core.control.wal_tools() yet)",
            EXIT_USAGE,
        )
    return fn


def _directory(path: Path) -> Path:
    if not path.exists():
        raise CliError(f"no such directory {str(path)!r}: give the embedded store's data directory")
    if not path.is_dir():
        raise CliError(f"{str(path)!r} is a file: give the embedded store's data directory")
    return path


def _as_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        data = dataclasses.asdict(obj)
        for prop in ("ok", "openable", "records"):
            value = getattr(obj, prop, None)
            if prop not in data and isinstance(value, bool | int):
                data[prop] = value
        return data
    if hasattr(obj, "_asdict"):
        return obj._asdict()
    return obj


def _problem_rows(problems: Any) -> list[list[Any]]:
    return [[p.segment, p.offset, p.kind, p.detail] for p in problems]


_PROBLEM_COLUMNS: list[Column | str] = [
    "segment",
    Column("offset", justify="right"),
    "kind",
    "detail",
]


@app.command("verify")
def verify(path: PathArg, json_out: JsonOpt = False) -> None:
    """Check every segment and record without changing anything; exit 1 on any problem."""
    report = _tool("verify")(_directory(path))
    problems = tuple(getattr(report, "problems", ()))
    ok = bool(getattr(report, "ok", not problems))
    if want_json(json_out):
        print_json(_as_dict(report))
    else:
        segments = getattr(report, "segments", ())
        blocks: list[Any] = [
            TableBlock(
                ["segment", Column("bytes", justify="right"), Column("records", justify="right"),
                 Column("first lsn", justify="right"), Column("last lsn", justify="right"),
                 Column("unreadable", justify="right")],
                [[s.name, s.size, s.records, s.first_lsn, s.last_lsn, s.unreadable_bytes]
                 for s in segments],
                title=f"WAL {path}",
                empty="no segments",
            )
        ]  # fmt: skip
        if problems:
            blocks.append(TableBlock(_PROBLEM_COLUMNS, _problem_rows(problems), title="Problems"))
        print_blocks(blocks)
        if ok:
            write_line(f"ok: {getattr(report, 'records', '?')} records, no problems")
        elif getattr(report, "openable", False):
            write_line("torn tail only: the store opens and cuts it; nothing else is wrong")
        else:
            write_line(f"{len(problems)} problem(s): run `dtq wal repair {path}`")
    if not ok:
        raise typer.Exit(EXIT_FAILED)


@app.command("repair")
def repair(path: PathArg, json_out: JsonOpt = False) -> None:
    """Salvage every readable record into a fresh log; the original is kept aside."""
    report = _tool("repair")(_directory(path))
    if want_json(json_out):
        print_json(_as_dict(report))
        return
    if not getattr(report, "changed", True):
        write_line("nothing to repair: the log has no problem")
        return
    lost = getattr(report, "lost", ())
    print_blocks(
        [
            FieldsBlock(
                [
                    ("salvaged records", getattr(report, "salvaged", "?")),
                    ("lost lsn ranges", ", ".join(f"{a}-{b}" for a, b in lost) or "none"),
                    ("dropped bytes", getattr(report, "dropped_bytes", "?")),
                    ("original kept in", getattr(report, "broken_dir", None)),
                    ("new epoch", getattr(report, "epoch", None)),
                ],
                title=f"Repaired {path}",
            )
        ]
    )


@app.command("inspect")
def inspect(
    path: PathArg,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="At most this many.")] = 100,
    json_out: JsonOpt = False,
) -> None:
    """List the log's valid records: lsn, kind, format version, length, segment, offset."""
    rows = [_as_dict(r) for r in _tool("inspect")(_directory(path), limit)]
    if want_json(json_out):
        print_json(rows)
        return
    print_table(
        [Column("lsn", justify="right"), "kind", Column("version", justify="right"),
         Column("length", justify="right"), "segment", Column("offset", justify="right")],
        [[r.get("lsn"), r.get("kind", r.get("rtype")), r.get("version", ""), r.get("length"),
          r.get("segment"), r.get("offset")] for r in rows],
        empty="no records",
    )  # fmt: skip


@app.command("compact")
def compact(path: PathArg, json_out: JsonOpt = False) -> None:
    """Write a checkpoint and drop the segments it covers (the store must not be running)."""
    report = _tool("compact")(_directory(path))
    if want_json(json_out):
        print_json(_as_dict(report))
        return
    data = _as_dict(report)
    if isinstance(data, dict):
        print_fields_from(data, f"Compacted {path}")
    else:
        write_line(f"compacted {path}: {data}")


@app.command("upgrade")
def upgrade(path: PathArg, json_out: JsonOpt = False) -> None:
    """Convert a store written by an older release to the current format (not running)."""
    report = _tool("upgrade")(_directory(path))
    if want_json(json_out):
        data = _as_dict(report)
        data["changed"] = bool(getattr(report, "changed", False))
        print_json(data)
        return
    version = getattr(report, "version", "?")
    if not getattr(report, "changed", False):
        write_line(f"{path} is already at version {version}: nothing to convert")
        return
    records = getattr(report, "converted_records", 0)
    parts = [f"{records} log record(s)"] if records else []
    if getattr(report, "converted_checkpoint", False):
        parts.append("the checkpoint")
    write_line(
        f"upgraded {path} from version {getattr(report, 'found_version', '?')} to {version}: "
        f"converted {' and '.join(parts)}; the state is in the checkpoint at lsn "
        f"{getattr(report, 'checkpoint_lsn', '?')}"
    )


def print_fields_from(data: dict[str, Any], title: str) -> None:
    """A report dict as ``key: value`` lines."""
    print_blocks([FieldsBlock([(k.replace("_", " "), v) for k, v in data.items()], title=title)])
