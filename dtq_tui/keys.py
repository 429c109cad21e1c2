"""The keys of a screen, for the help and the command palette."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from textual.app import App, SystemCommand
from textual.screen import Screen

from dtq_tui.dialogs.help import HelpRow


def documented_keys(cls: type) -> list[tuple[str, str]]:
    """``(keys, description)`` rows of the key table in a screen class's docstring."""
    rows = []
    for line in (cls.__doc__ or "").splitlines():
        if line.strip().startswith("| Key") or line.strip().startswith("| :-"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            rows.append((cells[0].replace("`", ""), cells[1].replace("``", "")))
    return rows


def screen_keys(app: App[Any], screen: Screen[Any]) -> tuple[list[HelpRow], list[HelpRow]]:
    """``(this screen's keys, keys that work everywhere)``.

    A screen's keys come from the key table in its docstring (so the help and the docs
    agree), then any binding the table leaves out. Keys of actions that change state
    are flagged.
    """
    mutating: frozenset[str] = getattr(screen, "MUTATING", frozenset())
    own_bindings: dict[str, Any] = {}
    common: list[HelpRow] = []
    for active in screen.active_bindings.values():
        b = active.binding
        if "." in b.action:  # Textual's own (focus, copy): not the console's keys
            continue
        if active.node is app:
            if b.action.startswith("goto"):
                common.append((app.get_key_display(b), f"go to {b.description}", False))
            elif b.action == "command_palette":
                desc = "command palette: every screen and action"
                common.append((app.get_key_display(b), desc, False))
            elif b.description:
                common.append((app.get_key_display(b), b.description, False))
        elif active.node is screen:
            own_bindings[app.get_key_display(b)] = b
    own: list[HelpRow] = []
    covered: set[str] = set()
    for keys, desc in documented_keys(type(screen)):
        tokens = {t.strip() for t in re.split(r"\s+/\s+|,\s*", keys)}
        hit = [own_bindings[t] for t in tokens if t in own_bindings]
        covered |= tokens
        own.append((keys, desc, any(b.action.split("(")[0] in mutating for b in hit)))
    for display, b in own_bindings.items():
        if display not in covered and b.description:
            own.append((display, b.description, b.action.split("(")[0] in mutating))
    return own, common


def palette_commands(
    app: App[Any], screen: Screen[Any], goto: Callable[[str], None]
) -> Iterator[SystemCommand]:
    """Command palette entries: every screen, then every action of ``screen``."""
    from dtq_tui.screens import TABS, DTQScreen, modes

    titles = {mode: cls.TITLE for mode, cls in modes().items()}
    for key, _label, mode in TABS:
        yield SystemCommand(f"Go to {titles[mode]}", f"key {key}", partial(goto, mode))
    if isinstance(screen, DTQScreen):
        for active in screen.active_bindings.values():
            b = active.binding
            if active.node is screen and b.description:
                yield SystemCommand(
                    f"{screen.TITLE}: {b.description}",
                    f"key {app.get_key_display(b)}",
                    partial(screen.run_action, b.action),
                )
