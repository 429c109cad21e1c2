"""Small messages the feed posts to the app; frequent ones coalesce (``can_replace``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from textual.message import Message

from dtq_core.events import Event
from dtq_core.snapshot import SystemSnapshot


@dataclass
class SnapshotUpdated(Message):
    """A fresh system snapshot; a newer one replaces one not yet handled."""

    snapshot: SystemSnapshot

    def can_replace(self, message: Message) -> bool:
        """Only the latest snapshot matters."""
        return isinstance(message, SnapshotUpdated)


@dataclass
class EventsArrived(Message):
    """The tail of the event stream.

    ``events`` is the feed's whole recent tail (not only what is new), so a burst of
    these can collapse to the latest without losing lines: the log appends the events
    above the last sequence number it showed.
    """

    events: tuple[Event, ...]
    #: Events that were never fetched because the stream outran the tail.
    skipped: int = 0

    def can_replace(self, message: Message) -> bool:
        """A later tail contains the earlier one."""
        return isinstance(message, EventsArrived)


@dataclass
class ConnectionLost(Message):
    """The Console API failed; the feed keeps retrying."""

    error: str
    retry_in: float


@dataclass
class ConnectionRestored(Message):
    """The Console API answers again."""


@dataclass
class PollFinished(Message):
    """One poll ended; the feed arms the next one (polls never overlap)."""

    delay: float


@dataclass
class Reply(Message):
    """The outcome of a query or an action run in a thread worker."""

    label: str
    result: Any
    error: BaseException | None
    then: Callable[[Any], None] | None
    failed: Callable[[BaseException], None] | None = None
    #: The call changed state (the app refreshes at once).
    mutated: bool = False
