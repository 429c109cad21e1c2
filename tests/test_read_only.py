"""A read-only session refuses every change before it reaches the store (memory, Redis)."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from dtq_core import Broker, BrokerConfig, task
from dtq_core.console_api import CONSOLE_WRITES, ConsoleAPI
from dtq_core.control import LocalConsole, connect
from dtq_core.errors import ReadOnlyError
from dtq_core.registry import Registry

#: Arguments good enough to reach the store for each write (a refusal comes first).
ARGS: dict[str, tuple[Any, ...]] = {
    "replay": (["x"],),
    "purge": (["x"],),
    "cancel": ("x",),
    "run_now": ("x",),
    "enqueue": ("add",),
    "pause_queue": ("q",),
    "resume_queue": ("q",),
    "pause_schedule": ("s",),
    "trigger_schedule": ("s",),
    "set_rate_limit": ("queue", "q", 1.0),
    "set_breaker": ("k", "open"),
    "run_workflow": ({"name": "w", "nodes": []},),
    "retry_workflow": ("r",),
}


class Spy:
    """A backend stand-in that fails the test if any write reaches it."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.touched: list[str] = []

    def __getattr__(self, name: str) -> Any:
        self.touched.append(name)
        return getattr(self.real, name)


def check_refuses_every_write(console: Any) -> None:
    assert console.read_only is True
    assert set(ARGS) >= CONSOLE_WRITES, set(CONSOLE_WRITES) - set(ARGS)
    for name in CONSOLE_WRITES:
        with pytest.raises(ReadOnlyError, match=f"{name} changes state"):
            getattr(console, name)(*ARGS[name])


def test_memory_read_only_console_refuses_writes_before_the_store() -> None:
    reg = Registry()

    @task(name="add", registry=reg)
    def add(a: int = 1, b: int = 2) -> int:
        return a + b

    console = connect("memory://", registry=reg, read_only=True)
    try:
        assert isinstance(console, LocalConsole)
        spy = Spy(console.backend)
        console.backend = spy
        check_refuses_every_write(console)
        assert spy.touched == []
        # Reads still work.
        assert console.snapshot().queues == ()
        assert console.health().status in ("ok", "degraded")
        assert console.tasks() == []
    finally:
        console.close()


def test_a_writable_console_says_so() -> None:
    b = Broker(BrokerConfig(backend="memory://", num_workers=0, registry=Registry()))
    b.open()
    try:
        assert LocalConsole(b).read_only is False
        b.control.pause_queue("q")
        assert b.backend.queue_stats()[0].paused
    finally:
        b.stop(drain_timeout=0)


def test_the_protocol_declares_read_only_and_every_write_exists() -> None:
    assert "read_only" in ConsoleAPI.__annotations__
    for name in CONSOLE_WRITES:
        assert inspect.isfunction(getattr(ConsoleAPI, name)), name


def test_a_read_only_session_may_preview_a_replay(tmp_path: Any) -> None:
    """A dry run changes nothing: read-only consoles, local and over the socket, may ask."""
    reg = Registry()

    @task(name="bad", registry=reg, max_retries=0)
    def bad() -> None:
        raise ValueError("no")

    owner = Broker(
        BrokerConfig(backend=f"embedded://{tmp_path / 'data'}", num_workers=1, registry=reg)
    ).start()
    try:
        r = owner.send("bad")
        with pytest.raises(Exception, match="no"):
            r.get(timeout=10)
        for console in (
            LocalConsole(owner, read_only=True),
            connect(owner.backend.url, read_only=True),
        ):
            (plan,) = console.replay([r.id], dry_run=True)
            assert plan.new_id is None  # a dry run: nothing was enqueued
            (plan,) = console.replay([r.id], None, None, "", True)  # positional too
            with pytest.raises(ReadOnlyError, match="replay changes state"):
                console.replay([r.id])
            if hasattr(console, "close") and not isinstance(console, LocalConsole):
                console.close()
        assert owner.backend.get(r.id).replayed_to == ()
    finally:
        owner.stop()
