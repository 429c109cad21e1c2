"""Storing new tasks in Redis, each id claimed for its queue through its owner key.

A task id is unique across queues: each id has an owner key (``{prefix:id:ID}``, value
``<claimed at>|<queue>``, see :meth:`Keys.owner`) naming the queue that holds it, which
is also how a task is found by id alone.

- On one Redis, the owner keys and the queue's keys can be in one script: ``ENQUEUE``
  given the owner keys claims the ids and creates the records atomically, in one round
  trip (a batch of one queue: every single enqueue). A single enqueue from a thread
  goes on the backend's :class:`~dtq_core.backends.redis.lane.Lane` (a connection kept
  aside, the command packed in C) unless another thread is on it.
- On a Redis Cluster, an owner key is in a slot of its own: the ids are claimed first
  (``SET NX GET``, one pipeline), then each queue's ``ENQUEUE`` creates the records:
  two round trips. So is a batch over several queues on one Redis, which is refused
  whole when one id is held elsewhere.

Either way an id held by another queue is refused before anything is written, unless
the claim is stale (older than :data:`OWNER_GRACE_S` and that queue holds no record of
it: an expiry or purge died before deleting the owner key, or a producer died between
its claim and its script), which is taken over.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dtq_core.backends.base import NewTask, Transition
from dtq_core.backends.redis.client import RedisClient
from dtq_core.backends.redis.enqueue_scripts import HELD, OWNER_GRACE_S
from dtq_core.backends.redis.keys import Keys
from dtq_core.backends.redis.lane import BUSY, Lane
from dtq_core.backends.redis.records import _opt, _s
from dtq_core.backends.redis.tally import Tally
from dtq_core.errors import BackendError
from dtq_core.task import TaskState

__all__ = ["OWNER_GRACE_S", "EnqueueMixin", "enqueue_args"]

_GRACE = repr(OWNER_GRACE_S)


class EnqueueMixin(RedisClient):
    """``enqueue`` and ``enqueue_many``, and the owner keys of task ids.

    Mixed into :class:`~dtq_core.backends.redis.backend.RedisBackend`, which registers
    the scripts in its constructor.
    """

    _enqueue: Any
    _enqueue_one: Any
    _tally: Tally | None
    #: The single enqueue's connection (one Redis; ``None`` on a cluster).
    _lane: Lane | None
    _owner_take: Any
    _owner_release: Any

    #: Per queue: the lane's ``EVALSHA`` up to the owner key (see :meth:`enqueue`).
    _lane_heads: dict[str, tuple[str | int, ...]]

    def enqueue(self, task: NewTask, now: float) -> list[Transition]:
        """Store a new task (one round trip on one Redis, two on a cluster).

        On one Redis, once this process has listed the queue, the task goes on the
        lane: ``ENQUEUE_ONE``'s command built from parts made once per queue.
        """
        q = task.queue
        lane = self._lane
        if lane is None or q not in self._known or self.wait_replicas > 0:
            return self.enqueue_many([task], now)
        head = self._lane_heads.get(q)
        if head is None:
            head = ("EVALSHA", self._enqueue_one.sha, 2, self.keys.tag(q))
            self._lane_heads[q] = head
        cmd = (
            *head,
            self.keys.owner(task.id),
            repr(now),
            str(self.maxlen),
            *_one_args(task),
        )

        def run() -> Any:
            if q not in self._known:
                # A retry after a reconnect or a server that forgot the scripts: it may
                # have come back empty, so the queue is listed again.
                pipe = self.r.pipeline(transaction=False)
                self._ensure_queue(q, pipe)
                pipe.execute_command(*cmd)
                return pipe.execute()[-1]
            reply = lane.call(cmd)
            # Another thread is on the lane: the pool's way, rather than wait.
            return self.r.execute_command(*cmd) if reply is BUSY else reply

        # A reply lost to a dropped connection, then a DUP on the retry: it was stored.
        reply = self._call(run, idempotent_dup=True)
        self._known.add(q)
        if isinstance(reply, list) and _s(reply[0]) == HELD:
            raise _held(_s(reply[1]), q, _s(reply[2]))
        if self._tally is not None:
            self._tally.add(q, int(now))  # ENQUEUE_ONE leaves `enqueued` to its producer
        return [Transition(task.id, task.name, q, None, TaskState.PENDING)]

    def enqueue_many(self, tasks: Sequence[NewTask], now: float) -> list[Transition]:
        """Store tasks, each id claimed for its queue (see the module docstring).

        Raises:
            BackendError: An id is held by another queue (nothing was stored), or this
                queue already holds it.
        """
        if not tasks:
            return []
        if len(tasks) > 1 and len({t.id for t in tasks}) < len(tasks):
            # The script checks the ids against the store before it writes any.
            ids = [t.id for t in tasks]
            twice = next(i for n, i in enumerate(ids) if i in ids[:n])
            raise BackendError(f"task id {twice!r} appears twice in one batch")
        q = tasks[0].queue
        if not self.cluster and all(t.queue == q for t in tasks):
            self._enqueue_one_trip(q, tasks, now)
        else:
            self._enqueue_claimed(tasks, now)
        pending = TaskState.PENDING
        return [Transition(t.id, t.name, t.queue, None, pending) for t in tasks]

    def _enqueue_one_trip(self, q: str, tasks: Sequence[NewTask], now: float) -> None:
        """One Redis: ``ENQUEUE`` claims the ids and stores the tasks of queue ``q``."""
        keys, argv = enqueue_args(self.keys, q, tasks, now, self.maxlen, owned=True)
        sha = self._enqueue.sha

        def run() -> Any:
            # Decided per attempt: a retry after a restart lists the queue again.
            if q in self._known and self.wait_replicas <= 0:
                # The usual case: one command, on the lane (packed in C: redis-py
                # encodes each of a batch's arguments in Python), no pipeline.
                cmd = ("EVALSHA", sha, len(keys), *keys, *argv)
                reply = BUSY if self._lane is None else self._lane.call(cmd)
                return [self.r.execute_command(*cmd) if reply is BUSY else reply]
            pipe = self.r.pipeline(transaction=False)
            self._ensure_queue(q, pipe)
            pipe.evalsha(sha, len(keys), *keys, *argv)
            self._wait_replicas(pipe, (q,))
            return pipe.execute()

        # A reply lost to a dropped connection, then a DUP on the retry: it was stored.
        out = self._call(run, idempotent_dup=True)
        self._known.add(q)
        if out is None:
            return
        waits = 1 if self.wait_replicas > 0 else 0
        reply = out[-1 - waits]
        if isinstance(reply, list) and _s(reply[0]) == HELD:
            raise _held(_s(reply[1]), q, _s(reply[2]))
        self._check_waited(out, waits)

    def _enqueue_claimed(self, tasks: Sequence[NewTask], now: float) -> None:
        """Claim the ids' owner keys, then one ``ENQUEUE`` per queue (two round trips)."""
        by_q: dict[str, list[NewTask]] = {}
        for t in tasks:
            by_q.setdefault(t.queue, []).append(t)
        self._claim_ids([(t.id, t.queue) for t in tasks], now)
        waits = self._n_waits(by_q)

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for q, ts in by_q.items():
                self._ensure_queue(q, pipe)
                keys, argv = enqueue_args(self.keys, q, ts, now, self.maxlen, owned=False)
                self._in(pipe, self._enqueue, keys, argv)
            self._wait_replicas(pipe, by_q)
            return pipe.execute()

        out = self._call(run, idempotent_dup=True)
        self._known.update(by_q)
        if out is not None:
            self._check_waited(out, waits)

    def _ensure_queue(self, queue: str, pipe: Any) -> None:
        """Add ``queue`` to the queue list on ``pipe`` unless this process did already.

        The caller marks it known once the pipeline ran: a pipeline lost to a dropped
        connection is sent again whole, the queue's listing with it.
        """
        if queue not in self._known:
            pipe.sadd(self.keys.queues, queue)
            pipe.rpush(self.keys.new_queues, queue)
            pipe.ltrim(self.keys.new_queues, -64, -1)

    @staticmethod
    def _args(t: NewTask) -> list[Any]:
        """The 11 script arguments of a new task (see ``create`` in the scripts)."""
        return [
            t.id,
            t.name,
            t.queue,
            t.priority,
            t.payload,
            _opt(t.eta),
            t.max_retries,
            _opt(t.time_limit),
            t.dedup_key or "",
            t.replayed_from or "",
            t.workflow or "",
        ]

    def _claim_ids(self, ids: Sequence[tuple[str, str]], now: float) -> None:
        """Claim each id's owner key (``<claimed at>|<queue>``) for its queue, or refuse.

        An id already owned by its own queue passes (that queue's script refuses a live
        duplicate, and a retry after a lost reply is recognised). One owned by another
        queue is refused, unless the claim is stale (see the module docstring): then it
        is taken over with a compare-and-set. The grace keeps a claim whose script is
        still on its way from being taken: the id is never held by two queues.

        Raises:
            BackendError: An id is held by another queue (nothing was stored).
        """
        mark = f"{now!r}|"

        def claim() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for tid, q in ids:
                pipe.set(self.keys.owner(tid), mark + q, nx=True, get=True)
            return pipe.execute()

        held: list[tuple[str, str, str, str, float]] = []
        for (tid, q), old in zip(ids, self._call(claim), strict=True):
            if old is not None:
                at, _, other = _s(old).partition("|")
                if other != q:
                    held.append((tid, q, other, _s(old), float(at or 0)))
        if not held:
            return

        def check() -> Any:
            # Does the other queue still hold the record? If not, the claim may be stale.
            pipe = self.r.pipeline(transaction=False)
            for tid, _, other, _, _ in held:
                pipe.exists(self.keys.record(other, tid))
            return pipe.execute()

        live: list[tuple[str, str, str, str, float]] = []
        stale: list[tuple[str, str, str, str, float]] = []
        for h, there in zip(held, self._call(check), strict=True):
            (live if there or now - h[4] < OWNER_GRACE_S else stale).append(h)
        if stale:

            def take() -> Any:
                pipe = self.r.pipeline(transaction=False)
                for tid, q, _, raw, _ in stale:
                    self._in(pipe, self._owner_take, [self.keys.owner(tid)], [raw, mark + q])
                return pipe.execute()

            live += [h for h, ok in zip(stale, self._call(take), strict=True) if not int(ok)]
        if live:
            refused = {h[0] for h in live}
            self._release_ids([(tid, q) for tid, q in ids if tid not in refused])
            tid, q, other = live[0][:3]
            raise _held(tid, q, other)

    def _release_ids(self, ids: Sequence[tuple[str, str]]) -> None:
        """Delete the owner keys of ``ids`` that their queue still owns (one pipeline)."""
        if not ids:
            return

        def run() -> Any:
            pipe = self.r.pipeline(transaction=False)
            for tid, q in ids:
                self._in(pipe, self._owner_release, [self.keys.owner(tid)], [q])
            return pipe.execute()

        self._call(run)


