"""Hostile strings through every screen of the console, on a real engine.

Task, queue, schedule, breaker, limiter and workflow names, arguments and error messages
carry markup tags (opened, closed, ``[/]``, links, styles), ANSI escapes, control
characters, newlines, wide characters and a 10 kB message. Every screen is visited at
80x24 and at 120x40 (drill-downs, dialogs and the event log included): the app must keep
running, nothing may reach the terminal raw, and the text must be shown literally.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from textual.pilot import Pilot

from dtq_core import Broker, BrokerConfig, task
from dtq_core.broker import default_hooks
from dtq_core.registry import Registry
from dtq_core.scheduling.dag import Workflow, run_workflow
from dtq_core.scheduling.periodic import PeriodicHook, ScheduleRegistry, periodic
from dtq_core.task import TaskState
from dtq_core.text import escape_controls
from dtq_tui.app import DTQApp
from dtq_tui.dialogs.confirm import ConfirmDialog
from dtq_tui.dialogs.prompt import PromptDialog
from dtq_tui.plain import plain
from dtq_tui.screens.dead import DeadGroupScreen, DeadLettersScreen
from dtq_tui.screens.task_detail import TaskDetailScreen
from dtq_tui.screens.tasks import TasksScreen
from dtq_tui.widgets.task_view import render_task
from tests.tui.conftest import until

#: Names: a markup-looking name, with an escape, a bidi override and wide characters.
TASK = "[b]imp[/b]\x1b[31m名"
QUEUE = "[/q]\x1b[2J"
BREAKER = "[link=http://x]brk[/link]"
SCHEDULE = "[red on blue]tick[/]"
FLOW = "[/]flow\u202e"

#: Error messages a worker may well raise.
MESSAGES = [
    "KeyError: '[/x]'",
    "[/]",
    "path C:\\tmp\\[new] and regex [a-z]+[/b]",
    "\x1b[31mred\x1b[0m \x1b]8;;http://evil\x07link\x1b]8;;\x07",
    "ctl \x00\x07\x08\r\x7f end",
    "line one\nline two\tand a tab",
    "幅の広い文字 and emoji 🙂 テスト",
    "[bold]" + "x" * 10_000 + "[/bold]",
]

CONTROL = {chr(c) for c in range(32)} - {"\n"} | {"\x7f"}


class HostileEngine:
    """A memory engine whose every name and message is hostile."""

    def __init__(self) -> None:
        self.registry = Registry()
        schedules = ScheduleRegistry()

        @task(
            name=TASK,
            registry=self.registry,
            queue=QUEUE,
            max_retries=0,
            breaker=BREAKER,
            breaker_threshold=1000,
            rate_limit="1000/s",
        )
        def imp(i: int, note: str) -> int:
            raise ValueError(MESSAGES[i % len(MESSAGES)])

        @task(name="ok[/]", registry=self.registry, queue=QUEUE)
        def ok(x: Any) -> Any:
            return x

        @periodic("*/15 * * * * *", name=SCHEDULE, registry=self.registry, schedules=schedules)
        def tick() -> str:
            return "[/]"

        hooks = [
            PeriodicHook(schedules) if isinstance(h, PeriodicHook) else h for h in default_hooks()
        ]
        self.broker = Broker(
            BrokerConfig(
                backend="memory://",
                num_workers=2,
                registry=self.registry,
                hooks=hooks,
                heartbeat_s=0.5,
            )
        )
        self.broker.start()
        self.console = self.broker.control
        self.dead = [self.broker.send(TASK, [i, MESSAGES[i]]).id for i in range(len(MESSAGES))]
        for i in self.dead:
            assert self.broker.wait(i, timeout=10).state is TaskState.DEAD
        wf = Workflow(FLOW)
        wf.node("a[/]", "ok[/]", ["\x1b[1m"])
        wf.node("b", TASK, [1, "[/]"], after="a[/]")
        run_workflow(self.broker, wf)
        self.console.trigger_schedule(SCHEDULE)

    def stop(self) -> None:
        self.broker.stop(drain_timeout=1.0)


@pytest.fixture(scope="module")
def hostile() -> Iterator[HostileEngine]:
    """One hostile engine for the module (both sizes look at the same data)."""
    e = HostileEngine()
    deadline = time.monotonic() + 10
    while not any(w.state != "waiting" for r in e.console.snapshot().workflows for w in r.nodes):
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    yield e
    e.stop()


def screen_text(app: DTQApp) -> str:
    """What the terminal shows now, as text."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip) for strip in strips)


