"""The monkey test: every key every screen binds, so that no key can crash the console.

On every screen (top-level and drill-down), in normal and read-only mode, with a
selected row and with nothing to select, each key the screen or the app binds is
pressed; a dialog it opens has its own keys pressed (except those that answer it) and is
then closed. The app must survive all of it: ``run_test`` re-raises anything the app
raised. The read-only walks, and a longer seeded random walk over the same keys, run
with ``-m soak``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import pytest
from textual import events
from textual.pilot import Pilot
from textual.screen import ModalScreen

from dtq_tui.app import DTQApp
from dtq_tui.screens import DTQScreen
from dtq_tui.screens.dead import DeadGroupScreen, DeadLettersScreen
from dtq_tui.screens.task_detail import TaskDetailScreen
from dtq_tui.screens.waiting import WaitingScreen
from tests.tui.conftest import until
from tests.tui.fake import FakeConsole

#: App keys the monkey leaves alone: quitting ends the test, not the app's fault.
SPARED = {"q", "ctrl+q", "ctrl+c"}

#: Keys that answer a dialog (pressed last, when the dialog is closed by them).
ANSWERS = {"y", "a", "enter", "ctrl+s"}

Opener = Callable[[Pilot[Any], DTQApp], Awaitable[bool]]


async def _top(mode: str, pilot: Pilot[Any], app: DTQApp) -> bool:
    app.switch_mode(mode)
    await until(pilot, lambda: isinstance(app.screen, DTQScreen) and app.screen.ready)
    await pilot.pause(0.05)
    return True


async def _detail(pilot: Pilot[Any], app: DTQApp) -> bool:
    await _top("tasks", pilot, app)
    await pilot.pause(0.1)
    if not app.screen.records:
        app.open_task("no-such-task")
    else:
        await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, TaskDetailScreen))
    return True


async def _group(pilot: Pilot[Any], app: DTQApp) -> bool:
    await _top("dead", pilot, app)
    await until(pilot, lambda: isinstance(app.screen, DeadLettersScreen) and app.screen.loaded)
    if not app.screen.groups:
        return False  # no group to open without dead letters
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, DeadGroupScreen) and app.screen.loaded)
    return True


async def _waiting(key: str, pilot: Pilot[Any], app: DTQApp) -> bool:
    await _top("tasks", pilot, app)
    await hit(pilot, app, key)
    await until(pilot, lambda: isinstance(app.screen, WaitingScreen) and app.screen.loaded)
    return True


SCREENS: dict[str, Opener] = {
    **{
        mode: partial(_top, mode)
        for mode in ("overview", "latency", "tasks", "dead", "workflows", "schedules", "limits")
    },
    "workers": partial(_top, "workers"),
    "task-detail": _detail,
    "dead-group": _group,
    "scheduled": partial(_waiting, "t"),
    "retry": partial(_waiting, "R"),
}

#: Keys pressed, across the parametrized runs (reported in the lead's note).
PRESSED: list[int] = []

#: Characters of the named keys the monkey presses.
CHARS = {"space": " ", "question_mark": "?", "colon": ":", "slash": "/"}
CHARS |= {"right_square_bracket": "]", "left_square_bracket": "["}


async def hit(pilot: Pilot[Any], app: DTQApp, key: str) -> None:
    """Press ``key`` and let the app handle it (quicker than ``pilot.press``).

    The key goes through the app's whole key handling (bindings, focus, the screen's
    ``on_key``), as a typed key does.
    """
    char = key if len(key) == 1 else CHARS.get(key)
    app.post_message(events.Key(key, char))
    await drain(app)


async def drain(app: DTQApp, rounds: int = 200) -> None:
    """Yield until the app, its screens and their widgets have no message waiting.

    Much cheaper than ``pilot.pause()`` (which waits for the whole DOM to go idle), and
    enough for a key's effects: its handlers ran, the dialogs it pushed are on the stack.
    """
    for _ in range(rounds):
        await asyncio.sleep(0.001)
        nodes = [app, *app.screen_stack]
        focused = app.focused
        if focused is not None:
            nodes.append(focused)
        if all(n._message_queue.empty() for n in nodes):
            await asyncio.sleep(0.002)
            if all(n._message_queue.empty() for n in nodes):
                return


#: App keys whose effect depends on the screen (pressed on every screen; others once).
PER_SCREEN = {"question_mark", "escape"}


def bound_keys(app: DTQApp, app_keys: bool = True) -> list[str]:
    """Every key bound on the current screen, then the app's (all, or the per-screen ones)."""
    keys: list[str] = []
    for key, bindings in app.screen._bindings.key_to_bindings.items():
        if bindings and key not in keys:
            keys.append(key)
    for key in app._bindings.key_to_bindings:
        if key in keys or key in SPARED or key.isdigit():
            continue
        if app_keys or key in PER_SCREEN:
            keys.append(key)
    return keys


