"""One exception hierarchy for the whole engine, under :class:`DTQError`."""

from __future__ import annotations

from typing import Any


class DTQError(Exception):
    """Root of every error DTQ raises on purpose."""


class ConfigError(DTQError, ValueError):
    """A configuration value, URL or task option is invalid."""


class SerializationError(DTQError, ValueError):
    """A payload could not be encoded or decoded (not JSON, wrong envelope, pickle...)."""


class TaskNotRegistered(DTQError, LookupError):
    """A task name is not in the registry; nothing is ever imported by name."""


class TaskNotFound(DTQError, LookupError):
    """No task record exists with the given id."""


class IllegalTransition(DTQError):
    """A task state change that the transition table does not allow."""

    def __init__(self, task_id: str, old: str, new: str) -> None:
        super().__init__(f"task {task_id}: illegal transition {old} -> {new}")
        self.task_id = task_id
        self.old = old
        self.new = new


class BackendError(DTQError):
    """A storage backend failed; driver errors are wrapped in this type."""


class BackendUnavailable(BackendError, ConnectionError):
    """The backend cannot be reached (server down, directory locked, socket gone)."""


class StoreLocked(BackendUnavailable):
    """Another process owns the data directory (holds its lock)."""


class ReadOnlyError(DTQError, PermissionError):
    """A read-only session asked for a change; refused where the data is."""


class StoreCorrupted(BackendError):
    """Persistent state is damaged before its tail; recovery refuses to guess."""


class StoreFailed(BackendError):
    """The store hit an unrecoverable I/O error (fail-stop) and accepts no more writes."""


class TaskError(DTQError):
    """Base for errors raised while running a task."""


class TimeLimitExceeded(TaskError):
    """A task ran past its time limit and was interrupted or killed."""


class Retry(TaskError):
    """Raise from inside a task to ask for a retry.

    Args:
        countdown: Seconds to wait before the next attempt; the backoff policy decides
            when ``None``.
        reason: A short text recorded in the attempt history.
    """

    def __init__(self, countdown: float | None = None, reason: str = "retry requested") -> None:
        super().__init__(reason)
        self.countdown = countdown
        self.reason = reason


class TaskFailed(DTQError):
    """A task ended FAILED, DEAD or CANCELLED; the remote error is carried as data.

    Nothing is imported from the remote type name: ``exc_type`` is only a string.
    """

    def __init__(
        self,
        task_id: str,
        state: str,
        exc_type: str,
        message: str,
        traceback: str = "",
    ) -> None:
        super().__init__(f"task {task_id} {state.lower()}: {exc_type}: {message}")
        self.task_id = task_id
        self.state = state
        self.exc_type = exc_type
        self.message = message
        self.traceback = traceback

    def to_dict(self) -> dict[str, Any]:
        """The error as a JSON-ready dict."""
        return {
            "task_id": self.task_id,
            "state": self.state,
            "exc_type": self.exc_type,
            "message": self.message,
            "traceback": self.traceback,
        }


class DAGError(DTQError, ValueError):
    """A workflow definition is invalid (cycle, missing task, duplicate node id)."""


class CronError(DTQError, ValueError):
    """A cron expression is malformed or never fires."""


class RemoteTaskError(TaskError):
    """A task raised in a worker process; its type is carried by name, never imported.

    Attributes:
        exc_type: ``module.QualName`` of the remote exception.
        mro: The qualified names of its classes, most derived first (for ``retry_on``).
        message: ``str()`` of the remote exception.
        traceback: The remote formatted traceback.
    """

    def __init__(self, exc_type: str, mro: list[str], message: str, traceback: str) -> None:
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.mro = mro
        self.message = message
        self.traceback = traceback


class WorkerCrashed(TaskError):
    """The worker process running a task died (segfault, os._exit, OOM kill...)."""
