"""The Console API over a Unix socket: how ``dtq`` and ``dtq-tui`` reach an embedded owner.

One JSON object per line each way: ``{"method": ..., "params": {...}}`` answered by
``{"ok": true, "result": ...}`` or ``{"ok": false, "error": TYPE, "message": ...}``.
Only the Console API's methods can be called; the socket is created owner-only
(``0600``) inside the data directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import socket
import threading
import types
import typing
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from dtq_core import errors
from dtq_core.events import Event
from dtq_core.reliability.deadletter import FailureGroup, ReplayPlan
from dtq_core.snapshot import Health, SystemSnapshot, WorkflowSnapshot
from dtq_core.task import TaskRecord

log = logging.getLogger("dtq.rpc")

#: Methods a client may call, and how to decode their results.
METHODS: dict[str, Any] = {
    "snapshot": SystemSnapshot,
    "events": list[Event],
    "tasks": list[TaskRecord],
    "task": TaskRecord | None,
    "dead_letters": list[TaskRecord],
    "dead_groups": list[FailureGroup],
    "replay": list[ReplayPlan],
    "purge": int,
    "cancel": bool,
    "enqueue": str,
    "pause_queue": None,
    "resume_queue": None,
    "health": Health,
    "metrics_text": str,
    "pause_schedule": None,
    "trigger_schedule": str,
    "set_rate_limit": None,
    "set_breaker": None,
    "run_workflow": str,
    "retry_workflow": list[str],
    "workflow": WorkflowSnapshot | None,
}


def to_data(value: Any) -> Any:
    """Plain JSON data from dataclasses, records, events, tuples."""
    if isinstance(value, TaskRecord):
        return value.to_dict(with_payload=True)
    if isinstance(value, Event):
        return list(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [to_data(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_data(v) for k, v in value.items()}
    return value


def from_data(tp: Any, data: Any) -> Any:
    """Rebuild a value of type ``tp`` from :func:`to_data` output."""
    if data is None or tp is Any or tp is None:
        return data
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(tp) if a is not type(None)]
        return from_data(inner[0], data) if len(inner) == 1 else data
    if tp is TaskRecord:
        return TaskRecord.from_dict(data)
    if tp is Event:
        return Event(*data)
    if origin is list:
        (item,) = get_args(tp)
        return [from_data(item, v) for v in data]
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_data(args[0], v) for v in data)
        return tuple(from_data(a, v) for a, v in zip(args, data, strict=False))
    if origin is dict:
        _, vt = get_args(tp)
        return {k: from_data(vt, v) for k, v in data.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = get_type_hints(tp)
        return tp(**{k: from_data(hints[k], v) for k, v in data.items() if k in hints})
    return data


class ConsoleServer:
    """Serves a Console API object on a Unix socket, one thread per connection."""

    def __init__(self, console: Any, path: Path) -> None:
        self.console = console
        self.path = path
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def start(self) -> None:
        """Bind (replacing a stale socket file) and serve in a daemon thread."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        sock.listen(16)
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, name="dtq-console-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and remove the socket file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._sock is not None:
            self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as fh:
            for line in fh:
                reply = self._handle(line)
                fh.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
                fh.flush()

    def _handle(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
            method = req["method"]
            if method not in METHODS:
                raise errors.ConfigError(f"unknown console method {method!r}")
            result = getattr(self.console, method)(**req.get("params", {}))
            return {"ok": True, "result": to_data(result)}
        except Exception as exc:
            kind = type(exc).__name__ if isinstance(exc, errors.DTQError) else "DTQError"
            if not isinstance(exc, errors.DTQError | TimeoutError):
                log.exception("console request failed")
            return {"ok": False, "error": kind, "message": str(exc)}


class RemoteConsole:
    """The Console API of an embedded owner, reached through its socket.

    Raises:
        BackendUnavailable: When the socket does not answer.
    """

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._fh: Any = None
        self.url = f"embedded://{path.parent}"

    def _connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except OSError as exc:
            sock.close()
            raise errors.BackendUnavailable(
                f"no embedded owner answers on {self.path}: {exc.strerror or exc}"
            ) from None
        self._sock, self._fh = sock, sock.makefile("rwb")

    def call(self, method: str, **params: Any) -> Any:
        """Call one Console API method on the owner."""
        request = json.dumps({"method": method, "params": params}).encode() + b"\n"
        with self._lock:
            for attempt in (0, 1):
                if self._fh is None:
                    self._connect()
                try:
                    self._fh.write(request)
                    self._fh.flush()
                except OSError as exc:
                    # Not sent (a connection the owner closed): safe to send once more.
                    self.close()
                    if attempt:
                        raise errors.BackendUnavailable(
                            f"embedded owner at {self.path} stopped answering: {exc}"
                        ) from None
                    continue
                try:
                    line = self._fh.readline()
                except OSError as exc:
                    # Sent but unanswered: never resent, the owner may have run it.
                    self.close()
                    raise errors.BackendUnavailable(
                        f"embedded owner at {self.path} did not answer {method} in time "
                        f"({exc}); it may or may not have run"
                    ) from None
                if not line:
                    self.close()
                    if attempt:
                        raise errors.BackendUnavailable(
                            f"embedded owner at {self.path} closed the connection"
                        )
                    continue  # an idle connection the owner had dropped: resend once
                break
        reply = json.loads(line)
        if not reply["ok"]:
            exc_type = getattr(errors, reply["error"], errors.DTQError)
            if not (isinstance(exc_type, type) and issubclass(exc_type, Exception)):
                exc_type = errors.DTQError
            try:
                raise exc_type(reply["message"])
            except TypeError:  # an error type whose constructor takes other arguments
                raise errors.DTQError(reply["message"]) from None
        return from_data(METHODS[method], reply["result"])

    def close(self) -> None:
        """Close the connection (the next call reconnects)."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = self._fh = None

    def __getattr__(self, name: str) -> Any:
        if name not in METHODS:
            raise AttributeError(name)

        def method(*args: Any, **kwargs: Any) -> Any:
            if args:
                params = list(typing.get_type_hints(getattr(_Proto, name)))
                kwargs.update(zip([p for p in params if p != "return"], args, strict=False))
            flt = kwargs.get("flt")
            if flt is not None and not isinstance(flt, str):
                kwargs["flt"] = flt.describe()  # a TaskFilter travels as its text
            return self.call(name, **kwargs)

        return method


class _Proto:
    """Positional parameter names of the Console API (for RemoteConsole calls)."""

    def snapshot(self) -> None: ...
    def events(self, since: int, limit: int) -> None: ...
    def tasks(self, flt: str, offset: int, limit: int) -> None: ...
    def task(self, task_id: str) -> None: ...
    def dead_letters(self, flt: str, offset: int, limit: int) -> None: ...
    def dead_groups(self, flt: str) -> None: ...
    def replay(
        self,
        task_ids: list[str],
        args: list[Any],
        kwargs: dict[str, Any],
        note: str,
        dry_run: bool,
    ) -> None: ...
    def purge(self, task_ids: list[str]) -> None: ...
    def cancel(self, task_id: str) -> None: ...
    def enqueue(self, name: str, args: list[Any], kwargs: dict[str, Any]) -> None: ...
    def pause_queue(self, queue: str) -> None: ...
    def resume_queue(self, queue: str) -> None: ...
    def health(self) -> None: ...
    def metrics_text(self) -> None: ...
    def pause_schedule(self, name: str, paused: bool) -> None: ...
    def trigger_schedule(self, name: str) -> None: ...
    def set_rate_limit(self, scope: str, key: str, rate: float, burst: int) -> None: ...
    def set_breaker(self, key: str, state: str) -> None: ...
    def run_workflow(self, spec: dict[str, Any]) -> None: ...
    def retry_workflow(self, run_id: str) -> None: ...
    def workflow(self, run_id: str) -> None: ...
