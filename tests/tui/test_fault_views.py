"""What the console shows of faults: restarted workers."""

from __future__ import annotations

from rich.text import Text

from dtq_tui.screens.workers import _state


def test_a_restarted_worker_says_how_often() -> None:
    assert _state(Text("idle"), 0).plain == "idle"
    cell = Text("busy", style="bold")
    shown = _state(cell, 3)
    assert shown.plain == "busy ↻3"
    assert cell.plain == "busy"  # the palette's text is not changed in place
