"""What operators expect: replay once, confirmations, run-now, copy, the palette, the row view."""

from __future__ import annotations

import asyncio

from dtq_core.events import Event
from dtq_core.task import TaskState
from dtq_tui.app import DTQApp
from dtq_tui.dialogs.confirm import ConfirmDialog
from dtq_tui.dialogs.row import RowDialog
from dtq_tui.palette import Palette
from dtq_tui.screens.limits import LimitsScreen
from dtq_tui.screens.tasks import TasksScreen
from dtq_tui.screens.waiting import WaitingScreen
from dtq_tui.widgets.chrome import StatusLine, TopBar
from dtq_tui.widgets.event_log import causal_order
from dtq_tui.widgets.task_view import args_diff
from tests.tui.conftest import Engine, until, until_engine
from tests.tui.fake import FakeConsole
from tests.tui.test_engine_flows import REFRESH, open_group


async def test_a_second_replay_needs_replay_again(engine: Engine) -> None:
    (dead_id,) = engine.dead(7)
    engine.broken = False
    app = DTQApp(engine.console, refresh_s=REFRESH)
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await open_group(pilot, app)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await until_engine(lambda: engine.record(dead_id).replayed_to)
        first = engine.record(dead_id).replayed_to
        await until(pilot, lambda: screen.records and screen.records[0].replayed_to)
        await until(pilot, lambda: "↻" in str(screen.table.table.get_row(dead_id)))
        # Again: the dialog says it was replayed, and where; "y" means replay again.
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        dialog = app.screen
        assert dialog.title_text == "Replay 1 dead task again?"
        assert f"already replayed ({dead_id} as {first[0]})" in dialog.message
        await pilot.press("n")
        await asyncio.sleep(0.3)
        assert engine.record(dead_id).replayed_to == first
        # h hides what was replayed.
        await pilot.press("h")
        assert screen.table.table.row_count == 0
        await pilot.press("h")
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await until_engine(lambda: len(engine.record(dead_id).replayed_to) == 2)


async def test_cancel_asks_naming_the_task_and_queue(engine: Engine) -> None:
    tid = engine.send("echo", 1, countdown=600)
    app = DTQApp(engine.console, refresh_s=REFRESH)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3")
        await until(pilot, lambda: isinstance(app.screen, TasksScreen) and app.screen.records)
        screen = app.screen
        screen.table.table.move_cursor(row=screen.table.table.row_index(tid))
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert f"would cancel task {tid} (echo) in queue echoes" in app.screen.message
        await pilot.press("n")
        await asyncio.sleep(0.2)
        assert engine.record(tid).state is TaskState.PENDING
        await pilot.press("c")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await until_engine(lambda: engine.record(tid).state is TaskState.CANCELLED)


async def test_scheduled_list_runs_a_delayed_task_now(engine: Engine) -> None:
    tid = engine.send("echo", 5, countdown=600)
    app = DTQApp(engine.console, refresh_s=REFRESH)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3", "t")
        await until(pilot, lambda: isinstance(app.screen, WaitingScreen) and app.screen.records)
        screen = app.screen
        assert [r.id for r in screen.records] == [tid]
        assert "in 9m" in str(screen.table.table.get_row(tid)[3])
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert f"would run task {tid} (echo) in queue echoes now" in app.screen.message
        await pilot.press("y")
        await until_engine(lambda: engine.record(tid).state is TaskState.CANCELLED)
        await until(pilot, lambda: not screen.records)
    ran = [r for r in engine.console.tasks("task:echo") if r.state is TaskState.SUCCESS]
    assert [r.args for r in ran] == [[5]]


async def test_scheduled_finds_delayed_tasks_behind_a_backlog(engine: Engine) -> None:
    # A paused queue with a backlog of newer ready tasks: the Scheduled list asks the
    # store for what is due next, not for the newest records (it showed none).
    engine.console.pause_queue("echoes")
    tid = engine.send("echo", 5, countdown=600)
    for i in range(700):
        engine.send("echo", i)
    app = DTQApp(engine.console, refresh_s=REFRESH)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("3", "t")
        await until(pilot, lambda: isinstance(app.screen, WaitingScreen) and app.screen.loaded)
        assert [r.id for r in app.screen.records] == [tid]


