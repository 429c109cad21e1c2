"""Skipping redraws of panes whose content did not change between two polls."""

from __future__ import annotations

from typing import Any

from textual.visual import VisualType
from textual.widgets import Static

_MISSING = object()


def update_static(
    widget: Static, content: VisualType, key: Any = _MISSING, layout: bool = False
) -> bool:
    """``widget.update(content)`` unless ``key`` (default: ``content``) equals the last one.

    A poll that changes nothing then costs no render. ``layout`` is off by default: panes
    have fixed sizes, and a layout pass reflows the whole screen.
    """
    key = content if key is _MISSING else key
    if getattr(widget, "_dtq_memo", _MISSING) == key:
        return False
    widget._dtq_memo = key  # type: ignore[attr-defined]
    widget.update(content, layout=layout)
    return True
