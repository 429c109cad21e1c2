"""Drive the console in demo mode (fixed seed) and save one SVG per screen here.

    python screenshots/make_screenshots.py [--seed 7] [--size 120x40]

Every screen at the given size, then the Dead letters and Tasks screens again at 80x24
(``*-80x24.svg``), where columns give way by priority.

The demo runs until its payment gateway has an outage (the breaker is open) and every
pane has data, then the script visits each screen. Thread timing still varies, so two
runs differ in detail, never in kind.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from dtq_tui.app import DTQApp  # noqa: E402
from dtq_tui.demo import Demo  # noqa: E402
from dtq_tui.dialogs.help import HelpDialog  # noqa: E402
from dtq_tui.screens.dead import DeadGroupScreen, DeadLettersScreen  # noqa: E402
from dtq_tui.screens.task_detail import TaskDetailScreen  # noqa: E402
from dtq_tui.screens.tasks import TasksScreen  # noqa: E402
from dtq_tui.screens.waiting import WaitingScreen  # noqa: E402


async def wait_for(pilot: Any, cond: Callable[[], object], timeout: float, what: str) -> bool:
    """Let the app run until ``cond()``; report (not fail) on timeout."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            print(f"  (gave up waiting for {what})")
            return False
        await pilot.pause(0.1)
    return True


async def shoot(seed: int, size: tuple[int, int], out: Path) -> list[str]:
    """Run the demo and the app; save the screenshots; return their names."""
    demo = Demo(seed=seed).start()
    app = DTQApp(demo.console, refresh_s=0.33)
    saved: list[str] = []

    def save(name: str) -> None:
        app.save_screenshot(f"{name}.svg", str(out))
        saved.append(f"{name}.svg")
        print(f"  {name}.svg")

    try:
        async with app.run_test(size=size) as pilot:
            print("waiting for the demo to fill every pane (about a minute)…")

            def ready() -> bool:
                snap = app.snapshot
                return bool(
                    snap
                    and snap.uptime
                    and snap.uptime > 40
                    and any(b.state == "open" for b in snap.breakers)
                )

            await wait_for(pilot, ready, 90, "an open breaker")
            await pilot.pause(0.5)
            save("overview")
            await pilot.press("7")
            await pilot.pause(1.0)
            save("limits")
            for key, name in (("2", "latency"), ("5", "workflows"), ("6", "schedules")):
                await pilot.press(key)
                await pilot.pause(1.0)
                save(name)
            await pilot.press("8")
            await pilot.pause(1.0)
            save("workers")
            await pilot.press("3")
            await wait_for(
                pilot,
                lambda: isinstance(app.screen, TasksScreen) and app.screen.loaded,
                10,
                "tasks",
            )
            await pilot.pause(0.5)
            save("tasks")
            for key, name in (("t", "scheduled"), ("R", "retry")):
                await pilot.press(key)
                await wait_for(
                    pilot,
                    lambda: isinstance(app.screen, WaitingScreen) and app.screen.loaded,
                    10,
                    name,
                )
                await pilot.pause(0.5)
                save(name)
                await pilot.press("escape")
            await pilot.press("4")
            await wait_for(
                pilot,
                lambda: isinstance(app.screen, DeadLettersScreen) and app.screen.groups,
                10,
                "dead letters",
            )
            await pilot.pause(0.5)
            save("dead-letters")
            await pilot.press("enter")
            await wait_for(
                pilot,
                lambda: isinstance(app.screen, DeadGroupScreen) and app.screen.records,
                10,
                "a group",
            )
            await pilot.press("space", "space", "space")
            await pilot.pause(0.5)
            save("dead-letter-group")
            await pilot.press("enter")
            await wait_for(
                pilot,
                lambda: isinstance(app.screen, TaskDetailScreen) and app.screen.record,
                10,
                "a task",
            )
            await pilot.pause(0.5)
            save("task-detail")
            await pilot.press("escape", "question_mark")
            await wait_for(pilot, lambda: isinstance(app.screen, HelpDialog), 5, "the help")
            await pilot.pause(0.3)
            save("help")
            await pilot.press("escape", "escape", "1", "l")
            await pilot.pause(1.5)
            save("event-log")
            await pilot.press("l")
            await pilot.resize_terminal(80, 24)
            for key, name in (("4", "dead-letters-80x24"), ("3", "tasks-80x24")):
                await pilot.press(key)
                await pilot.pause(1.5)
                save(name)
    finally:
        demo.stop()
    return saved


def main() -> None:
    """Parse arguments and make the screenshots."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--size", default="120x40", help="COLUMNSxROWS")
    p.add_argument("--out", type=Path, default=ROOT)
    args = p.parse_args()
    cols, rows = (int(x) for x in args.size.lower().split("x"))
    names = asyncio.run(shoot(args.seed, (cols, rows), args.out))
    print(f"saved {len(names)} screenshots in {args.out}")


if __name__ == "__main__":
    main()
