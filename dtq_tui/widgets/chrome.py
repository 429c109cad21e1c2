"""The frame around every screen: tab bar, connection banner, status line and footer."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.events import Click
from textual.reactive import reactive
from textual.widgets import Footer, Static
from textual.widgets._footer import FooterLabel

from dtq_tui.palette import ROLE_GLYPHS, palette_for, role_of
from dtq_tui.plain import plain
from dtq_tui.widgets.memo import update_static


class TopBar(Static):
    """``DTQ 1 Overview 2 Latency ...`` with the current screen lit, and the health.

    A read-only console says so here, at the right, on every screen (k9s does the same):
    the badge never gives way to the tabs, which shorten to their numbers instead. A
    click on a tab goes to its screen.
    """

    DEFAULT_CSS = """
    TopBar {
        height: 1;
        background: $panel;
        color: $foreground;
    }
    """

    health: reactive[str | None] = reactive(None)
    """``ok``, ``degraded`` or ``down`` (``None`` before the first snapshot)."""

    def __init__(
        self,
        tabs: Sequence[tuple[str, str, str]],
        current: str,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.tabs = list(tabs)
        self.current = current

    def render(self) -> Text:
        """The tab strip; the read-only and health badges at the right."""
        pal = palette_for(self.app.theme_variables)
        width = self.size.width
        badge = Text()
        if getattr(self.app, "read_only", False):
            badge.append(" READ-ONLY ", style=pal.role("warn") + Style(bold=True, reverse=True))
        if self.health is not None:
            role = role_of(self.health)
            badge.append(f" {ROLE_GLYPHS[role]} {self.health} ", style=pal.role(role))
        text = Text()
        for style in ("full", "short", "keys"):
            text, spans = self._tabs(style)
            if text.cell_len + badge.cell_len <= width:
                break
        self.tab_spans = spans
        pad = width - text.cell_len - badge.cell_len
        if pad >= 0:
            text.append(" " * pad)
            text.append_text(badge)
        return text

    def _tabs(self, style: str) -> tuple[Text, list[tuple[int, int, str]]]:
        """The strip with ``full``, ``short`` or ``keys``-only labels, and each tab's cells."""
        text = Text(" DTQ ", style="bold")
        spans: list[tuple[int, int, str]] = []
        for key, label, mode in self.tabs:
            current = mode == self.current
            if current or style == "full":
                shown = f"{key} {label}"
            elif style == "short":
                shown = f"{key} {SHORT.get(label, label)}"
            else:
                shown = key
            text.append(" ")
            start = text.cell_len
            text.append(shown, "reverse bold" if current else "")
            spans.append((start, text.cell_len, mode))
        return text, spans

    def on_click(self, event: Click) -> None:
        """A click on a tab goes to its screen."""
        for start, end, mode in getattr(self, "tab_spans", []):
            if start <= event.x < end:
                event.stop()
                self.call_later(self.app.run_action, f"goto('{mode}')")
                return


#: Tab labels on a narrow terminal.
SHORT = {"Overview": "Over", "Latency": "Lat", "Workers": "Work"}


class ConnectionBanner(Static):
    """Shown while the Console API does not answer."""

    DEFAULT_CSS = """
    ConnectionBanner {
        display: none;
        height: auto;
        background: $error;
        color: $text;
        text-style: bold;
        padding: 0 1;
        &.-visible {
            display: block;
        }
    }
    """

    def show_error(self, error: str, retry_in: float) -> None:
        """Show the error and that the console keeps retrying."""
        self.update(
            plain(
                f"⚠ connection lost: {error} - reconnecting (every {retry_in:.1f}s or so)…",
                multiline=True,
                limit=1000,
            )
        )
        self.add_class("-visible")

    def clear_error(self) -> None:
        """Hide the banner."""
        self.remove_class("-visible")


class StatusLine(Static):
    """Context (backend, uptime, filter) at the left, the screen's own status at the right.

    When both do not fit on one line the status folds onto a second line (right-aligned)
    instead of being clipped; a line longer than the terminal wraps.
    """

    DEFAULT_CSS = """
    StatusLine {
        height: auto;
        max-height: 4;
        background: $boost;
        color: $text-muted;
        padding: 0 1;
    }
    """

    def show(self, left: str, right: str = "") -> None:
        """Left-aligned context and right-aligned screen status."""
        width = max(1, self.size.width - 2) if self.size.width else 10_000
        text = plain(left, multiline=True, limit=None)
        text.no_wrap = False
        shown: Text | Group = text
        if right:
            tail = plain(right, multiline=True, limit=None)
            tail.no_wrap = False
            pad = width - text.cell_len - tail.cell_len
            if pad >= 3:
                text.append(" " * pad)
                text.append_text(tail)
            else:
                tail.justify = "right"
                shown = Group(text, tail)
        update_static(self, shown, (left, right, width), layout=True)


class DTQFooter(Footer):
    """The key footer, with ``READ-ONLY`` first when actions are disabled.

    In read-only mode, the screen's ``check_action`` answers ``None`` for actions that
    change state, so Textual shows their keys dimmed (and the top bar carries the badge).
    """

    DEFAULT_CSS = """
    DTQFooter .read-only {
        background: $warning;
        color: $text;
        text-style: bold;
        padding: 0 1;
    }
    """

    def compose(self) -> ComposeResult:
        """The read-only badge, then the keys."""
        if getattr(self.app, "read_only", False):
            yield FooterLabel("READ-ONLY", classes="read-only")
        yield from super().compose()