async def settle(pilot: Pilot[Any], app: DTQApp, home: type[DTQScreen], depth: int) -> None:
    """Close dialogs and the filter bar; return to ``home`` at the stack ``depth``."""
    for _ in range(6):
        screen = app.screen
        if isinstance(screen, ModalScreen) or (
            isinstance(screen, DTQScreen) and screen.filter_bar.has_class("-open")
        ):
            await hit(pilot, app, "escape")
        elif len(app.screen_stack) > depth:
            app.pop_screen()
            await pilot.pause()
        else:
            break
    if not isinstance(app.screen, home):
        mode = home.MODE
        app.switch_mode(mode)
        await pilot.pause()


async def press_dialog_keys(pilot: Pilot[Any], app: DTQApp) -> int:
    """In an open dialog, press its keys that do not answer it; return how many."""
    dialog = app.screen
    n = 0
    for key in list(dialog._bindings.key_to_bindings):
        if key in ANSWERS or key == "escape" or app.screen is not dialog:
            continue
        await hit(pilot, app, key)
        n += 1
        if app.screen is not dialog:
            break
    return n


async def monkey(
    pilot: Pilot[Any], app: DTQApp, home: type[DTQScreen], depth: int, app_keys: bool
) -> int:
    """Press every bound key of the current screen, and answer each dialog; return count."""
    pressed = 0
    answerable = []
    for key in bound_keys(app, app_keys):
        await hit(pilot, app, key)
        pressed += 1
        if isinstance(app.screen, ModalScreen):
            if "y" in app.screen._bindings.key_to_bindings:
                answerable.append(key)
            pressed += await press_dialog_keys(pilot, app)
        await settle(pilot, app, home, depth)
        assert app.is_running
    # Every dialog that asks can also be answered: open it again and say yes.
    for key in answerable:
        await hit(pilot, app, key)
        if isinstance(app.screen, ModalScreen):
            await hit(pilot, app, "y")
            pressed += 1
        pressed += 1
        await settle(pilot, app, home, depth)
    return pressed


#: The read-only walks run with ``-m soak``: read-only mode disables every change key
#: (``check_action``) and the feed refuses every change call, whatever is selected; the
#: read-only tests of test_engine_flows and test_operator_keys prove both. The two walks
#: would add a minute of CPU to every run for little more.
READ_ONLY = pytest.param(True, id="read-only", marks=pytest.mark.soak)


@pytest.mark.parametrize("read_only", [False, READ_ONLY], ids=["normal", "read-only"])
@pytest.mark.parametrize("empty", [False, True], ids=["selected", "nothing-selected"])
async def test_every_key_on_every_screen(empty: bool, read_only: bool) -> None:
    app = DTQApp(FakeConsole(empty=empty), read_only=read_only, refresh_s=30.0)
    pressed = 0
    visited = []
    async with app.run_test(size=(80, 24)) as pilot:  # the narrowest layout, and the quickest
        for name, opener in SCREENS.items():
            while len(app.screen_stack) > 1:
                app.pop_screen()
                await pilot.pause()
            if not await opener(pilot, app):
                continue  # nothing to open (a dead-letter group needs dead letters)
            visited.append(name)
            home, depth = type(app.screen), len(app.screen_stack)
            pressed += await monkey(pilot, app, home, depth, app_keys=len(visited) == 1)
    PRESSED.append(pressed)
    assert len(visited) >= len(SCREENS) - (1 if empty else 0)
    print(f"monkey: {pressed} keys on {len(visited)} screens (empty={empty}, ro={read_only})")


@pytest.mark.soak
@pytest.mark.timeout(900)
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_seeded_random_walk(seed: int) -> None:
    """Thousands of random bound keys from screen to screen; nothing may crash.

    A key that fails names the seed and the step, so a crash replays with that seed.
    """
    rng = random.Random(seed)
    app = DTQApp(FakeConsole(), read_only=rng.random() < 0.3, refresh_s=0.2)
    async with app.run_test(size=rng.choice([(80, 24), (100, 30), (160, 50)])) as pilot:
        for step in range(2000):
            keys = [*bound_keys(app), *"12345678", "escape", "down", "up", "space", "tab"]
            keys += ["pageup", "pagedown", "home", "end", "enter"]
            await hit(pilot, app, rng.choice([k for k in keys if k not in SPARED]))
            if rng.random() < 0.05:
                await asyncio.sleep(0.05)  # let polls and workers answer in between
            assert app.is_running, f"seed {seed}: the app stopped at step {step}"
