"""The in-memory state machine: tasks and keys, changed only by typed records.

:class:`StateMachine` composes the two components that own the state
(:class:`~dtq_core.backends.memory_tasks.TaskTable` and
:class:`~dtq_core.backends.memory_kv.KeyValueStore`) and applies a change record
(:mod:`dtq_core.backends.changes`) with the one function for its type (those of leases
are in :mod:`~dtq_core.backends.memory_leases`). Live changes
and log replay both go through :meth:`StateMachine.apply`. It never locks: its owner
calls it with its lock held.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from dtq_core.backends import memory_leases as leases
from dtq_core.backends.changes import (
    Ack,
    Bury,
    Cancel,
    Change,
    Claim,
    Enqueue,
    Expire,
    Fail,
    KeyDelete,
    KeySet,
    Names,
    Pause,
    Promote,
    Purge,
    Reclaim,
    Release,
    Replay,
)
from dtq_core.backends.memory_kv import KeyValueStore
from dtq_core.backends.memory_tasks import TaskTable


def _ignore(_all: bool) -> None:
    return None


class StateMachine:
    """Tasks and keys, and the function that applies each type of change.

    Args:
        wake: Called when a task becomes ready (``True``: wake every waiting claimer).
    """

    def __init__(self, wake: Callable[[bool], None] = _ignore) -> None:
        self.tasks = TaskTable(wake)
        self.keys = KeyValueStore()
        t, k = self.tasks, self.keys
        #: The function that applies each type of change.
        self.appliers: dict[type[Any], Callable[[Any], Any]] = {
            Enqueue: t.enqueue,
            Claim: partial(leases.claim, t),
            Ack: partial(leases.ack, t),
            Fail: partial(leases.fail, t),
            Bury: partial(leases.bury, t),
            Release: partial(leases.release, t),
            Reclaim: partial(leases.reclaim, t),
            Promote: t.promote,
            Cancel: t.cancel,
            Pause: t.pause,
            Replay: t.replay,
            Purge: t.purge,
            Expire: t.expire,
            KeySet: k.set,
            KeyDelete: k.delete,
            Names: k.add_names,
        }

    def apply(self, change: Change) -> Any:
        """Apply one change; what its applier returns (transitions, deliveries, a count).

        A falsy result means the change changed nothing (a stale token, say), so there
        is nothing to log.

        Raises:
            BackendError: The change is refused (an id that exists already...); nothing
                was changed.
        """
        return self.appliers[type(change)](change)
