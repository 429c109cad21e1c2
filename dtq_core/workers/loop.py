"""A private event loop in a daemon thread: how sync pools run ``async def`` tasks."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from dtq_core.errors import TimeLimitExceeded


class LoopThread:
    """A private event loop in a daemon thread, for ``async def`` tasks of sync pools."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dtq-loop", daemon=True)
        self.thread.start()

    def run(self, coro: Any, time_limit: float | None) -> Any:
        """Run ``coro`` on the loop and wait for it (cancelled past ``time_limit``)."""
        fut = asyncio.run_coroutine_threadsafe(_limited(coro, time_limit), self.loop)
        try:
            return fut.result()
        except BaseException:
            fut.cancel()
            raise

    def stop(self) -> None:
        """Stop the loop."""
        self.loop.call_soon_threadsafe(self.loop.stop)


async def _limited(coro: Any, time_limit: float | None) -> Any:
    if time_limit is None:
        return await coro
    try:
        return await asyncio.wait_for(coro, time_limit)
    except TimeoutError:
        raise TimeLimitExceeded(f"ran past its time limit of {time_limit}s") from None
