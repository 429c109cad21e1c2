"""Parsing what users type: JSON arguments, targets, filter terms (one-line errors)."""

from __future__ import annotations

import shlex
from typing import Any

from cli._errors import CliError


def parse_json(text: str | None, option: str, kind: type, example: str) -> Any:
    """Parse a JSON option value of the given kind (``list`` or ``dict``).

    Raises:
        CliError: Naming the option, the problem and an example of a good value.
    """
    if text is None:
        return None
    import json

    noun = "array" if kind is list else "object"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{option} is not valid JSON ({exc.msg} at column {exc.colno}): "
            f"give a JSON {noun}, e.g. {option} '{example}'"
        ) from None
    if not isinstance(value, kind):
        raise CliError(
            f"{option} must be a JSON {noun}, not {type(value).__name__}: e.g. {option} '{example}'"
        )
    return value


def split_targets(tokens: list[str] | None) -> tuple[list[str], list[str]]:
    """Split DLQ targets into ``(ids, filter terms)``.

    Tokens holding a ``:`` make the whole list a filter (bare words then search text);
    otherwise the tokens are task ids.
    """
    tokens = list(tokens or [])
    if any(":" in t for t in tokens):
        return [], tokens
    return tokens, []


def filter_text(terms: list[str]) -> str | None:
    """Filter terms joined into one filter string (quoting kept)."""
    if not terms:
        return None

    return shlex.join(terms)