def assert_clean(app: DTQApp, *literal: str) -> None:
    """Nothing raw reached the screen, and each ``literal`` is shown as written."""
    text = screen_text(app)
    raw = sorted({repr(c) for c in text if c in CONTROL})
    assert not raw, f"raw control characters on screen: {raw}"
    for want in literal:
        assert want in text, f"{want!r} not shown literally on {type(app.screen).__name__}"


async def visit(pilot: Pilot[Any], app: DTQApp, key: str, ready: Any) -> None:
    await pilot.press(key)
    await until(pilot, lambda: ready(app), timeout=8)
    await pilot.pause(0.05)


SIZES = {"80x24": (80, 24), "120x40": (120, 40)}


@pytest.mark.parametrize("size", SIZES.values(), ids=SIZES.keys())
async def test_hostile_strings_on_every_screen(
    hostile: HostileEngine, size: tuple[int, int]
) -> None:
    app = DTQApp(hostile.console, refresh_s=0.2)
    q = escape_controls(QUEUE)
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: app.screen.snapshot is not None and app.snapshot.queues)
        await pilot.pause(0.1)
        assert_clean(app, q[:10])
        await visit(pilot, app, "2", lambda a: a.screen.snapshot is not None)
        assert_clean(app)
        await visit(
            pilot, app, "3", lambda a: isinstance(a.screen, TasksScreen) and a.screen.records
        )
        assert_clean(app, "[b]imp[/b]")
        tasks = app.screen
        row = next(i for i, r in enumerate(tasks.records) if r.name == TASK)
        tasks.table.table.move_cursor(row=tasks.table.table.row_index(tasks.records[row].id))
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, TaskDetailScreen) and app.screen.record)
        await pilot.pause(0.05)
        assert_clean(app, "[b]imp[/b]\\x1b[31m名")
        await pilot.press("escape")
        await visit(
            pilot, app, "4", lambda a: isinstance(a.screen, DeadLettersScreen) and a.screen.groups
        )
        assert_clean(app, "[b]imp[/b]")
        groups = app.screen.groups
        # Every message through its group and detail at 80x24; the wide layout once.
        for row in range(len(groups) if size == (80, 24) else 1):
            app.screen.table.table.move_cursor(row=row)
            await pilot.press("enter")
            await until(
                pilot, lambda: isinstance(app.screen, DeadGroupScreen) and app.screen.records
            )
            await pilot.pause(0.05)
            assert_clean(app)
            await pilot.press("enter")  # the dead task's detail: its whole message
            await until(
                pilot, lambda: isinstance(app.screen, TaskDetailScreen) and app.screen.record
            )
            await pilot.pause(0.05)
            assert_clean(app)
            if row == 0:
                # The confirmation names the task and its queue, never the message: the
                # same text for every group, so it is looked at once.
                await pilot.press("r")
                await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
                await pilot.pause(0.05)
                assert_clean(app, "would replay 1 dead task")
                await pilot.press("n")
            await pilot.press("escape", "escape")
            await until(pilot, lambda: isinstance(app.screen, DeadLettersScreen))
        await visit(pilot, app, "5", lambda a: a.screen.snapshot and a.snapshot.workflows)
        assert_clean(app, "[/]flow")
        await visit(pilot, app, "6", lambda a: a.screen.snapshot and a.snapshot.schedules)
        assert_clean(app, "[red on blue]tick[/]", "*/15 * * * * *")
        await visit(pilot, app, "7", lambda a: a.screen.snapshot and a.snapshot.breakers)
        assert_clean(app, "[link=http://x]br")
        app.screen.query_one("#limiters").query_one("LiveTable").focus()
        await pilot.press("e")  # the rate dialog (its help text once crashed it)
        await until(pilot, lambda: isinstance(app.screen, PromptDialog))
        await pilot.pause(0.05)
        assert_clean(app, "RATE[/s|/m|/h]")
        await pilot.press("escape")
        await visit(pilot, app, "8", lambda a: a.screen.snapshot is not None)
        assert_clean(app)
        await pilot.press("l")  # the event log, with hostile names in every line
        await pilot.pause(0.3)
        assert_clean(app)
        await pilot.press("colon")
        await pilot.press(*"dlq", "enter")
        await until(pilot, lambda: isinstance(app.screen, DeadLettersScreen))
        await pilot.pause(0.1)
        assert_clean(app)


