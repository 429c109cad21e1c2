"""The embedded store's journal: each applied change appended to the write-ahead log.

:class:`WalJournal` is the :class:`~dtq_core.backends.journal.Journal` of
:class:`~dtq_core.backends.embedded.backend.EmbeddedBackend`: it encodes a change as a
version-2 record (:mod:`.oplog`), submits it under the backend lock (so log order is
state order) and waits for durability outside it (group commit). Once the log failed,
it refuses every change (fail-stop): readers never see an effect that was never logged.
"""

from __future__ import annotations

from pathlib import Path

from dtq_core.backends.changes import Change
from dtq_core.backends.embedded import oplog
from dtq_core.backends.embedded.wal import WriteAheadLog
from dtq_core.errors import BackendError, StoreFailed


class WalJournal:
    """Changes to records of the log in ``path``, once :attr:`wal` is open.

    Args:
        path: The store's data directory (for messages).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        #: The open log (``None`` before the store opens and after it closes).
        self.wal: WriteAheadLog | None = None

    @property
    def failed(self) -> bool:
        """Whether nothing can be logged: the log failed stop, or is not open."""
        wal = self.wal
        return wal is None or wal.failed

    def require(self) -> WriteAheadLog:
        """The open log.

        Raises:
            BackendError: The store is not open.
        """
        if self.wal is None:
            raise BackendError(f"embedded store {self.path} is not open")
        return self.wal

    def check(self) -> None:
        """Fail-stop: once the log failed, nothing changes any more.

        A change is refused before it is applied; a restart recovers the logged state.

        Raises:
            StoreFailed: The log failed.
        """
        wal = self.wal
        if wal is not None and wal.failed:
            raise StoreFailed(
                f"embedded store {self.path} stopped after a write-ahead log I/O error "
                f"({wal.failure}); restart the process to recover its acknowledged state"
            )

    def encode(self, change: Change) -> bytes:
        """The record body of ``change`` (see :func:`.oplog.encode`)."""
        return oplog.encode(change)

    def submit(self, raw: bytes) -> int:
        """Buffer the record under the next LSN (lock held); its LSN."""
        try:
            return self.require().submit(oplog.RECORD_V2, raw)
        except ValueError as exc:  # oversized: encode() checks first where it can
            raise BackendError(f"log record refused: {exc}") from None

    def wait(self, lsn: int) -> None:
        """Return once ``lsn`` is as durable as the fsync mode promises."""
        if lsn:
            self.require().wait(lsn)

    def wait_written(self, lsn: int) -> None:
        """Return once ``lsn`` is written to the OS."""
        if lsn:
            self.require().wait_written(lsn)
