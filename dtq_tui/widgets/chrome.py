"""The frame around every screen: tab bar, connection banner, status line and footer."""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.reactive import reactive
from textual.widgets import Footer, Static
from textual.widgets._footer import FooterLabel

from dtq_tui.palette import ROLE_GLYPHS, palette_for, role_of
from dtq_tui.widgets.memo import update_static


class TopBar(Static):
    """``DTQ 1 Overview 2 Latency ...`` with the current screen lit, and the health."""

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
        """The tab strip, the health badge at the right."""
        pal = palette_for(self.app.theme_variables)
        width = self.size.width
        full = width >= 100
        text = Text(" DTQ ", style="bold")
        for key, label, mode in self.tabs:
            current = mode == self.current
            shown = label if full or current else SHORT.get(label, label)
            text.append(" ")
            text.append(f"{key} {shown}", "reverse bold" if current else "")
        if self.health is not None:
            role = role_of(self.health)
            badge = Text(f" {ROLE_GLYPHS[role]} {self.health} ", style=pal.role(role))
            if text.cell_len + badge.cell_len > width:
                badge = Text(f" {ROLE_GLYPHS[role]} ", style=pal.role(role))
            pad = width - text.cell_len - badge.cell_len
            if pad >= 0:
                text.append(" " * pad)
                text.append_text(badge)
        return text


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
        self.update(f"⚠ connection lost: {error} - reconnecting (every {retry_in:.1f}s or so)…")
        self.add_class("-visible")

    def clear_error(self) -> None:
        """Hide the banner."""
        self.remove_class("-visible")


class StatusLine(Static):
    """One line of context: backend, uptime, the screen's own status and filter."""

    DEFAULT_CSS = """
    StatusLine {
        height: 1;
        background: $boost;
        color: $text-muted;
        padding: 0 1;
    }
    """

    def show(self, left: str, right: str = "") -> None:
        """Left-aligned context and right-aligned screen status."""
        width = max(0, self.size.width - 2)
        text = Text(left, no_wrap=True, overflow="ellipsis")
        if right:
            pad = width - len(left) - len(right)
            if pad >= 1:
                text.append(" " * pad)
                text.append(right)
            else:
                text.append("  " + right)
        text.truncate(max(1, width), overflow="ellipsis")
        update_static(self, text)


class DTQFooter(Footer):
    """The key footer, with ``READ-ONLY`` at its right when actions are disabled."""

    DEFAULT_CSS = """
    DTQFooter .read-only {
        dock: right;
        background: $warning;
        color: $text;
        text-style: bold;
        padding: 0 1;
    }
    """

    def compose(self) -> ComposeResult:
        """The keys, then the read-only badge."""
        if getattr(self.app, "read_only", False):
            yield FooterLabel("READ-ONLY", classes="read-only")
        yield from super().compose()