def test_the_detail_shows_a_long_message_whole(hostile: HostileEngine) -> None:
    from dtq_tui.palette import Palette

    long_id = hostile.dead[-1]
    rec = hostile.console.task(long_id)
    assert rec is not None and rec.error is not None
    group = render_task(rec, time.time(), Palette({}))
    shown = "".join(getattr(r, "plain", "") for r in group.renderables)
    assert "x" * 10_000 in shown  # whole in the detail
    assert plain(rec.error.message).plain.endswith("…")  # cut with a sign in a cell


def test_plain_escapes_and_measures() -> None:
    t = plain("a\x1b[31mb\nc\u202ed\x00")
    assert t.plain == "a\\x1b[31mb\\nc\\u202ed\\0"
    assert plain("[/]").plain == "[/]" and not plain("[b]x[/b]").spans
    wide = plain("日本語テキスト", 7)
    assert wide.cell_len <= 7 and wide.plain.endswith("…")
    assert plain("x" * 10_000).cell_len <= 400
    assert plain("a\nb", multiline=True).plain == "a\nb"


def test_a_crash_exits_non_zero(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from dtq_tui import launch
    from dtq_tui.screens.overview import OverviewScreen
    from tests.tui.fake import FakeConsole

    def boom(self: Any, snap: Any) -> None:
        raise RuntimeError("a bug in a screen")

    monkeypatch.setattr(launch, "_connect", lambda url, read_only=False: FakeConsole())
    monkeypatch.setattr(OverviewScreen, "render_snapshot", boom)
    code = launch.run(["--backend", "embedded:///nowhere"], headless=True)
    assert code == 1
    assert "the console stopped on an error (exit status 1)" in capsys.readouterr().err


def test_a_crash_leaves_the_terminal_usable(tmp_path: Any) -> None:
    """Under a real terminal (a pty), a crash restores its modes and exits 1."""
    import os
    import pty
    import subprocess
    import sys
    import termios

    script = tmp_path / "crash.py"
    script.write_text(
        "import sys\n"
        "from dtq_tui import launch\n"
        "from dtq_tui.screens.overview import OverviewScreen\n"
        "from tests.tui.fake import FakeConsole\n"
        "launch._connect = lambda url, read_only=False: FakeConsole()\n"
        "def boom(self, snap):\n"
        "    raise RuntimeError('a bug in a screen')\n"
        "OverviewScreen.render_snapshot = boom\n"
        "sys.exit(launch.run(['--backend', 'embedded:///nowhere']))\n"
    )
    master, slave = pty.openpty()
    before = termios.tcgetattr(slave)
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "80", "LINES": "24"}
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdin=slave, stdout=slave, stderr=slave, env=env
    )
    out = b""
    try:
        while proc.poll() is None or out == b"":
            try:
                import select

                ready, _, _ = select.select([master], [], [], 0.2)
                if ready:
                    out += os.read(master, 65536)
            except OSError:
                break
            if proc.poll() is not None and not ready:
                break
        proc.wait(timeout=30)
    finally:
        after = termios.tcgetattr(slave)
        os.close(master)
        os.close(slave)
    assert proc.returncode == 1
    assert after[3] == before[3]  # local modes (echo, canonical input) are back
    assert b"\x1b[?1049l" in out  # the alternate screen was left
    assert b"the console stopped on an error" in out


def test_a_workflow_graph_keeps_wide_and_hostile_node_ids_aligned() -> None:
    from rich.cells import cell_len

    from dtq_core.snapshot import WorkflowNodeSnapshot as Node
    from dtq_tui.graph import layout

    def node(nid: str, level: int, *parents: str) -> Node:
        return Node(nid, "t", "waiting", level, parents, None, None, None, None)

    wide, ansi = "抽出データ", "b\x1b[1m"
    canvas = layout(
        [node(wide, 0), node(ansi, 1, wide), node("c", 1, wide), node("d", 2, ansi, "c")]
    )
    rows = ["".join(r) for r in canvas.chars]
    assert all(cell_len(r) == cell_len(rows[0]) for r in rows)  # every row as wide
    assert "\x1b" not in "".join(rows) and "b\\x1b[1m" in rows[0]
    # The edge leaving the wide label starts right after it, on every row alike.
    assert rows[0].index("─┬") == len("✔ ") + len(wide)
