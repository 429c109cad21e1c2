"""The runner: what happens to one delivery, whatever pool runs it.

``prepare`` decodes the message, finds the registered task and asks the hooks whether it
may run; ``settle`` records the outcome, lets the failure hooks decide retry or
dead-letter, and emits the events. Pools only supply the call in between.
"""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any

from dtq_core.codec import decode_message, json_form
from dtq_core.errors import (
    RemoteTaskError,
    SerializationError,
    StoreFailed,
    TimeLimitExceeded,
)
from dtq_core.hooks import FailureDecision, RunContext
from dtq_core.task import ErrorInfo
from dtq_core.text import valid_utf8
from dtq_core.workers.acks import AckBuffer

log = logging.getLogger("dtq.worker")

#: Results stored as they are (their JSON form is themselves; a str is checked).
_SCALARS = frozenset({type(None), bool, int})

if TYPE_CHECKING:
    from dtq_core.backends.base import Delivery, Transition
    from dtq_core.broker import Broker
    from dtq_core.workers.base import WorkerInfo


#: Longest error message and traceback kept, in characters: an exception that carries
#: a whole payload must not make a record the store refuses (the embedded log's limit).
MAX_MESSAGE = 16_384
MAX_TRACEBACK = 65_536


def _storable(text: str, limit: int) -> str:
    """``text`` as every store can hold it, at most about ``limit`` characters.

    Valid UTF-8: a lone surrogate becomes its backslash escape, still readable. A cut
    keeps the head and the tail: a traceback's frames come first and where it was
    raised last (its last line is the message, which may be what is too long).
    """
    text = valid_utf8(text)
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]} [{len(text) - 2 * half:,} characters cut] {text[-half:]}"


def error_info(exc: BaseException, time_limit: float | None = None) -> ErrorInfo:
    """Capture an exception as data (type name, message, formatted traceback).

    The text is made storable: any string (a message of a lone surrogate from bytes
    decoded with ``surrogateescape``, a message of megabytes) becomes a record every
    store takes, so a failure is always stored and never makes the task run again.
    """
    if isinstance(exc, RemoteTaskError):
        name, message, tb = exc.exc_type, exc.message, exc.traceback
    else:
        etype = type(exc)
        name = etype.__qualname__
        if etype.__module__ not in ("builtins", "__main__"):
            name = f"{etype.__module__}.{name}"
        message = str(exc)
        if isinstance(exc, TimeLimitExceeded) and not message:
            message = f"ran past its time limit of {time_limit}s" if time_limit else "time limit"
        tb = "".join(traceback.format_exception(exc))
    return ErrorInfo(
        _storable(name, 512),
        _storable(message, MAX_MESSAGE),
        _storable(tb, MAX_TRACEBACK),
    )


