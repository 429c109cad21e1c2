"""App behaviour on the fake console: navigation, palette, errors, read-only, launch."""

from __future__ import annotations

import pytest

from dtq_tui.app import DTQApp
from dtq_tui.connection import ReconnectingConsole
from dtq_tui.dialogs.confirm import ConfirmDialog
from dtq_tui.dialogs.help import HelpDialog
from dtq_tui.dialogs.prompt import PromptDialog
from dtq_tui.launch import run
from dtq_tui.screens.base import TABS
from dtq_tui.screens.schedules import SchedulesScreen
from dtq_tui.screens.workflows import WorkflowsScreen
from dtq_tui.widgets.chrome import ConnectionBanner
from tests.tui.conftest import until
from tests.tui.fake import FakeConsole


async def test_number_keys_jump_and_escape_goes_back(fake_app: DTQApp) -> None:
    async with fake_app.run_test() as pilot:
        await pilot.press("5")
        assert fake_app.current_mode == "workflows"
        await pilot.press("6")
        assert isinstance(fake_app.screen, SchedulesScreen)
        await pilot.press("escape")
        assert isinstance(fake_app.screen, WorkflowsScreen)


async def test_colon_jumps_to_a_screen_by_name(fake_app: DTQApp) -> None:
    async with fake_app.run_test() as pilot:
        await pilot.press("colon")
        assert isinstance(fake_app.screen, PromptDialog)
        await pilot.press(*"dlq", "enter")
        assert fake_app.current_mode == "dead"


async def test_palette_offers_every_screen_and_the_screens_actions(fake_app: DTQApp) -> None:
    async with fake_app.run_test() as pilot:
        await pilot.press("4")
        titles = [c.title for c in fake_app.get_system_commands(fake_app.screen)]
        for _, _, mode in TABS:
            assert f"Go to {fake_app.MODES[mode].TITLE}" in titles
        assert "Dead letters: Replay group" in titles
        assert "Dead letters: Purge group" in titles


async def test_help_lists_the_screens_keys(fake_app: DTQApp) -> None:
    async with fake_app.run_test() as pilot:
        await pilot.press("7", "question_mark")
        assert isinstance(fake_app.screen, HelpDialog)
        keys = {k for k, _, _ in fake_app.screen.screen_keys}
        assert {"e", "o", "c"} <= keys
        assert all(m for k, _, m in fake_app.screen.screen_keys if k in {"e", "o", "c"})


async def test_a_missing_console_method_is_reported_not_raised() -> None:
    app = DTQApp(FakeConsole(without=["pause_schedule"]), refresh_s=0.05)
    async with app.run_test() as pilot:
        await pilot.press("6")
        await until(pilot, lambda: app.screen.snapshot is not None)
        await pilot.press("p")
        await until(pilot, lambda: app._notifications)
        assert "has no pause_schedule() yet" in list(app._notifications)[-1].message


async def test_actions_reach_the_console(fake: FakeConsole, fake_app: DTQApp) -> None:
    async with fake_app.run_test() as pilot:
        await until(pilot, lambda: fake_app.screen.snapshot is not None)
        await pilot.press("p")  # bulk, the first queue, is running: pause it
        await pilot.press("6", "t", "7", "o")
        # Forcing a breaker asks first, naming it; nothing happens before the answer.
        await until(pilot, lambda: isinstance(fake_app.screen, ConfirmDialog))
        assert "would force breaker payments open" in fake_app.screen.message
        assert len(fake.calls) == 2
        await pilot.press("y")
        await until(pilot, lambda: len(fake.calls) >= 3)
    names = [c[0] for c in fake.calls]
    assert names == ["pause_queue", "trigger_schedule", "set_breaker"]
    assert fake.calls[0][1] == ("bulk",)
    assert fake.calls[2][1] == ("payments", "open")


async def test_a_lost_connection_shows_a_banner_and_recovers() -> None:
    console = FakeConsole(fail=True)
    app = DTQApp(console, refresh_s=0.05)
    async with app.run_test() as pilot:
        banner = app.screen.query_one(ConnectionBanner)
        await until(pilot, lambda: banner.has_class("-visible"))
        assert "connection refused" in str(banner.render())
        console.fail = False
        await until(pilot, lambda: not banner.has_class("-visible"), timeout=10)
        await until(pilot, lambda: app.snapshot is not None)


def test_launch_reports_a_bad_url_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--backend", "bogus://nowhere"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dtq-tui: ") and "\n" not in err
    assert run(["--backend", "memory://"]) == 2
    assert "--demo" in capsys.readouterr().err


def test_an_unreachable_backend_gives_a_reconnecting_console() -> None:
    def refuse(url: str) -> object:
        raise ConnectionRefusedError("no owner")

    console = ReconnectingConsole("embedded:///nowhere", opener=refuse)
    with pytest.raises(ConnectionError, match="cannot reach embedded:///nowhere"):
        console.snapshot()
