"""Task records as the embedded owner's replies carry them: with whole payloads."""

from __future__ import annotations

from typing import Any

from dtq_core.packed import Packed
from dtq_core.paging import TaskPage
from dtq_core.task import TaskRecord

__all__ = ["whole"]


def whole(value: Any) -> Any:
    """``value`` with each task record in it keeping its payload whole.

    A record in memory may keep a canonical payload as its tail only (a
    :class:`~dtq_core.packed.Packed`, which msgpack writes as an array): on the wire it
    is the whole message, as every release reads it. Records travel alone, in lists and
    in a :class:`~dtq_core.paging.TaskPage`; any other value is returned as it is.
    """
    kind = type(value)
    if kind is TaskRecord:
        if type(value.body) is not Packed:
            return value
        out = value.copy()
        out.body = value.payload
        return out
    if kind is list:
        if value and type(value[0]) is TaskRecord:
            return [whole(r) for r in value]
        return value
    if kind is TaskPage:
        return TaskPage(
            whole(value.records),
            value.total,
            value.total_exact,
            value.next_after,
            value.sort,
            value.descending,
        )
    return value
