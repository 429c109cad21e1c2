"""The workflow file format: its fields and aliases, a JSON Schema, and the file reader.

One table describes the format; :func:`load_workflow` reads files with it, the
CLI's ``dtq dag schema`` prints :func:`json_schema`, and error messages list
:data:`NODE_FIELDS` when they meet a field they do not know. A JSON file is the dict
form as is; a TOML file has a top-level ``name`` and one ``[[nodes]]`` table per node.
"""

from __future__ import annotations

import difflib
import json
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dtq_core.errors import DAGError

if TYPE_CHECKING:
    from dtq_core.scheduling.dag import Node, Workflow

#: Top-level fields of a workflow file -> what they hold.
WORKFLOW_FIELDS: dict[str, str] = {
    "name": "The workflow's name, shown by the console and the CLI (default: the file's stem).",
    "nodes": "The steps: one table per node.",
}

#: A top-level key a file may carry for editors (the schema's location); ignored.
SCHEMA_KEY = "$schema"

#: Node fields -> (JSON Schema of the value, what it means). Order is the documented order.
NODE_FIELDS: dict[str, tuple[dict[str, Any], str]] = {
    "id": ({"type": "string", "minLength": 1}, "Unique within the workflow."),
    "task": ({"type": "string", "minLength": 1}, "The registered task name to call."),
    "args": ({"type": "array"}, "Positional arguments (JSON values)."),
    "kwargs": ({"type": "object"}, "Keyword arguments (JSON values)."),
    "after": (
        {
            "oneOf": [
                {"type": "string", "minLength": 1},
                {"type": "array", "items": {"type": "string", "minLength": 1}},
            ]
        },
        "The node ids this node runs after (its parents): one id or a list.",
    ),
    "pass_results": (
        {"type": "boolean"},
        "Call with upstream={parent_id: result} added to the kwargs.",
    ),
    "queue": ({"type": "string", "minLength": 1}, "Overrides the task's queue."),
    "priority": ({"type": "integer"}, "Overrides the task's priority (lower runs first)."),
}

#: Other names accepted for a node field -> the field. ``parents`` is what a run's view
#: (``dtq dag show``, the console) called the dependencies before they were named ``after``
#: everywhere.
NODE_ALIASES: dict[str, str] = {"parents": "after"}


def valid_node_fields() -> str:
    """The node fields as one line, for error messages: ``id, task, ... (alias: ...)``."""
    aliases = ", ".join(f"{a} = {f}" for a, f in NODE_ALIASES.items())
    return ", ".join(NODE_FIELDS) + (f" (alias: {aliases})" if aliases else "")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or ``""``."""
    hint = difflib.get_close_matches(word, list(choices), 1)
    return f"; did you mean {hint[0]!r}?" if hint else ""


def json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) of a workflow file, for editors and CI checks.

    It checks the shape only; :meth:`~dtq_core.scheduling.dag.Workflow.validate` also
    checks the graph (cycles, unknown parents, duplicate ids).
    """
    node_props: dict[str, Any] = {
        name: {**schema, "description": text} for name, (schema, text) in NODE_FIELDS.items()
    }
    for alias, field in NODE_ALIASES.items():
        node_props[alias] = {
            **NODE_FIELDS[field][0],
            "description": f"Alias of {field!r}.",
            "deprecated": True,
        }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "DTQ workflow",
        "description": "A DAG of task calls, run by `dtq dag run FILE` (JSON or TOML).",
        "type": "object",
        "properties": {
            SCHEMA_KEY: {"type": "string", "description": "This schema's location (ignored)."},
            "name": {"type": "string", "minLength": 1, "description": WORKFLOW_FIELDS["name"]},
            "nodes": {
                "type": "array",
                "minItems": 1,
                "description": WORKFLOW_FIELDS["nodes"],
                "items": {
                    "type": "object",
                    "properties": node_props,
                    "required": ["id", "task"],
                    "additionalProperties": False,
                    "not": {"required": ["after", *NODE_ALIASES]},
                },
            },
        },
        "required": ["nodes"],
        "additionalProperties": False,
    }