async def test_y_copies_the_selected_id_and_v_shows_the_row_whole() -> None:
    app = DTQApp(FakeConsole(), refresh_s=30.0)
    copied: list[str] = []
    app.copy_to_clipboard = copied.append  # type: ignore[method-assign]
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("4")
        await until(pilot, lambda: app.screen.groups)
        await pilot.press("enter")
        await until(pilot, lambda: getattr(app.screen, "records", None))
        rec = app.screen.current()
        await pilot.press("y")
        assert copied == [rec.id]
        assert f"copied {rec.id}" in list(app._notifications)[-1].message
        await pilot.press("v")
        assert isinstance(app.screen, RowDialog)
        labels = [label for label, _ in app.screen.cells]
        assert labels[-1] == "Error" and "Replayed as" in labels  # hidden columns too
        error = dict(app.screen.cells)["Error"]
        assert "gateway timeout" in error.plain and not error.plain.endswith("…")


async def test_the_palette_runs_another_screens_action_there() -> None:
    fake = FakeConsole()
    app = DTQApp(fake, refresh_s=30.0)
    async with app.run_test(size=(100, 30)) as pilot:
        await until(pilot, lambda: app.screen.snapshot is not None)
        commands = {c.title: c for c in app.get_system_commands(app.screen)}
        titles = list(commands)
        assert len(titles) == len(set(titles))  # each entry once
        assert "Overview: Focus Next" not in titles  # Textual's own come once, from Textual
        assert titles.count("Quit") == 1
        commands["Limits: Open breaker"].callback()
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert app.dtq_screen is not None and isinstance(app.dtq_screen, LimitsScreen)
        assert "would force breaker payments open" in app.screen.message


async def test_tabs_respond_to_clicks() -> None:
    app = DTQApp(FakeConsole(), refresh_s=30.0)
    async with app.run_test(size=(120, 30)) as pilot:
        await until(pilot, lambda: app.screen.snapshot is not None)
        bar = app.screen.query_one(TopBar)
        start = next(s[0] for s in bar.tab_spans if s[2] == "limits")
        await pilot.click(TopBar, offset=(start + 1, 0))
        await until(pilot, lambda: app.current_mode == "limits")


async def test_read_only_badge_is_always_visible_at_80_columns() -> None:
    app = DTQApp(FakeConsole(), read_only=True, refresh_s=30.0)
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.screen.snapshot is not None)
        for key in "12345678":
            await pilot.press(key)
            await pilot.pause()
            assert "READ-ONLY" in str(app.screen.query_one(TopBar).render())


async def test_the_status_line_folds_instead_of_clipping() -> None:
    app = DTQApp(FakeConsole(), refresh_s=30.0)
    async with app.run_test(size=(60, 24)) as pilot:
        await until(pilot, lambda: app.screen.snapshot is not None)
        line = app.screen.query_one(StatusLine)
        line.show("memory:// · up 3h · 2/4 busy · 12 dead", "12 queues, 2 paused · more status")
        await pilot.pause()
        assert line.size.height == 2
        first, second = (line.render_line(y).text for y in range(2))
        assert first.strip() == "memory:// · up 3h · 2/4 busy · 12 dead"
        assert second.rstrip().endswith("12 queues, 2 paused · more status")
        assert second.startswith("   ")  # right-aligned, not clipped


def test_creation_comes_before_a_tasks_other_events() -> None:
    def ev(seq: int, tid: str, old: str | None, new: str) -> Event:
        return Event(seq, 0.0, tid, "t", "q", old, new)

    got = causal_order(
        [ev(1, "a", "PENDING", "RUNNING"), ev(2, "b", None, "PENDING"), ev(3, "a", None, "PENDING")]
    )
    assert [(e.task_id, e.old) for e in got] == [("a", None), ("a", "PENDING"), ("b", None)]


def test_the_edit_trail_is_a_diff_of_the_args() -> None:
    before = {"args": [4, "EUR"], "kwargs": {"retry": True}}
    after = {"args": [21, "EUR"], "kwargs": {"retry": True}}
    lines = [line.strip() for line in args_diff(before, after, Palette({})).plain.splitlines()]
    assert "-    4," in lines and "+    21," in lines
    assert not any("retry" in line and line[:1] in "+-" for line in lines)
    assert args_diff(before, before, Palette({})).plain.strip() == "(no change)"


async def test_tab_in_the_args_editor_moves_to_the_note() -> None:
    from textual.widgets import Input, TextArea

    from dtq_tui.dialogs.edit_args import EditArgsDialog

    app = DTQApp(FakeConsole(), refresh_s=30.0)
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.press("4")
        await until(pilot, lambda: app.screen.groups)
        await pilot.press("enter")
        await until(pilot, lambda: getattr(app.screen, "records", None))
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, EditArgsDialog))
        dialog = app.screen
        before = dialog.query_one(TextArea).text
        assert isinstance(app.focused, TextArea)
        await pilot.press("tab")
        assert isinstance(app.focused, Input) and app.focused.id == "note"
        assert dialog.query_one(TextArea).text == before  # no tab typed into the JSON
