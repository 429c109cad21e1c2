"""Snapshots of every screen on fixed data (FakeConsole, frozen time, no cursor blink).

Regenerate after an intended change with ``pytest tests/tui --snapshot-update`` and
review the SVGs in ``tests/tui/__snapshots__``.
"""

from __future__ import annotations

from typing import Any

import pytest
from textual.pilot import Pilot

from dtq_tui.app import DTQApp
from dtq_tui.dialogs.confirm import ConfirmDialog
from dtq_tui.dialogs.edit_args import EditArgsDialog
from dtq_tui.dialogs.help import HelpDialog
from dtq_tui.dialogs.replay_preview import ReplayPreviewDialog
from dtq_tui.dialogs.row import RowDialog
from dtq_tui.screens.dead import DeadGroupScreen, DeadLettersScreen
from dtq_tui.screens.task_detail import TaskDetailScreen
from dtq_tui.screens.tasks import TasksScreen
from dtq_tui.screens.waiting import WaitingScreen
from tests.tui.conftest import until
from tests.tui.fake import FakeConsole

SIZES = {"80x24": (80, 24), "100x30": (100, 30), "160x50": (160, 50)}

#: Screen key -> a condition that says the screen shows its data.
SCREENS = {
    "1-overview": lambda app: app.screen.snapshot is not None,
    "2-latency": lambda app: app.screen.snapshot is not None,
    "3-tasks": lambda app: isinstance(app.screen, TasksScreen) and app.screen.loaded,
    "4-dead": lambda app: isinstance(app.screen, DeadLettersScreen) and app.screen.loaded,
    "5-workflows": lambda app: app.screen.snapshot is not None,
    "6-schedules": lambda app: app.screen.snapshot is not None,
    "7-limits": lambda app: app.screen.snapshot is not None,
    "8-workers": lambda app: app.screen.snapshot is not None,
}


def make_app(**kw: Any) -> DTQApp:
    """The app over fixed data; one poll is enough (the data never changes)."""
    return DTQApp(kw.pop("console", None) or FakeConsole(), refresh_s=30.0, **kw)


def when(ready: Any) -> Any:
    async def run_before(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: ready(pilot.app))

    return run_before


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
@pytest.mark.parametrize("screen", SCREENS.keys())
def test_screen(snap_compare: Any, screen: str, size: tuple[int, int]) -> None:
    app = make_app(screen=screen.split("-", 1)[1])
    assert snap_compare(app, terminal_size=size, run_before=when(SCREENS[screen]))


def test_overview_light_theme(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        pilot.app.theme = "textual-light"
        await until(pilot, lambda: pilot.app.screen.snapshot is not None)

    assert snap_compare(make_app(), terminal_size=(100, 30), run_before=run_before)


def test_read_only_footer_and_help(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: isinstance(pilot.app.screen, DeadLettersScreen))
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(pilot.app.screen, HelpDialog))

    app = make_app(read_only=True, screen="dead")
    assert snap_compare(app, terminal_size=(100, 34), run_before=run_before)


def test_connection_lost_banner(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: pilot.app.connection_error is not None)

    app = make_app(console=FakeConsole(fail=True))
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


async def _open_group(pilot: Pilot[Any]) -> None:
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, DeadLettersScreen) and app.screen.groups)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, DeadGroupScreen) and app.screen.records)


def test_dead_group_with_tags(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _open_group(pilot)
        await pilot.press("space", "space")

    assert snap_compare(make_app(screen="dead"), terminal_size=(100, 24), run_before=run_before)


def test_replay_group_dry_run(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _open_group(pilot)
        await pilot.press("R")
        await until(pilot, lambda: isinstance(pilot.app.screen, ReplayPreviewDialog))

    assert snap_compare(make_app(screen="dead"), terminal_size=(100, 24), run_before=run_before)


def test_purge_confirmation(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _open_group(pilot)
        await pilot.press("a", "d")
        await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmDialog))

    assert snap_compare(make_app(screen="dead"), terminal_size=(80, 24), run_before=run_before)


def test_edit_args_editor(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _open_group(pilot)
        await pilot.press("e")
        await until(pilot, lambda: isinstance(pilot.app.screen, EditArgsDialog))

    assert snap_compare(make_app(screen="dead"), terminal_size=(100, 30), run_before=run_before)


def test_task_detail(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _open_group(pilot)
        await pilot.press("enter")
        await until(
            pilot,
            lambda: (
                isinstance(pilot.app.screen, TaskDetailScreen)
                and pilot.app.screen.record is not None
            ),
        )

    assert snap_compare(make_app(screen="dead"), terminal_size=(100, 40), run_before=run_before)


def test_event_log(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: pilot.app.events_tail)
        await pilot.press("l")

    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=run_before)


def test_edit_trail_as_a_diff(snap_compare: Any) -> None:

    console = FakeConsole()
    dead = next(r for r in console.records.values() if r.state.value == "DEAD")
    edit = {
        "at": dead.finished_at,
        "note": "amount was in cents",
        "old_args": [17, "EUR"],
        "old_kwargs": {"card_token": "tok_abc"},
        "args": [1700, "EUR"],
        "kwargs": {"card_token": "tok_abc"},
    }
    console.records[dead.id] = dead.replace(edits=(edit,))

    async def run_before(pilot: Pilot[Any]) -> None:
        pilot.app.open_task(dead.id)
        await until(
            pilot,
            lambda: (
                isinstance(pilot.app.screen, TaskDetailScreen)
                and pilot.app.screen.record is not None
            ),
        )
        pilot.app.screen.query_one("#detail-scroll").scroll_end(animate=False)
        await pilot.pause()

    app = make_app(console=console, screen="dead")
    assert snap_compare(app, terminal_size=(100, 30), run_before=run_before)


@pytest.mark.parametrize("kind", ["t", "R"], ids=["scheduled", "retry"])
def test_waiting_lists(snap_compare: Any, kind: str) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await until(pilot, lambda: isinstance(pilot.app.screen, TasksScreen))
        await pilot.press(kind)
        await until(
            pilot, lambda: isinstance(pilot.app.screen, WaitingScreen) and pilot.app.screen.loaded
        )

    assert snap_compare(make_app(screen="tasks"), terminal_size=(100, 24), run_before=run_before)


def test_replay_again_confirmation(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _open_group(pilot)
        await pilot.press("a", "r")
        await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmDialog))

    assert snap_compare(make_app(screen="dead"), terminal_size=(100, 30), run_before=run_before)


def test_row_view(snap_compare: Any) -> None:
    async def run_before(pilot: Pilot[Any]) -> None:
        await _open_group(pilot)
        await pilot.press("v")
        await until(pilot, lambda: isinstance(pilot.app.screen, RowDialog))

    assert snap_compare(make_app(screen="dead"), terminal_size=(80, 24), run_before=run_before)
