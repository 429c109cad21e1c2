r"""Untrusted text as text: the one door from data to the screen.

Everything that comes from data (task and queue names, args, results, errors,
tracebacks, notes, worker ids, schedule names) reaches a widget through :func:`plain`,
which returns a :class:`rich.text.Text`. A ``Text`` is never parsed as markup, so a
message such as ``KeyError: '[/x]'`` is shown as it is instead of closing a tag that was
never opened (which raised ``MarkupError`` and killed the console).

On the way, control characters (ANSI escapes included) are shown escaped (``\x1b``),
so data cannot move the cursor or recolour the terminal, and text is measured in
terminal cells, so wide characters keep columns aligned. A value cut to fit ends in
``…``; :data:`CELL_MAX` bounds what a table cell holds (a 10 kB message is not laid
out for a 40-cell column); the detail views pass ``limit=None`` and show it whole.
"""

from __future__ import annotations

from typing import Any

from rich.style import Style, StyleType
from rich.text import Text

from dtq_core.text import escape_controls

#: The most characters a one-line cell keeps before cutting (the detail shows all).
CELL_MAX = 400


def plain(
    value: Any,
    width: int | None = None,
    *,
    style: StyleType = "",
    justify: Any = None,
    multiline: bool = False,
    limit: int | None = CELL_MAX,
) -> Text:
    r"""Data as a literal :class:`Text`, never markup.

    Args:
        value: Any value; ``None`` shows ``-``; anything else is ``str()``-ed.
        width: Cut to this many terminal cells with ``…`` (wide characters count two).
        style: The style of the whole text.
        justify: ``left``, ``right``, ``center``.
        multiline: Keep newlines (detail views); otherwise the text is one line and a
            newline is shown as ``\n``.
        limit: Cut to this many characters first (``None``: keep everything).
    """
    raw = "-" if value is None else str(value)
    cut = limit is not None and len(raw) > limit
    if cut:
        raw = raw[: max(0, (limit or 0) - 1)]
    text = Text(
        escape_controls(raw, multiline=multiline) + ("…" if cut else ""),
        style=style,
        justify=justify,
        no_wrap=not multiline,
        overflow="fold" if multiline else "ellipsis",
        # A block (detail views) ends its line; a cell or a piece of a line does not.
        end="\n" if multiline else "",
    )
    if width is not None and text.cell_len > width:
        text.truncate(max(1, width), overflow="ellipsis")
    return text


def joined(*parts: tuple[Any, StyleType] | Any, sep: str = "") -> Text:
    """Literal parts, each optionally ``(value, style)``, as one :class:`Text`."""
    out = Text(no_wrap=True, overflow="ellipsis", end="")
    for i, part in enumerate(parts):
        if i and sep:
            out.append(sep)
        if isinstance(part, tuple) and len(part) == 2:
            out.append_text(plain(part[0], style=part[1] or Style()))
        elif isinstance(part, Text):
            out.append_text(part)
        else:
            out.append_text(plain(part))
    return out
