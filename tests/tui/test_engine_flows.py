"""Pilot tests that drive real flows against a real engine (memory:// with workers)."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest
from textual import events
from textual.widgets import Input, Static, TextArea

from dtq_core.backends import memory_index
from dtq_core.task import TaskState
from dtq_tui.app import DTQApp
from dtq_tui.dialogs.confirm import ConfirmDialog
from dtq_tui.dialogs.edit_args import EditArgsDialog
from dtq_tui.screens.dead import DeadGroupScreen, DeadLettersScreen
from dtq_tui.screens.overview import OverviewScreen
from dtq_tui.screens.tasks import EN_DASH, TasksScreen
from dtq_tui.widgets.chrome import DTQFooter
from tests.tui.conftest import Engine, until, until_engine

#: Fast enough to see changes quickly, slow enough to leave Pilot's idle checks alone.
REFRESH = 0.2


async def open_group(pilot, app: DTQApp) -> DeadGroupScreen:
    """Go to the dead letters, wait for the groups, open the first one."""
    await pilot.press("4")
    await until(pilot, lambda: isinstance(app.screen, DeadLettersScreen) and app.screen.groups)
    await pilot.press("enter")
    await until(pilot, lambda: isinstance(app.screen, DeadGroupScreen) and app.screen.records)
    screen = app.screen
    assert isinstance(screen, DeadGroupScreen)
    return screen


async def test_replay_a_dead_task_runs_it_to_success(engine: Engine) -> None:
    (dead_id,) = engine.dead(3)
    engine.broken = False
    app = DTQApp(engine.console, refresh_s=REFRESH)
    async with app.run_test() as pilot:
        await open_group(pilot, app)
        await pilot.press("r")
        # Asks first, naming the task and its queue, in the CLI's --dry-run words.
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert app.screen.title_text == "Replay 1 dead task?"
        assert "would replay 1 dead task (selected in flaky" in app.screen.message
        assert f"from queue default: {dead_id}." in app.screen.message
        assert engine.record(dead_id).replayed_to == ()
        await pilot.press("y")
        await until_engine(lambda: engine.record(dead_id).replayed_to)
        new_id = engine.record(dead_id).replayed_to[0]
        rec = await asyncio.to_thread(engine.broker.wait, new_id, 10)
        assert rec.state is TaskState.SUCCESS
        assert rec.result == 6
        assert rec.replayed_from == dead_id
        # The dead record stays.
        assert engine.record(dead_id).state is TaskState.DEAD


async def test_edit_args_and_replay_uses_the_new_args_and_keeps_a_trail(engine: Engine) -> None:
    (dead_id,) = engine.dead(4)
    app = DTQApp(engine.console, refresh_s=REFRESH)
    async with app.run_test(size=(100, 30)) as pilot:
        await open_group(pilot, app)
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, EditArgsDialog))
        dialog = app.screen
        assert '"args": [\n    4\n  ]' in dialog.query_one(TextArea).text
        dialog.query_one(TextArea).load_text('{"args": [21], "kwargs": {}}')
        # No note yet: refused with a message, nothing replayed.
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, EditArgsDialog)
        assert engine.record(dead_id).replayed_to == ()
        dialog.query_one("#note", Input).value = "x was out of range"
        await pilot.press("ctrl+s")
        await until_engine(lambda: engine.record(dead_id).replayed_to)
    dead = engine.record(dead_id)
    new_id = dead.replayed_to[0]
    rec = engine.broker.wait(new_id, 10)
    assert rec.state is TaskState.SUCCESS
    assert rec.result == 42
    assert rec.args == [21]
    (edit,) = dead.edits
    assert edit["note"] == "x was out of range"
    assert edit["old_args"] == [4]
    assert edit["args"] == [21]
    assert edit["at"] > 0


async def test_tag_three_and_replay_them(engine: Engine) -> None:
    ids = engine.dead(1, 2, 3, 5)
    engine.broken = False
    app = DTQApp(engine.console, refresh_s=REFRESH)
    async with app.run_test() as pilot:
        screen = await open_group(pilot, app)
        await until(pilot, lambda: len(screen.records) == 4)
        await pilot.press("space", "space", "space")
        assert len(screen.tagged) == 3
        tagged = set(screen.tagged)
        await pilot.press("r")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert app.screen.title_text == "Replay 3 dead tasks?"
        assert all(i in app.screen.message for i in tagged)
        await pilot.press("y")
        await until_engine(lambda: all(engine.record(i).replayed_to for i in tagged))
    for dead_id in tagged:
        rec = engine.broker.wait(engine.record(dead_id).replayed_to[0], 10)
        assert rec.state is TaskState.SUCCESS
    (untouched,) = set(ids) - tagged
    assert engine.record(untouched).replayed_to == ()


async def test_purge_asks_with_the_count_and_cancel_keeps_everything(engine: Engine) -> None:
    engine.dead(1, 2)
    app = DTQApp(engine.console, refresh_s=REFRESH)
    async with app.run_test() as pilot:
        screen = await open_group(pilot, app)
        await until(pilot, lambda: len(screen.records) == 2)
        await pilot.press("a", "d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert app.screen.title_text == "Purge 2 dead tasks?"
        assert "would purge 2 dead tasks (tagged in flaky · ValueError" in app.screen.message
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, DeadGroupScreen))
        assert len(engine.console.dead_letters()) == 2
        assert len(screen.tagged) == 2  # cancelling keeps the selection
        await pilot.press("d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await until_engine(lambda: not engine.console.dead_letters())
        # The emptied group says so.
        await until(pilot, lambda: not screen.records)


async def test_read_only_refuses_every_change(engine: Engine) -> None:
    (dead_id,) = engine.dead(6)
    engine.broken = False
    app = DTQApp(engine.console, read_only=True, refresh_s=REFRESH)
    async with app.run_test() as pilot:
        await until(pilot, lambda: app.screen.query_one(DTQFooter).query(".read-only"))
        await open_group(pilot, app)
        await pilot.press("r", "R", "e", "d")
        await pilot.pause(0.2)
        assert isinstance(app.screen, DeadGroupScreen)  # no editor, no confirmation
        notes = [n.message for n in app._notifications]
        assert any("read-only" in m for m in notes)
        await pilot.press("1", "p")
        await pilot.pause(0.2)
    assert engine.record(dead_id).replayed_to == ()
    assert engine.record(dead_id).state is TaskState.DEAD
    assert not any(q.paused for q in engine.console.snapshot().queues)


async def test_a_filter_narrows_the_tasks_table(engine: Engine) -> None:
    engine.broken = False
    ids = [engine.send("flaky", 20 + i) for i in range(3)] + [engine.send("echo", 1)]
    for i in ids:
        engine.broker.wait(i, 10)
    app = DTQApp(engine.console, refresh_s=REFRESH)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("3")
        await until(
            pilot, lambda: isinstance(app.screen, TasksScreen) and len(app.screen.records) == 4
        )
        screen = app.screen
        await pilot.press("slash")
        screen.filter_bar.value = "task:echo"
        await pilot.press("enter")
        await until(pilot, lambda: len(screen.records) == 1)
        assert screen.records[0].name == "echo"
        assert screen.table.table.row_count == 1
        # A bad filter is refused in place, with the filter language's message.
        await pilot.press("slash")
        screen.filter_bar.value = "color:red"
        await pilot.press("enter")
        assert "unknown filter key" in screen.filter_bar.border_subtitle
        await pilot.press("escape")
        assert screen.filter_text == "task:echo"


async def test_pausing_a_queue_stops_its_consumption(engine: Engine) -> None:
    first = engine.send("echo", 1)
    engine.broker.wait(first, 10)
    app = DTQApp(engine.console, refresh_s=REFRESH)
    async with app.run_test() as pilot:
        screen = app.screen
        assert isinstance(screen, OverviewScreen)
        await until(pilot, lambda: "echoes" in screen.queues.table.keys)
        screen.queues.table.move_cursor(row=screen.queues.table.keys.index("echoes"))
        await pilot.press("p")
        await until_engine(
            lambda: any(q.name == "echoes" and q.paused for q in engine.console.snapshot().queues)
        )
        held = [engine.send("echo", i) for i in range(5)]
        await asyncio.sleep(0.5)  # workers are idle: nothing may start in this time
        assert all(engine.record(i).state is TaskState.PENDING for i in held)
        await until(pilot, lambda: "⏸" in str(screen.queues.table.get_row("echoes")[0]))
        await pilot.press("p")
        for i in held:
            rec = await asyncio.to_thread(engine.broker.wait, i, 10)
            assert rec.state is TaskState.SUCCESS


async def test_random_keys_against_a_busy_engine_never_crash(engine: Engine) -> None:
    """Keys as fast as a person mashing them, while tasks flow: nothing may raise."""
    engine.dead(1, 2, 3)
    engine.broken = False
    stop = threading.Event()

    def produce() -> None:
        i = 0
        while not stop.wait(0.002):
            engine.send("echo", i)
            i += 1

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    rng = random.Random(5)
    keys = [*"12345678", "enter", "escape", "down", "up", "space", "l", "question_mark"]
    keys += ["s", "right_square_bracket", "left_square_bracket", "n", "w", "k", "tab"]
    app = DTQApp(engine.console, refresh_s=0.05)
    try:
        # run_test re-raises whatever the app raised, when the block ends.
        async with app.run_test(size=(100, 30)) as pilot:
            for _ in range(100):
                key = rng.choice(keys)
                char = key if len(key) == 1 else {"space": " ", "question_mark": "?"}.get(key)
                app.post_message(events.Key(key, char))
                await asyncio.sleep(rng.choice([0.0, 0.01, 0.03, 0.1]))
            # Every key is handled before the app closes. On a loaded machine the last
            # ones may still be queued after a fixed wait, and a key that reaches the app
            # while run_test takes its screens down fails in Textual's own key dispatch
            # ("No screens on stack"), not in the console's code.
            for _ in range(200):
                if app.message_queue_size == 0:
                    break
                await asyncio.sleep(0.05)
            await pilot.pause()
            await asyncio.sleep(0.3)
            assert app.message_queue_size == 0
    finally:
        stop.set()
        thread.join(timeout=2)


async def test_tasks_pages_by_cursor_with_a_total_and_stay_put_while_tasks_arrive(
    engine: Engine,
) -> None:
    engine.console.pause_queue("default")  # the tasks stay PENDING: a fixed order
    first_ids = [engine.send("flaky", 20 + i) for i in range(60)]
    app = DTQApp(engine.console, refresh_s=REFRESH)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("3")
        await until(
            pilot, lambda: isinstance(app.screen, TasksScreen) and len(app.screen.records) == 50
        )
        screen = app.screen
        assert isinstance(screen, TasksScreen)
        labels = [str(c.label) for c in screen.table.table.columns.values()]
        assert "Age ▼" in labels  # newest first, sorted in the backend
        assert screen.status_text() == f"1{EN_DASH}50 of 60"
        assert [r.id for r in screen.records] == first_ids[::-1][:50]
        await pilot.press("right_square_bracket")
        await until(pilot, lambda: screen.page == 1 and len(screen.records) == 10)
        second = [r.id for r in screen.records]
        assert second == first_ids[::-1][50:]
        assert screen.status_text() == f"51{EN_DASH}60 of 60"
        # New tasks sort before the cursor: the page keeps its rows, the total grows.
        new_ids = [engine.send("flaky", 90 + i) for i in range(5)]
        await until(pilot, lambda: screen.last_page is not None and screen.last_page.total == 65)
        assert [r.id for r in screen.records] == second
        assert screen.status_text() == f"51{EN_DASH}60 of 65"
        await pilot.press("left_square_bracket")
        await until(pilot, lambda: screen.page == 0 and screen.records[0].args == [94])
        # `s` sorts the whole listing by the next sortable column: the id, ascending.
        await pilot.press("s")
        await until(pilot, lambda: screen.last_page is not None and screen.last_page.sort == "id")
        assert [r.id for r in screen.records] == sorted(first_ids + new_ids)[:50]
        labels = [str(c.label) for c in screen.table.table.columns.values()]
        assert "ID ▲" in labels and "Age" in labels
        assert screen.status_text() == f"1{EN_DASH}50 of 65"


async def test_a_search_past_the_scan_budget_goes_on_with_the_next_page(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(memory_index, "SCAN_BUDGET", 1000)  # two blocks of ids per call
    engine.console.pause_queue("default")
    needle = engine.send("flaky", "needle")
    for i in range(4000):
        engine.send("flaky", i)
    app = DTQApp(engine.console, refresh_s=REFRESH)
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("3")
        await until(pilot, lambda: isinstance(app.screen, TasksScreen) and app.screen.loaded)
        screen = app.screen
        assert isinstance(screen, TasksScreen)
        await pilot.press("slash")
        screen.filter_bar.value = "text:needle"
        await pilot.press("enter")
        await until(pilot, lambda: screen.last_page is not None and not screen.records)
        assert screen.status_text() == "0 of 0+"
        assert "] searches on" in screen.table.empty_text
        for _ in range(5):  # each press searches the next rows, never back
            if screen.records:
                break
            pages = len(screen.cursors)
            await pilot.press("right_square_bracket")
            await until(pilot, lambda n=pages: len(screen.cursors) == n + 1 and screen.loaded)
            await until(pilot, lambda n=pages: screen.last_page.next_after != screen.cursors[n - 1])
        assert [r.id for r in screen.records] == [needle]


async def test_overview_windows_show_every_process_finished_tasks(engine: Engine) -> None:
    """`w` on Overview: tasks finished, per second and run-time percentiles over 1 m,
    10 m, 1 h and 24 h, from the published histograms."""
    ids = [engine.send("echo", i) for i in range(7)]
    for tid in ids:
        await asyncio.to_thread(engine.broker.wait, tid, 10)
    app = DTQApp(engine.console, refresh_s=REFRESH)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: isinstance(app.screen, OverviewScreen) and app.screen.snapshot)
        await pilot.press("w")
        panel = app.screen.query_one("#throughput")
        assert panel.border_title == "done, all processes"

        await until(pilot, lambda: "24h" in _text(app) and "p99 run" in _text(app))
        text = _text(app)
        row = next(line for line in text.splitlines() if "tasks" in line)
        assert row.split()[-4:] == ["7", "7", "7", "7"], row
        await pilot.press("w")
        assert panel.border_title == "throughput"


def _text(app: DTQApp) -> str:
    """What the throughput panel shows, as plain text."""
    from rich.console import Console

    static = app.screen.query_one("#throughput-figures", Static)
    console = Console(width=60, record=True, color_system=None)
    console.print(static.content)
    return console.export_text()
