"""The in-memory backend: one process, one lock, nothing durable (``memory://``).

It is the state machine of :mod:`dtq_core.backends.memory_state` without a log: each
change record is applied and forgotten. The embedded store is the same state machine
with its write-ahead log (:mod:`dtq_core.backends.embedded.backend`).
"""

from __future__ import annotations

from dtq_core.backends.base import Capabilities
from dtq_core.backends.local import LocalBackend
from dtq_core.clock import SYSTEM_CLOCK, Clock


class MemoryBackend(LocalBackend):
    """All state in dicts and heaps under one lock; ``memory://``."""

    capabilities = Capabilities(durable=False, cross_process=False, blocking_claim=True)

    def __init__(self, url: str = "memory://", clock: Clock = SYSTEM_CLOCK) -> None:
        super().__init__(url, clock)