class Runner:
    """Runs deliveries through the hook chain for one broker."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.backend = broker.backend
        self.registry = broker.registry
        self.now = broker.clock.now
        hooks = broker.hooks
        cls_hooks = [type(h) for h in hooks]
        from dtq_core.hooks import Hook

        def overrides(name: str) -> list[Any]:
            return [
                h
                for h, c in zip(hooks, cls_hooks, strict=True)
                if getattr(c, name) is not getattr(Hook, name)
            ]

        self.before_run = overrides("before_run")
        self.on_failure = overrides("on_failure")
        self.after_run = list(reversed(overrides("after_run")))
        self.ack_now_if = overrides("ack_later")
        #: Successes waiting to be stored together; ``None``: each is stored at once.
        self.acks: AckBuffer | None = None
        # Worker id -> its live state: outcomes are counted once the store took them.
        self._workers: dict[str, WorkerInfo] = {}

    def batch_acks(self, lazy: bool = False) -> None:
        """Store successes in batches (unless ``ack_delay_s`` is 0).

        On a backend where a call is a round trip (Redis, an attached embedded store)
        a batch saves round trips; on a store in this process (memory, the embedded
        owner) it saves taking the store's lock, publishing and counting once per task:
        a busy pool does each once per batch.

        Args:
            lazy: The caller stores the successes itself when it runs out of work and
                arms the buffer (:meth:`AckBuffer.arm`) whenever it goes on to other
                work while some wait; the buffer's thread then wakes only when armed.
        """
        delay = self.broker.config.ack_delay_s
        caps = self.backend.capabilities
        if delay > 0 and self.acks is None and (caps.batch_acks or not caps.cross_process):
            self.acks = AckBuffer(
                self.backend,
                self.now,
                self._finish,
                delay,
                fatal=self.broker.fail_stop,
                finish_many=self._finish_many,
                lazy=lazy,
                refused=self._unstorable,
            )

    def close(self) -> None:
        """Store the successes still waiting (a stopping pool)."""
        if self.acks is not None:
            self.acks.close()

    def prepare(self, d: Delivery, worker: WorkerInfo) -> RunContext | None:
        """Decode and check a delivery; ``None`` when it was settled without running."""
        self._workers[worker.id] = worker
        emit = self.broker.emit
        emit_started = self.broker.emit_started
        try:
            msg = decode_message(d.payload)
        except SerializationError as exc:
            emit_started(d, worker.id)
            info = ErrorInfo("SerializationError", str(exc))
            emit(
                self.backend.bury(d.task_id, d.token, info, "undecodable message", self.now()),
                worker.id,
            )
            return None
        task = self.registry.get(d.name)
        if task is None:
            emit_started(d, worker.id)
            info = ErrorInfo(
                "TaskNotRegistered",
                f"no task named {d.name!r} is registered in worker {worker.id}",
            )
            emit(
                self.backend.bury(d.task_id, d.token, info, "unregistered task", self.now()),
                worker.id,
            )
            return None
        ctx = RunContext(
            self.broker, d, task, msg["args"], msg["kwargs"], msg.get("opts") or {}, worker.id
        )
        for hook in self.before_run:
            until = hook.before_run(ctx)
            if until is not None:
                note = f"deferred by {type(hook).__name__}"
                trs = self.backend.release(d.task_id, d.token, self.now(), eta=until, note=note)
                if trs:
                    self.broker.wake_scheduler(until)
                return None
        emit_started(d, worker.id)
        return ctx

    def time_limit(self, ctx: RunContext) -> float | None:
        """The effective time limit of a delivery."""
        limit = ctx.opts.get("time_limit", ctx.delivery.time_limit)
        if limit is None:
            limit = ctx.task.options.get("time_limit")
        return float(limit) if limit else None

    def settle(self, ctx: RunContext, result: Any, exc: BaseException | None) -> None:
        """Record the outcome of an attempt and emit its events."""
        d = ctx.delivery
        backend = self.backend
        if exc is None and type(result) not in _SCALARS:
            try:
                result = json_form(result, f"result of task {d.name!r}")
            except SerializationError as bad:
                exc = bad
        if exc is None:
            acks = self.acks
            if acks is not None:
                for h in self.ack_now_if:
                    if not h.ack_later(ctx):
                        break
                else:
                    acks.add(ctx, result)
                    return
            try:
                trs = backend.ack(d.task_id, d.token, result, self.now())
            except SerializationError as refused:
                self._unstorable(ctx, refused)
                return
        else:
            decision = FailureDecision()
            for hook in self.on_failure:
                hook.on_failure(ctx, exc, decision)
            info = error_info(exc, self.time_limit(ctx))
            now = self.now()
            trs = backend.fail(
                d.task_id,
                d.token,
                info,
                now,
                retry_at=decision.retry_at,
                dead_reason=decision.dead_reason,
            )
            if decision.retry_at is not None and trs:
                self.broker.wake_scheduler(decision.retry_at)
        self._finish(ctx, trs, exc)

    def _unstorable(self, ctx: RunContext, why: SerializationError) -> None:
        """A success whose result the store refused (nothing was written): the task fails.

        Failing it (retried by its policy, then dead-lettered) shows the reason where an
        operator looks; leaving it RUNNING would run it again and again as its lease ran
        out, each time with a result that cannot be stored.
        """
        self.settle(
            ctx,
            None,
            SerializationError(f"the result of task {ctx.delivery.name!r} cannot be stored: {why}"),
        )

    def _finish(
        self, ctx: RunContext, trs: list[Transition], exc: BaseException | None = None
    ) -> None:
        # Counted only once stored (a stop summary counts acknowledged outcomes: an ack
        # that failed, or came back stale, ran but is not "processed").
        info = self._workers.get(ctx.worker_id)
        if info is not None and trs:
            if exc is None:
                info.processed += 1
            else:
                info.failed += 1
        self.broker.emit(trs, ctx.worker_id)
        for hook in self.after_run:
            hook.after_run(ctx, exc, trs)

    def _finish_many(self, done: list[tuple[RunContext, list[Transition]]]) -> None:
        """:meth:`_finish` for a batch of stored successes: one event batch per worker."""
        workers = self._workers
        by_worker: dict[str, list[Transition]] = {}
        for ctx, trs in done:
            if trs:
                info = workers.get(ctx.worker_id)
                if info is not None:
                    info.processed += 1
                got = by_worker.get(ctx.worker_id)
                if got is None:
                    by_worker[ctx.worker_id] = list(trs)
                else:
                    got.extend(trs)
        emit = self.broker.emit
        for worker_id, trs in by_worker.items():
            emit(trs, worker_id)
        for ctx, trs in done:
            try:
                for hook in self.after_run:
                    hook.after_run(ctx, None, trs)
            except Exception:
                log.exception("after the ack of task %s", ctx.delivery.task_id)

    def requeue(self, d: Delivery, worker_id: str, note: str) -> None:
        """Give a claimed task back (shutdown); it runs again, no attempt counted.

        On a store that failed stop this does nothing: the restart's recovery requeues
        every task that was running.
        """
        try:
            trs = self.backend.release(d.task_id, d.token, self.now(), note=note)
        except StoreFailed:
            return
        self.broker.emit(trs, worker_id)
