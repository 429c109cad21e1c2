"""Replay of the log at recovery: each record decoded by its schema and applied.

A version-2 record is decoded by one ``msgspec`` decoder of the union of all record
types and applied by the state machine's function for its type; a version-1 record is
first mapped to typed records by :mod:`.legacy` (and counted: the store converts it).
A record that cannot be applied is handled as :mod:`.malformed` says: a task it names is
dead-lettered, anything else is skipped, counted and logged. Records are checked before
they change anything, so a skipped one leaves no half of itself behind.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable
from functools import partial
from pathlib import Path

from dtq_core.backends.changes import Claim, Enqueue
from dtq_core.backends.embedded import oplog
from dtq_core.backends.embedded.framing import (
    RECORD_HEADER_SIZE,
    SegmentBytes,
    unpack_record_header,
)
from dtq_core.backends.embedded.legacy import decode_v1
from dtq_core.backends.embedded.malformed import (
    MALFORMED,
    MalformedTasks,
    placeholder,
    v2_enqueue,
)
from dtq_core.backends.memory_leases import claim
from dtq_core.backends.memory_state import StateMachine
from dtq_core.task import ErrorInfo

log = logging.getLogger("dtq.embedded")


class Replayer:
    """Applies logged records to a state machine and counts what it met.

    Args:
        state: The state to apply them to (nothing else touches it during recovery).
        path: The store's directory (for warnings).
    """

    def __init__(self, state: StateMachine, path: Path) -> None:
        self._state = state
        self._path = path
        #: Records applied (or skipped) so far.
        self.records = 0
        #: Version-1 records among them (converted to typed records).
        self.v1_records = 0
        #: Records skipped as unusable.
        self.malformed = 0

    def replay(self, chunks: Iterable[tuple[SegmentBytes, int, int, int]]) -> None:
        """Apply the records of checked log segments in order: recovery's loop.

        ``chunks`` as :meth:`.recovery.RecoveryResult.chunks` gives them: ``(bytes,
        offset, lsn, end lsn)`` per segment. Holes are skipped. The frames are read here,
        in one loop with the decoding and the dispatch (a generator per layer cost a
        tenth of recovery). The sort index is rebuilt once at the end rather than kept
        up per record.
        """
        decode, errors = oplog.DECODER.decode, oplog.DECODE_ERRORS
        # A replayed claim hands nothing to a worker: no deliveries to build.
        appliers = dict(self._state.appliers)
        appliers[Claim] = partial(claim, self._state.tasks, deliver=False)
        unpack, head = unpack_record_header, RECORD_HEADER_SIZE
        v2 = oplog.RECORD_V2
        n = 0
        self._state.tasks.index.suspend()
        # Replay allocates millions of objects and frees none: the cyclic collector
        # would walk the growing heap again and again (a third of the time). Off while
        # it runs; nothing here makes a cycle.
        collecting = gc.isenabled()
        gc.disable()
        try:
            for data, at, first, end in chunks:
                offset, view = at, memoryview(data)  # bodies are views: no copy each
                for lsn in range(first, end):
                    length, rtype, _, _ = unpack(data, offset)
                    start = offset + head
                    offset = start + length
                    if rtype != v2:
                        if rtype:  # a version-1 record (0 is a hole a repair left: nothing)
                            self.apply(lsn, rtype, data[start:offset])
                        continue
                    try:
                        change = decode(view[start:offset])
                    except errors:
                        self.apply(lsn, rtype, data[start:offset])  # malformed: the careful path
                        continue
                    n += 1
                    try:
                        appliers[type(change)](change)
                    except MALFORMED as exc:
                        self._skip(lsn, rtype, data[start:offset], exc)
                view.release()
        finally:
            if collecting:
                gc.enable()
            self.records += n
            self._state.tasks.index.rebuild()

    def apply(self, lsn: int, rtype: int, body: bytes) -> None:
        """Apply one logged record; a malformed one is dead-lettered or skipped."""
        self.records += 1
        try:
            self._apply(rtype, body)
        except MALFORMED as exc:
            self._skip(lsn, rtype, body, exc)

    def _skip(self, lsn: int, rtype: int, body: bytes, exc: Exception) -> None:
        self.malformed += 1
        log.warning(
            "%s: log record lsn %d (%s) cannot be applied and was skipped: %s: %s",
            self._path,
            lsn,
            oplog.kind(rtype, body),
            type(exc).__name__,
            exc,
        )

    def _apply(self, rtype: int, body: bytes) -> None:
        state = self._state
        try:
            if rtype == oplog.RECORD_V2:
                try:
                    change = oplog.DECODER.decode(body)
                except oplog.DECODE_ERRORS:
                    found = v2_enqueue(body)
                    if found is None:
                        raise
                    raise found from None
                state.apply(change)
                return
            self.v1_records += 1
            for change in decode_v1(rtype, body):
                state.apply(change)
        except MalformedTasks as bad:
            self._bury(bad)

    def _bury(self, bad: MalformedTasks) -> None:
        """Enqueue the good tasks of a malformed enqueue, dead-letter the named bad ones."""
        tasks = self._state.tasks
        marks = [placeholder(d) for d, _ in bad.bad]
        fresh = [t for t in bad.good + marks if t.id not in tasks.records]
        if len({t.id for t in fresh}) != len(fresh) or len(fresh) != len(bad.good) + len(marks):
            raise ValueError("a malformed task reuses an existing id")
        self._state.apply(Enqueue(bad.now, fresh))
        for (_, why), mark in zip(bad.bad, marks, strict=True):
            error = ErrorInfo("MalformedRecord", why)
            tasks.bury_pending(mark.id, error, "malformed record", bad.now)
