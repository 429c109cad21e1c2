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
    app: App[Any],
    screen: Screen[Any],
    goto: Callable[[str], None],
    run_on: Callable[[str, str, str], None],
) -> Iterator[SystemCommand]:
    """Command palette entries: every screen, then the console actions of every screen.

    The actions of the screen shown run at once; those of another screen go there first
    (``run_on(mode, action, label)``). Only the console's own bindings are listed (those
    declared by the screen classes), each once: Textual's own entries (focus, copy, keys,
    theme...) come once, from Textual.
    """
    from dtq_tui.screens import TABS, DTQScreen, modes

    read_only = bool(getattr(app, "read_only", False))
    classes = modes()
    titles = {mode: cls.TITLE for mode, cls in classes.items()}
    for key, _label, mode in TABS:
        yield SystemCommand(f"Go to {titles[mode]}", f"key {key}", partial(goto, mode))
    here = screen if isinstance(screen, DTQScreen) else None
    seen: set[str] = set()
    if here is not None:
        for title, help_text, action in _own_actions(app, type(here), read_only):
            seen.add(title)
            yield SystemCommand(title, help_text, partial(here.run_action, action))
    for _key, _label, mode in TABS:
        cls = classes[mode]
        if here is not None and type(here) is cls:
            continue
        for title, help_text, action in _own_actions(app, cls, read_only):
            if title in seen:
                continue
            seen.add(title)
            yield SystemCommand(
                title, f"{help_text} (goes to {cls.TITLE})", partial(run_on, mode, action, title)
            )


def _own_actions(
    app: App[Any], cls: type[Screen[Any]], read_only: bool
) -> Iterator[tuple[str, str, str]]:
    """``(title, help, action)`` of the bindings a console screen class declares."""
    from textual.binding import Binding

    mutating: frozenset[str] = getattr(cls, "MUTATING", frozenset())
    names: set[str] = set()
    for klass in reversed(cls.__mro__):
        for b in vars(klass).get("BINDINGS", []):
            if not isinstance(b, Binding) or not b.description or b.action in names:
                continue
            if klass.__module__.startswith("textual."):
                continue
            names.add(b.action)
            refused = read_only and b.action.split("(")[0] in mutating
            note = " - refused: read-only" if refused else ""
            yield (
                f"{getattr(cls, 'TITLE', cls.__name__)}: {b.description}",
                f"key {app.get_key_display(b)}{note}",
                b.action,
            )
