r"""Untrusted text made safe for a terminal: control characters shown as escapes.

Task names, arguments, results, errors, queue names and worker ids are data: an
exception message may hold ``\x1b[2J`` (clear the screen) or a bidi override. Every face
writes such text through :func:`escape_controls` (the console through
``dtq_tui.plain``, ``dtq`` through its output helpers, worker logs through
:class:`SafeFormatter`), so data never moves the cursor, recolours the terminal or hides
what follows it.
"""

from __future__ import annotations

import logging
import unicodedata
from typing import Any

#: Escapes for the usual control characters (the others become ``\xNN``/``\uNNNN``).
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b", "\x00": "\\0"}

#: Characters kept as they are in multi-line text (the detail views).
_MULTILINE_OK = frozenset("\n\t")


def _escaped(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _unsafe(ch: str) -> bool:
    """Control, format (bidi overrides, zero-width), surrogate and line-separator chars."""
    if ch.isprintable():
        return False
    if ch == " ":
        return False
    return unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}


def valid_utf8(text: str) -> str:
    """``text`` as valid UTF-8: a lone surrogate becomes its backslash escape.

    Failure text from a task (a message of bytes decoded with ``surrogateescape``) is
    stored and sent as UTF-8 everywhere; this keeps it storable and still readable.
    """
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode()


def escape_controls(text: str, *, multiline: bool = False) -> str:
    """``text`` with every control character written as an escape.

    With ``multiline``, newlines stay newlines and tabs become spaces (for detail views
    and tracebacks); everything else that could drive the terminal is escaped.
    """
    if text.isprintable():  # the common case: nothing to do
        return text
    out = []
    for ch in text:
        if multiline and ch in _MULTILINE_OK:
            out.append("    " if ch == "\t" else ch)
        elif ch == "\r" and multiline:
            continue
        elif _unsafe(ch):
            out.append(_escaped(ch))
        else:
            out.append(ch)
    return "".join(out)


class SafeFormatter(logging.Formatter):
    """A log formatter whose lines cannot drive the terminal, nor be forged.

    Log messages carry data (task ids, names, error messages): their control characters
    are escaped, newlines included, so one record is one line. Tracebacks keep their
    lines, with everything else escaped.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The record's line, every control character escaped."""
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        """A traceback, its lines kept, other control characters escaped."""
        return escape_controls(super().formatException(ei), multiline=True)

    def formatStack(self, stack_info: str) -> str:
        """A stack, its lines kept, other control characters escaped."""
        return escape_controls(super().formatStack(stack_info), multiline=True)
