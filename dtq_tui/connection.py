"""Opening the Console API for a URL, and a console that keeps trying to connect."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from dtq_core.control import ConsoleAPI, connect
from dtq_core.errors import BackendUnavailable
from dtq_core.redact import redact_url


class ReconnectingConsole:
    """A Console API for a backend that is not reachable yet.

    Every call tries to connect first; until that works it raises
    :class:`BackendUnavailable`, which the feed shows as a reconnecting banner.

    Args:
        url: The backend URL.
        first_error: Why the first attempt failed.
        opener: Connects (default :func:`dtq_core.control.connect`).
        read_only: The session may change nothing (the console it opens refuses).
    """

    def __init__(
        self,
        url: str,
        first_error: BaseException | None = None,
        opener: Callable[[str], ConsoleAPI] = connect,
        read_only: bool = False,
    ) -> None:
        self.url = url
        self.read_only = read_only
        self.last_error = first_error
        self._opener = opener
        self._inner: ConsoleAPI | None = None
        self._lock = threading.Lock()

    def _console(self) -> ConsoleAPI:
        with self._lock:
            if self._inner is None:
                try:
                    self._inner = self._opener(self.url)
                except Exception as exc:
                    self.last_error = exc
                    raise BackendUnavailable(f"cannot reach {redact_url(self.url)}: {exc}") from exc
            return self._inner

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        inner = self._inner
        if inner is not None:
            return getattr(inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return getattr(self._console(), name)(*args, **kwargs)

        call.__name__ = name
        return call