def enqueue_args(
    keys: Keys, queue: str, tasks: Sequence[NewTask], now: float, maxlen: int, owned: bool
) -> tuple[list[str], list[str | bytes]]:
    """``ENQUEUE``'s KEYS and ARGV for ``tasks``, all of queue ``queue``.

    With ``owned``, the ids' owner keys are among the KEYS: the script claims them (one
    Redis); without, the caller has claimed them (a cluster).
    """
    names = keys.script_keys(queue)
    if owned:
        names.extend(keys.owner(t.id) for t in tasks)
    argv: list[str | bytes] = [repr(now), str(maxlen), _GRACE, keys.prefix]
    for t in tasks:
        argv += _task_args(t)
    return names, argv


def _task_args(t: NewTask) -> tuple[str, str, str, str, bytes, str, str, str, str, str, str]:
    """A new task as ``ENQUEUE`` takes it (:data:`~.enqueue_scripts.FIELDS_PER_TASK`).

    Times travel as ``repr`` strings (the record keeps them exactly), numbers as strings
    too (the script passes them on to Redis: a Lua number is formatted there on each
    call, which costs about as much as a command).
    """
    return (
        t.id,
        t.name,
        t.queue,
        str(t.priority),
        t.payload,
        _opt(t.eta),
        str(t.max_retries),
        _opt(t.time_limit),
        t.dedup_key or "",
        t.replayed_from or "",
        t.workflow or "",
    )


def _one_args(t: NewTask) -> tuple[str | bytes, ...]:
    """A new task as ``ENQUEUE_ONE`` takes it (see :data:`~.enqueue_scripts.ONE_FIELDS`)."""
    head = (t.id, t.name, t.queue, str(t.priority), t.payload, str(t.max_retries))
    if t.eta is None and not (t.dedup_key or t.replayed_from or t.workflow):
        return (*head, _opt(t.time_limit))
    return (
        *head,
        _opt(t.time_limit),
        _opt(t.eta),
        t.dedup_key or "",
        t.replayed_from or "",
        t.workflow or "",
    )


def _held(task_id: str, queue: str, other: str) -> BackendError:
    return BackendError(
        f"task id {task_id!r} exists in queue {other!r}: a task id is unique across "
        f"queues (refused for queue {queue!r})"
    )
