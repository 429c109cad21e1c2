"""Files under the log: segment listing, fsync hooks, full writes and directory fsyncs."""

from __future__ import annotations

import mmap
import os
from collections.abc import Callable
from pathlib import Path

from dtq_core.backends.embedded.framing import SEGMENT_NAME

#: Default size at which the active segment is closed and a new one started.
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024
#: Signature of the injectable fsync (``os.fsync`` by default).
FsyncFn = Callable[[int], None]


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """The segment files of ``directory`` as ``(first_lsn, path)``, oldest first."""
    found = []
    for path in directory.iterdir():
        match = SEGMENT_NAME.match(path.name)
        if match and path.is_file():
            found.append((int(match[1]), path))
    return sorted(found)


def read_mapped(path: Path, length: int | None = None) -> bytes | mmap.mmap:
    """The first ``length`` bytes of ``path`` (all of it by default), mapped read-only.

    Recovery reads every segment whole. Read into a bytes object, a segment is a block
    of tens of megabytes that glibc maps and, once it is freed, takes as its threshold:
    every large block after it (the records' dict tables, big log records) then comes
    from its heap and stays there, about 80 bytes per recovered task. A mapping never
    goes through the allocator. Slices of it are bytes; ``len``, ``struct``, ``zlib`` and
    ``memoryview`` take it as they take bytes.
    """
    with path.open("rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        n = size if length is None else min(length, size)
        if n == 0:
            return b""
        return mmap.mmap(fh.fileno(), n, access=mmap.ACCESS_READ)


def fsync_directory(directory: Path, fsync_fn: FsyncFn = os.fsync) -> None:
    """Make renames, creations and deletions in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fsync_fn(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray) -> None:
    """``os.write`` until every byte is written (a short write is not an error)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
