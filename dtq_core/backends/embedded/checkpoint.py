"""Checkpoint files: the engine's state at an LSN, written atomically and checksummed.

A checkpoint is ``checkpoint-<lsn>.ckpt`` (LSN zero-padded to 16 digits)::

    magic[8] | version u32 | lsn u64 | body length u64 | crc u32 | body

The CRC (``zlib.crc32``, as in the WAL) covers the header fields and the body. A
checkpoint is written to a temp file in the same directory, fsynced, renamed into place
and the directory fsynced, so a crash leaves either the old set of checkpoints or the
new one, never a half-written file under a checkpoint name.
"""

from __future__ import annotations

import logging
import os
import re
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from dtq_core.backends.embedded.wal import FsyncFn, fsync_directory, write_all
from dtq_core.errors import StoreCorrupted, StoreFailed

#: First bytes of every checkpoint file.
MAGIC = b"DTQCKPT\n"
#: Checkpoint version written: it is also the version of the body (see ``.state``).
FORMAT_VERSION = 2
#: Versions read: 1 (a JSON body, converted when the store opens) and 2.
READ_VERSIONS = frozenset({1, 2})
#: Checkpoint file names: ``checkpoint-`` + the LSN, zero-padded to 16 digits, + ``.ckpt``.
CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d{16})\.ckpt$")

_HEADER = struct.Struct("<8sIQQ")
_CRC = struct.Struct("<I")
_HEADER_SIZE = _HEADER.size + _CRC.size
_TMP_PREFIX = ".checkpoint-"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SkippedCheckpoint:
    """A checkpoint file that failed validation and was passed over."""

    path: Path
    reason: str


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The newest valid checkpoint, and any newer ones that were skipped as invalid."""

    lsn: int
    body: bytes
    path: Path
    skipped: tuple[SkippedCheckpoint, ...] = ()
    #: The format version of the file and its body.
    version: int = FORMAT_VERSION


def checkpoint_name(lsn: int) -> str:
    """The file name of the checkpoint taken at ``lsn``."""
    return f"checkpoint-{lsn:016d}.ckpt"


def write_checkpoint(
    directory: str | os.PathLike[str], lsn: int, body: bytes, fsync_fn: FsyncFn = os.fsync
) -> Path:
    """Write the checkpoint for ``lsn`` atomically.

    Args:
        directory: Where checkpoints live (created if missing).
        lsn: The last LSN whose effect ``body`` includes.
        body: The engine's serialized state.
        fsync_fn: Used for the file and the directory fsync.

    Returns:
        The checkpoint's path.

    Raises:
        StoreFailed: Writing, fsyncing or renaming failed; older checkpoints are intact.
    """
    root = Path(directory)
    target = root / checkpoint_name(lsn)
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, lsn, len(body))
    crc = zlib.crc32(body, zlib.crc32(head))
    tmp: str | None = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, suffix=".tmp", dir=root)
        try:
            write_all(fd, head + _CRC.pack(crc))
            write_all(fd, body)
            fsync_fn(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        tmp = None
        fsync_directory(root, fsync_fn)
    except OSError as exc:
        raise StoreFailed(f"could not write checkpoint {target}: {exc}") from exc
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return target


def read_checkpoint(path: Path) -> Checkpoint:
    """Read and validate one checkpoint file.

    Raises:
        StoreCorrupted: The file is short, has a bad magic, version, LSN or checksum.
    """
    data = path.read_bytes()
    if len(data) < _HEADER_SIZE:
        raise StoreCorrupted(f"checkpoint {path} is truncated")
    magic, version, lsn, length = _HEADER.unpack_from(data)
    (crc,) = _CRC.unpack_from(data, _HEADER.size)
    body = data[_HEADER_SIZE:]
    if magic != MAGIC or version not in READ_VERSIONS:
        raise StoreCorrupted(f"checkpoint {path} has a bad magic or version")
    if length != len(body) or zlib.crc32(body, zlib.crc32(data[: _HEADER.size])) != crc:
        raise StoreCorrupted(f"checkpoint {path} fails its checksum")
    match = CHECKPOINT_NAME.match(path.name)
    if match is None or int(match[1]) != lsn:
        raise StoreCorrupted(f"checkpoint {path} holds lsn {lsn}, not the one in its name")
    return Checkpoint(lsn, body, path, version=version)


def list_checkpoints(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """The checkpoint files of ``directory`` as ``(lsn, path)``, newest first."""
    root = Path(directory)
    if not root.is_dir():
        return []
    found = [(int(m[1]), p) for p in root.iterdir() if (m := CHECKPOINT_NAME.match(p.name))]
    return sorted(found, reverse=True)


def load_latest_checkpoint(directory: str | os.PathLike[str]) -> Checkpoint | None:
    """Load the newest valid checkpoint.

    An invalid newer checkpoint is skipped (logged, and listed in ``skipped``) in favour
    of an older valid one.

    Returns:
        The checkpoint, or ``None`` if there is no checkpoint file at all.

    Raises:
        StoreCorrupted: Checkpoint files exist but none is valid: starting from nothing
            would silently drop the state they held.
    """
    skipped: list[SkippedCheckpoint] = []
    for _, path in list_checkpoints(directory):
        try:
            found = read_checkpoint(path)
        except (StoreCorrupted, OSError) as exc:
            log.warning("skipping invalid checkpoint %s: %s", path, exc)
            skipped.append(SkippedCheckpoint(path, str(exc)))
            continue
        return Checkpoint(found.lsn, found.body, found.path, tuple(skipped), found.version)
    if skipped:
        names = ", ".join(s.path.name for s in skipped)
        raise StoreCorrupted(f"no valid checkpoint in {directory}; invalid: {names}")
    return None


def prune_checkpoints(
    directory: str | os.PathLike[str], keep: int = 2, fsync_fn: FsyncFn = os.fsync
) -> list[Path]:
    """Delete all but the ``keep`` newest valid checkpoints, and stale temp files.

    Invalid checkpoints older than the newest kept one go too; newer invalid ones stay,
    as evidence, until a newer valid checkpoint overtakes them.

    Returns:
        The deleted files.
    """
    if keep < 1:
        raise ValueError("keep must be at least 1")
    root = Path(directory)
    kept: list[int] = []
    doomed: list[Path] = []
    for lsn, path in list_checkpoints(root):
        if len(kept) >= keep:
            doomed.append(path)
            continue
        try:
            read_checkpoint(path)
        except (StoreCorrupted, OSError):
            if kept:
                doomed.append(path)
            continue
        kept.append(lsn)
    if root.is_dir():
        doomed += [p for p in root.iterdir() if p.name.startswith(_TMP_PREFIX)]
    for path in doomed:
        path.unlink(missing_ok=True)
    if doomed:
        fsync_directory(root, fsync_fn)
    return doomed
