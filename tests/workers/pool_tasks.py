"""Tasks the pool tests run, at module level so that a worker process can import them.

A process pool's child shares no memory with the test: it imports this module and
finds each task by its qualified name. Tasks therefore meet the test through their
arguments only: paths of :class:`FileEvent` files and of marker files.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from dtq_core import task
from dtq_core.registry import Registry

#: The registry every task here is registered in (brokers of the pool tests use it).
registry = Registry()


class FileEvent:
    """An event shared by threads and processes: set means the file exists.

    A killed waiter cannot jam it, and a child process needs nothing but its path.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)

    def set(self) -> None:
        with open(self.path, "a"):
            pass

    def is_set(self) -> bool:
        return os.path.exists(self.path)

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.is_set():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True


class Flaky(Exception):
    """Worth retrying."""


class FlakySub(Flaky):
    """A kind of Flaky: matched by ``retry_on=(Flaky,)`` across the process boundary."""


def first_time(marker: str) -> bool:
    """True on the first call with this marker, in any process."""
    try:
        Path(marker).touch(exist_ok=False)
    except FileExistsError:
        return False
    return True


# -- running ---------------------------------------------------------------------------


@task(name="add", registry=registry)
def add(a: int, b: int) -> list[int]:
    return [a + b, os.getpid()]


@task(name="aadd", registry=registry)
async def aadd(a: int, b: int) -> list[int]:
    await asyncio.sleep(0.01)
    return [a + b, os.getpid()]


@task(name="pid", registry=registry)
def pid() -> int:
    return os.getpid()


@task(name="mark", registry=registry)
def mark(tag: str) -> str:
    return tag


@task(name="job", registry=registry)
def job(x: int) -> int:
    return x


# -- errors, crashes and time limits ---------------------------------------------------


@task(name="bad", registry=registry, max_retries=0)
def bad(n: int) -> None:
    raise Flaky(f"flaked {n}")


@task(name="stuck", registry=registry, max_retries=0, time_limit=0.5)
def stuck() -> None:
    time.sleep(60)


@task(name="naps", registry=registry, max_retries=0, time_limit=0.3)
async def naps(cancelled: str) -> None:
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        FileEvent(cancelled).set()
        raise


@task(name="ok", registry=registry)
async def ok() -> str:
    return "fine"


@task(name="crashy", registry=registry, max_retries=2, retry_backoff=0.05, retry_jitter="none")
def crashy(marker: str) -> str:
    if first_time(marker):
        os._exit(3)
    return "survived"


@task(name="doomed", registry=registry, max_retries=1, retry_backoff=0.05, retry_jitter="none")
def doomed() -> None:
    os._exit(1)


@task(name="sub", registry=registry, retry_on=(Flaky,), retry_backoff=0.05, retry_jitter="none")
def sub(marker: str) -> str:
    if first_time(marker):
        raise FlakySub("first call")
    return "second call"


@task(name="other", registry=registry, retry_on=(Flaky,), max_retries=3)
def other() -> None:
    raise ValueError("not flaky")


@task(name="never", registry=registry, dont_retry_on=(Flaky,), max_retries=3)
def never() -> None:
    raise FlakySub("no retry for you")


# -- stopping --------------------------------------------------------------------------


@task(name="gated", registry=registry)
def gated(i: int, started: str, release: str) -> int:
    """Set ``started``, then wait for ``release``."""
    FileEvent(started).set()
    # Short waits: a thread worker can only be interrupted between bytecodes.
    FileEvent(release).wait(60)
    return i


@task(name="agated", registry=registry)
async def agated(i: int, started: str, release: str) -> int:
    """``gated`` for the asyncio pool."""
    FileEvent(started).set()
    ev = FileEvent(release)
    while not ev.is_set():
        await asyncio.sleep(0.02)
    return i


@task(name="queued", registry=registry)
def queued(i: int) -> int:
    return i


# Failures whose text no store takes as it is (see test_unstorable_results).


@task(name="surrogate_error", registry=registry, max_retries=0)
def surrogate_error() -> None:
    raise ValueError(b"name \xff.txt".decode("utf-8", "surrogateescape"))


@task(name="surrogate_result", registry=registry, max_retries=0)
def surrogate_result() -> str:
    return b"\xfe".decode("utf-8", "surrogateescape")


@task(name="huge_error", registry=registry, max_retries=0)
def huge_error() -> None:
    raise RuntimeError("x" * 5_000_000)