# -- reading ---------------------------------------------------------------------------


def node_from_dict(raw: Any, where: str) -> Node:
    """One node from its dict form (``where`` names it in errors).

    Raises:
        DAGError: An unknown field (listing the valid ones) or a value of the wrong type.
    """
    from dtq_core.scheduling.dag import Node

    if not isinstance(raw, Mapping):
        raise DAGError(f"{where}: a node must be a table/object, not {type(raw).__name__}")
    extra = sorted(set(raw) - set(NODE_FIELDS) - set(NODE_ALIASES))
    if extra:
        near = did_you_mean(extra[0], [*NODE_FIELDS, *NODE_ALIASES])
        raise DAGError(
            f"{where}: unknown field {extra[0]!r}{near} (valid fields: {valid_node_fields()})"
        )
    raw = _resolve_aliases(raw, where)
    node_id = raw.get("id")
    if not isinstance(node_id, str) or not node_id:
        raise DAGError(f"{where}: 'id' must be a non-empty string")
    where = f"{where} ({node_id!r})"
    task = raw.get("task")
    if not isinstance(task, str) or not task:
        raise DAGError(f"{where}: 'task' must be a non-empty string")
    args = raw.get("args", [])
    if not isinstance(args, list | tuple):
        raise DAGError(f"{where}: 'args' must be a list")
    kwargs = raw.get("kwargs", {})
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise DAGError(f"{where}: 'kwargs' must be a table/object with string keys")
    after = raw.get("after", [])
    if isinstance(after, str):
        after = [after]
    if not isinstance(after, list | tuple) or not all(isinstance(p, str) for p in after):
        raise DAGError(f"{where}: 'after' must be a node id or a list of node ids")
    pass_results = raw.get("pass_results", False)
    if not isinstance(pass_results, bool):
        raise DAGError(f"{where}: 'pass_results' must be true or false")
    queue = raw.get("queue")
    if queue is not None and (not isinstance(queue, str) or not queue):
        raise DAGError(f"{where}: 'queue' must be a non-empty string")
    priority = raw.get("priority")
    if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
        raise DAGError(f"{where}: 'priority' must be an integer")
    return Node(
        node_id, task, tuple(args), dict(kwargs), tuple(after), pass_results, queue, priority
    )


def _resolve_aliases(raw: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """``raw`` with each alias renamed to its field (both given is an error)."""
    if not any(a in raw for a in NODE_ALIASES):
        return raw
    out = dict(raw)
    for alias, name in NODE_ALIASES.items():
        if alias in out:
            if name in out:
                raise DAGError(f"{where}: give {name!r} or its alias {alias!r}, not both")
            out[name] = out.pop(alias)
    return out


def load_workflow(path: str | Path) -> Workflow:
    """Read a workflow from a ``.json`` or ``.toml`` file (not yet validated).

    The TOML form has an optional top-level ``name`` (default: the file's stem) and one
    ``[[nodes]]`` table per node.

    Raises:
        DAGError: One line naming the file and what is wrong with it (missing, not
            JSON/TOML with line and column, wrong shape).
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".json", ".toml"):
        raise DAGError(f"{p}: unsupported file type {suffix or '(none)'!r} (use .json or .toml)")
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DAGError(f"{p}: no such file") from None
    except UnicodeDecodeError as exc:
        raise DAGError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DAGError(f"{p}: cannot read: {exc.strerror or exc}") from None
    data: Any
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DAGError(f"{p}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise DAGError(f"{p}: invalid TOML: {exc}") from None
    try:
        from dtq_core.scheduling.dag import Workflow

        return Workflow.from_dict(data, default_name=p.stem)
    except DAGError as exc:
        raise DAGError(f"{p}: {exc}") from None


__all__ = [
    "NODE_ALIASES",
    "NODE_FIELDS",
    "SCHEMA_KEY",
    "WORKFLOW_FIELDS",
    "json_schema",
    "load_workflow",
    "node_from_dict",
    "valid_node_fields",
]
