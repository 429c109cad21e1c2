"""The asyncio pool: one event loop runs up to ``size`` tasks at once.

``async def`` tasks run on the loop (a time limit cancels them cleanly); plain functions
run in a thread executor so they cannot block the loop. One claimer coroutine leases
only as many tasks as there are free slots.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from dtq_core.errors import BackendError, StoreFailed, TimeLimitExceeded
from dtq_core.workers.base import (
    LEASE_CHECK,
    Backoff,
    Pool,
    WorkerInfo,
    lease_ok,
    log,
    supervised,
    worker_prefix,
)
from dtq_core.workers.runner import Runner

if TYPE_CHECKING:
    from dtq_core.backends.base import Delivery
    from dtq_core.broker import Broker


class AsyncPool(Pool):
    """``size`` concurrent slots on one event loop thread."""

    kind = "async"

    def __init__(self, broker: Broker, size: int) -> None:
        super().__init__(broker, size)
        self.runner = Runner(broker)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._claims = ThreadPoolExecutor(1, thread_name_prefix="dtq-async-claim")
        self._sync = ThreadPoolExecutor(size, thread_name_prefix="dtq-async-sync")
        self._free: list[WorkerInfo] = []
        self._running: dict[asyncio.Task[None], tuple[Delivery, WorkerInfo]] = {}
        self._done = threading.Event()
        self._slot_free: asyncio.Event | None = None
        self._drain_timeout = 0.0

    def start(self) -> None:
        """Start the loop thread."""
        prefix = worker_prefix()
        now = self.broker.clock.now()
        self.workers = [
            WorkerInfo(f"{prefix}:a{i}", self.kind, started_at=now, last_seen=now)
            for i in range(self.size)
        ]
        self._free = list(reversed(self.workers))
        self._thread = threading.Thread(target=self._main, name="dtq-async", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            # The one claimer serves every slot; its deaths are counted on the first.
            supervised(
                self.workers[0], self.stopping, lambda: loop.run_until_complete(self._serve())
            )
        finally:
            loop.close()
            self._done.set()

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        b = self.broker
        cfg = b.config
        slot_free = self._slot_free = asyncio.Event()
        backoff = Backoff(self.stopping, b.fail_stop)
        while not self.stopping.is_set():
            free = len(self._free)
            if free == 0:
                slot_free.clear()
                await slot_free.wait()
                continue
            claim = functools.partial(
                b.backend.claim,
                cfg.queues,
                f"{worker_prefix()}:async",
                cfg.lease_s,
                min(free, (cfg.prefetch or 1) * self.size),
                b.clock.now(),
                0.2,
            )
            try:
                batch = await loop.run_in_executor(self._claims, claim)
                backoff.ok()
            except BackendError as exc:
                await loop.run_in_executor(self._claims, backoff.failed, exc)
                continue
            since = [d.started_at if d.leased_at is None else d.leased_at for d in batch]
            if batch and b.clock.now() - b.config.lease_s * LEASE_CHECK > min(since):
                # The claim came back late (a stall of the store): renew, or skip.
                try:
                    ok = await loop.run_in_executor(self._claims, _held, b, batch)
                except BackendError as exc:
                    await loop.run_in_executor(self._claims, backoff.failed, exc)
                    continue
                batch = [d for d, held in zip(batch, ok, strict=True) if held]
            for d in batch:
                info = self._free.pop()
                task = asyncio.create_task(self._run(d, info))
                self._running[task] = (d, info)
                task.add_done_callback(functools.partial(self._finished, slot_free))
        if self._running:
            await asyncio.wait(list(self._running), timeout=self._drain_timeout)
        for task, (d, info) in list(self._running.items()):
            task.cancel()
            self.runner.requeue(d, info.id, "worker stopping: requeued")

    def _finished(self, slot_free: asyncio.Event, task: asyncio.Task[None]) -> None:
        item = self._running.pop(task, None)
        if item is not None:
            self._free.append(item[1])
        slot_free.set()

    async def _run(self, d: Delivery, info: WorkerInfo) -> None:
        runner = self.runner
        b = self.broker
        info.current, info.current_started, info.state = d, b.clock.now(), "busy"
        try:
            ctx = runner.prepare(d, info)
            if ctx is None:
                return
            limit = runner.time_limit(ctx)
            started = self.broker.clock.monotonic()
            result: Any = None
            exc: BaseException | None = None
            try:
                if ctx.task.is_async:
                    coro = ctx.task.fn(*ctx.args, **ctx.kwargs)
                else:
                    loop = asyncio.get_running_loop()
                    call = functools.partial(ctx.task.fn, *ctx.args, **ctx.kwargs)
                    coro = loop.run_in_executor(self._sync, call)
                result = await asyncio.wait_for(coro, limit)
            except TimeoutError:
                exc = TimeLimitExceeded(f"ran past its time limit of {limit}s")
            except asyncio.CancelledError:
                raise
            except Exception as e:
                exc = e
            ctx.runtime = self.broker.clock.monotonic() - started
            try:
                runner.settle(ctx, result, exc)
            except StoreFailed as err:
                b.fail_stop(err)
            except BackendError as err:  # not stored: the lease runs out, it runs again
                log.warning("could not store the outcome of %s: %s", d.task_id, err)
        finally:
            info.current, info.current_started, info.state = None, None, "idle"

    def stop(self, drain_timeout: float) -> None:
        """Stop claiming, wait for in-flight tasks up to ``drain_timeout``, requeue the rest."""
        self._drain_timeout = drain_timeout
        self.stopping.set()
        self.broker.backend_wakeup()
        loop = self._loop
        slot_free = self._slot_free
        if loop is not None and not loop.is_closed() and slot_free is not None:
            # Wake the claimer if it waits for a free slot: it then sees `stopping`.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(slot_free.set)
        self._done.wait(drain_timeout + 5.0)
        self._claims.shutdown(wait=False)
        self._sync.shutdown(wait=False)

    def hard_stop(self) -> None:
        """Stop now: running tasks are cancelled and requeued."""
        self.stop(0.0)


def _held(broker: Broker, batch: list[Delivery]) -> list[bool]:
    """:func:`lease_ok` for each delivery of a batch (run in the claim executor)."""
    return [lease_ok(broker, d) for d in batch]
