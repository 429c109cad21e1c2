"""The one mapping from states to colours, resolved against the current theme.

Every pane colours a state through :func:`role_of` and :class:`Palette`, so ``DEAD`` is
the same red in the task table, the event log and the dead-letter screen, and a theme
change (light or dark) recolours everything. Roles map to Textual's ``text-*`` theme
variables, which are made to be readable on the theme's own background.
"""

from __future__ import annotations

from functools import lru_cache

from rich.color import Color as RichColor
from rich.style import Style
from rich.text import Text
from textual.color import Color

#: State (task, worker, breaker, workflow node, health...) -> role.
STATE_ROLES: dict[str, str] = {
    # tasks
    "PENDING": "waiting",
    "RUNNING": "active",
    "SUCCESS": "good",
    "FAILED": "bad",
    "RETRY": "warn",
    "DEAD": "bad",
    "CANCELLED": "muted",
    # workers
    "busy": "active",
    "idle": "good",
    "stopping": "warn",
    "stopped": "muted",
    "lost": "bad",
    # breakers
    "closed": "good",
    "half_open": "warn",
    "open": "bad",
    # workflow runs and nodes
    "waiting": "muted",
    "pending": "waiting",
    "running": "active",
    "success": "good",
    "failed": "bad",
    "upstream_failed": "warn",
    # health
    "ok": "good",
    "degraded": "warn",
    "down": "bad",
    # queues and schedules
    "paused": "warn",
    "active": "good",
}

#: Role -> theme variable.
ROLE_VARIABLES: dict[str, str] = {
    "good": "text-success",
    "bad": "text-error",
    "warn": "text-warning",
    "active": "text-primary",
    "waiting": "text-secondary",
    "accent": "text-accent",
}

#: A glyph per role, so state survives a monochrome terminal.
ROLE_GLYPHS: dict[str, str] = {
    "good": "✔",
    "bad": "✘",
    "warn": "▲",
    "active": "●",
    "waiting": "○",
    "muted": "·",
    "accent": "◆",
}


def role_of(state: str | None) -> str:
    """The role of a state name (``muted`` when unknown)."""
    if state is None:
        return "muted"
    return STATE_ROLES.get(str(state), STATE_ROLES.get(str(state).lower(), "muted"))


class Palette:
    """Rich styles for roles, resolved from one theme's variables."""

    def __init__(self, variables: dict[str, str]) -> None:
        fg = Color.parse(variables.get("foreground", "#e0e0e0"))
        bg = Color.parse(variables.get("background", "#121212"))
        self._styles: dict[str, Style] = {}
        for role, var in ROLE_VARIABLES.items():
            self._styles[role] = Style(color=_rich(variables.get(var), fg))
        self._styles["muted"] = Style(color=bg.blend(fg, 0.6).rich_color)
        self._styles["dim"] = Style(color=bg.blend(fg, 0.45).rich_color)
        self.foreground = fg
        self.background = bg

    def role(self, role: str) -> Style:
        """The style of a role."""
        return self._styles.get(role, self._styles["muted"])

    def state(self, state: str | None) -> Style:
        """The style of a state."""
        return self.role(role_of(state))

    def state_text(
        self, state: str | None, *, glyph: bool = True, label: str | None = None
    ) -> Text:
        """A coloured state label, with its glyph."""
        role = role_of(state)
        text = label if label is not None else (str(state) if state is not None else "-")
        if glyph:
            text = f"{ROLE_GLYPHS.get(role, '·')} {text}"
        return Text(text, style=self.role(role))


def _rich(value: str | None, fallback: Color) -> RichColor:
    if not value:
        return fallback.rich_color
    try:
        return Color.parse(value).rich_color
    except Exception:  # "auto 60%" and other contrast forms
        return fallback.rich_color


@lru_cache(maxsize=16)
def _cached(items: tuple[tuple[str, str], ...]) -> Palette:
    return Palette(dict(items))


def palette_for(variables: dict[str, str]) -> Palette:
    """A (cached) palette for a theme's variables."""
    keys = (*ROLE_VARIABLES.values(), "foreground", "background")
    return _cached(tuple((k, variables.get(k, "")) for k in keys))
