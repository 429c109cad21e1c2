"""Help that reads as written: example blocks kept verbatim, plain value names.

Applied once to every loaded command (see :func:`cli._group.load_command`), so command
docstrings stay plain Google-style text:

- An ``Examples:`` (or ``Example:``) line followed by indented lines is printed as a
  block, line by line, instead of being rewrapped into one paragraph. (click's way is a
  backspace line, which a raw docstring prints as a literal backslash-b.)
- typer 0.29 labels values with Python types (``ID <str>``, ``--limit <int range>``,
  ``TARGET <list[str]>``); an argument's own metavar already says what it is, and an
  option gets a word (``TEXT``, ``N``, ``NUMBER``, ``PATH``).
"""

from __future__ import annotations

import inspect
import re
from typing import Any

#: Lines that open an example block.
EXAMPLE_HEADINGS = ("Examples:", "Example:")
#: click's marker for a paragraph it must not rewrap.
_VERBATIM = "\b"
#: typer's type label -> the word shown instead.
_WORDS = {
    "str": "TEXT",
    "int": "N",
    "int range": "N",
    "float": "NUMBER",
    "float range": "NUMBER",
    "path": "PATH",
}
_LABEL = re.compile(r"^<(.*)>$")


def keep_examples(text: str) -> str:
    """Mark each example block of a help text so click prints it verbatim."""
    lines = inspect.cleandoc(text).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if line.strip() not in EXAMPLE_HEADINGS:
            continue
        block: list[str] = []
        while i < len(lines) and lines[i].strip():
            block.append(lines[i] if lines[i].startswith(" ") else "  " + lines[i])
            i += 1
        if block:
            out += ["", _VERBATIM, *block]
    return "\n".join(out)


def _plain_label(original: Any, is_argument: bool) -> Any:
    def display_type_rich(ctx: Any) -> str | None:
        label: str | None = original(ctx=ctx)
        if not label:
            return label
        if is_argument:
            return None  # the metavar (ID, FILE, TARGET...) is the name to read
        m = _LABEL.match(label)
        if m is None:
            return label  # an explicit metavar
        inner = m.group(1)
        return _WORDS.get(inner, inner.upper() if "|" not in inner else inner)

    return display_type_rich


def tidy(command: Any) -> None:
    """Apply both rules to ``command`` and its subcommands (in place)."""
    if command.help:
        command.help = keep_examples(command.help)
    for param in command.params:
        show = getattr(param, "display_type_rich", None)
        if callable(show):
            param.display_type_rich = _plain_label(
                show, getattr(param, "param_type_name", "") == "argument"
            )
    for sub in getattr(command, "commands", {}).values():
        tidy(sub)
