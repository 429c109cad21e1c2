"""Task ids: a random per-process prefix and a counter, 20 hex characters.

Cheaper than ``uuid4`` on the enqueue path (one f-string instead of 16 random bytes),
unique across processes by the 48-bit random prefix, renewed in a forked child.
"""

from __future__ import annotations

import itertools
import os

_prefix = ""
_counter = itertools.count(1)


def _reset() -> None:
    global _prefix, _counter
    _prefix = os.urandom(6).hex()
    _counter = itertools.count(1)


_reset()
os.register_at_fork(after_in_child=_reset)


def new_id() -> str:
    """A new task id (ids from one process sort by creation)."""
    return f"{_prefix}{next(_counter):08x}"
