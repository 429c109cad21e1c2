"""``:``: jump to a screen by name, k9s style (``:dlq``, ``:workers``)."""

from __future__ import annotations

from dtq_tui.dialogs.prompt import PromptDialog
from dtq_tui.screens import ALIASES, TABS, resolve


def check(text: str) -> str | None:
    """Why ``text`` names no screen (``None`` when it does)."""
    if resolve(text):
        return None
    return f"no screen {text!r}: try {', '.join(t[2] for t in TABS)}"


class JumpDialog(PromptDialog):
    """A prompt that completes screen names; answer it with :func:`resolve`."""

    def __init__(self) -> None:
        super().__init__(
            ":", placeholder="screen name", validate=check, suggestions=sorted(ALIASES)
        )
