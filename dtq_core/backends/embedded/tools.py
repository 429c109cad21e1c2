"""Offline tools for an embedded store's directory: verify, repair, inspect, compact, upgrade."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dtq_core.backends.embedded import wal
from dtq_core.errors import BackendUnavailable, ConfigError


@dataclass(frozen=True, slots=True)
class UpgradeReport:
    """What ``upgrade`` found and did: the store opened, converting older data."""

    directory: Path
    #: The oldest format version found in what recovery read (checkpoint and log).
    found_version: int
    #: The version the store is at now.
    version: int
    #: Version-1 log records converted to typed records.
    converted_records: int
    #: Whether a version-1 checkpoint was converted.
    converted_checkpoint: bool
    #: The checkpoint that holds the converted state (0 when nothing was converted).
    checkpoint_lsn: int

    @property
    def changed(self) -> bool:
        """Whether anything was converted."""
        return self.found_version < self.version


@dataclass(frozen=True, slots=True)
class CompactReport:
    """What ``compact`` did: a checkpoint, then the log segments it covers deleted."""

    directory: Path
    checkpoint_lsn: int
    segments_before: int
    segments_after: int
    bytes_before: int
    bytes_after: int


def _wal_dir(path: Path) -> Path:
    """The log directory of a data directory (or ``path`` itself if it is one)."""
    return path / "wal" if (path / "wal").is_dir() else path


def _store(path: str | os.PathLike[str]) -> Path:
    """``path`` as a store's directory: it holds a log or checkpoints (or is a log dir).

    Raises:
        ConfigError: ``path`` is missing, a file, or a folder with no store in it (an
            empty log there would otherwise read as a healthy store).
    """
    p = Path(path)
    if not p.is_dir():
        what = "is a file" if p.exists() else "does not exist"
        raise ConfigError(f"{p} {what}: give an embedded store's data directory")
    if (
        (p / "wal").is_dir()
        or (p / "checkpoints").is_dir()
        or any(p.glob("wal-*.log"))
        or any(p.glob("checkpoint-*.ckpt"))
    ):
        return p
    raise ConfigError(
        f"{p} holds no embedded store (no wal/ or checkpoints/ in it): give the directory "
        "of an embedded://DIR URL that a worker has used"
    )


@contextlib.contextmanager
def _unowned(path: Path) -> Iterator[None]:
    """Refuse while a process owns the directory (its lock is held)."""
    lock = path / "LOCK"
    if not lock.exists():
        yield
        return
    fd = os.open(lock, os.O_RDWR)
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            raise BackendUnavailable(
                f"{path} is in use by process {owner}: stop it before changing its log"
            ) from None
        try:
            yield
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _size(d: Path) -> tuple[int, int]:
    segs = list(d.glob("wal-*.log"))
    return len(segs), sum(p.stat().st_size for p in segs)


class WalTools:
    """What ``dtq wal`` runs; each takes the store's data directory.

    Each refuses (:class:`ConfigError`) a path that holds no store.
    """

    def verify(self, path: Path) -> wal.VerifyReport:
        """Check every segment and record; changes nothing."""
        return wal.verify(_wal_dir(_store(path)))

    def inspect(self, path: Path, limit: int | None = None) -> list[dict[str, Any]]:
        """Records as ``lsn, type, version, kind, length, segment, offset`` rows.

        ``kind`` is the record's type (``enqueue``, ``ack``...; ``v1 call`` and the like
        for version-1 records), ``version`` its format version.
        """
        from dtq_core.backends.embedded import oplog

        rows = []
        for r, body in wal.inspect_bodies(_wal_dir(_store(path)), limit):
            row = r._asdict()
            row["version"] = oplog.version_of(r.rtype)
            row["kind"] = oplog.kind(r.rtype, body)
            rows.append(row)
        return rows

    def repair(self, path: Path) -> wal.RepairReport:
        """Salvage every readable record into a fresh log; the original is kept aside."""
        path = _store(path)
        with _unowned(path):
            return wal.repair(_wal_dir(path))

    def upgrade(self, path: Path) -> UpgradeReport:
        """Open the store (which converts older data to the current format) and close it.

        Refuses while a process owns the store, as the other tools that change it do.
        """
        from dtq_core.backends.embedded.backend import EmbeddedBackend

        path = _store(path)
        with _unowned(path):
            pass  # a clear refusal naming the owner, before the open below tries
        backend = EmbeddedBackend(f"embedded://{path}")
        backend.open()
        try:
            info = backend.info()
        finally:
            backend.close()
        converted = int(info["format_found"]) < int(info["format_version"])
        return UpgradeReport(
            path,
            int(info["format_found"]),
            int(info["format_version"]),
            int(info["converted_records"]),
            bool(info["converted_checkpoint"]),
            int(info.get("converted_at_lsn", 0)) if converted else 0,
        )

    def compact(self, path: Path) -> CompactReport:
        """Open the store, write a checkpoint and drop the segments it covers."""
        from dtq_core.backends.embedded.backend import EmbeddedBackend

        path = _store(path)
        before = _size(_wal_dir(path))
        backend = EmbeddedBackend(f"embedded://{path}")
        backend.open()  # takes the lock: refuses while an owner runs
        try:
            lsn = backend.checkpoint()
        finally:
            backend.close()
        after = _size(_wal_dir(path))
        return CompactReport(path, lsn, before[0], after[0], before[1], after[1])
