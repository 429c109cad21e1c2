"""The Console API of an embedded owner, reached through its socket.

How ``dtq`` and ``dtq-tui`` talk to the worker that owns an ``embedded://`` store. The
methods are not listed here: any public method of
:class:`~dtq_core.console_api.ConsoleAPI` can be called, with its arguments and result
typed by the protocol's own signature (see :mod:`dtq_core.backends.embedded.wire`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from dtq_core import errors
from dtq_core.backends.embedded.backend import lock_holder
from dtq_core.backends.embedded.client import Client, OwnerGone


class RemoteConsole:
    """The Console API of an embedded owner.

    Args:
        path: The owner's socket file (``DIR/dtq.sock``).
        read_only: Ask the owner to refuse every change (it enforces it).
        connect_timeout: Seconds to wait for the owner to answer; an owner that is
            starting or restarting gets that long.

    Raises:
        BackendUnavailable: No owner answered in time.
    """

    def __init__(self, path: Path, read_only: bool = False, connect_timeout: float = 3.0) -> None:
        self.path = path
        self.read_only = read_only
        self.url = f"embedded://{path.parent}"
        self._client = Client(path, "console", read_only, connect_timeout)
        deadline = time.monotonic() + connect_timeout
        delay = 0.02
        while True:
            try:
                self._client.check()
                return
            except OwnerGone as exc:
                if time.monotonic() + delay >= deadline:
                    self._client.close()
                    holder = lock_holder(path.parent)
                    if holder is not None:
                        raise errors.BackendUnavailable(
                            f"the embedded store {path.parent} is locked by process {holder}, "
                            f"which does not answer on its socket (waited {connect_timeout:g}s:"
                            f" {exc}); it is starting, stuck, or opened the store without "
                            "serving it"
                        ) from None
                    raise errors.BackendUnavailable(
                        f"no worker owns the embedded store {path.parent} (nothing answered "
                        f"on its socket within {connect_timeout:g}s: {exc}); start one with "
                        f"`dtq worker APP --backend embedded://{path.parent}`"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call one Console API method on the owner.

        A request that was not sent (a connection the owner had closed) is sent once
        more on a new one; a request sent but unanswered is never resent, since the
        owner may have run it.
        """
        if method not in self._client.methods:
            raise AttributeError(method)
        for attempt in (0, 1):
            try:
                return self._client.call(method, args, kwargs)
            except OwnerGone as exc:
                if exc.sent or attempt:
                    raise errors.BackendUnavailable(
                        f"embedded owner at {self.path}: {exc}"
                    ) from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the connections (the next call reconnects)."""
        self._client.close()
        self._client = Client(self.path, "console", self.read_only, self._client.connect_timeout)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self._client.methods:
            raise AttributeError(name)

        def method(*args: Any, **kwargs: Any) -> Any:
            return self.call(name, *args, **kwargs)

        method.__name__ = name
        return method
