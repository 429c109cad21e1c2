"""The task registry: the only way a message's task name becomes code to run."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from dtq_core.errors import ConfigError, TaskNotRegistered

if TYPE_CHECKING:
    from dtq_core.client import Task


class Registry:
    """Maps task names to :class:`~dtq_core.client.Task` objects.

    Nothing is ever imported by name from a message: a name that is not here does not
    run (its message is dead-lettered with reason ``unregistered task``).
    """

    def __init__(self) -> None:
        self._tasks: dict[str, Task[Any, Any]] = {}
        self._lock = threading.Lock()

    def register(self, task: Task[Any, Any]) -> None:
        """Add ``task``; a different function under the same name is an error."""
        with self._lock:
            old = self._tasks.get(task.name)
            if old is not None and old.qualname != task.qualname:
                raise ConfigError(
                    f"task name {task.name!r} is already registered by {old.qualname}; "
                    "give one of them another name=..."
                )
            self._tasks[task.name] = task

    def unregister(self, name: str) -> None:
        """Remove a task (tests, hot reload)."""
        with self._lock:
            self._tasks.pop(name, None)

    def get(self, name: str) -> Task[Any, Any] | None:
        """The task registered under ``name``, or ``None``."""
        return self._tasks.get(name)

    def require(self, name: str) -> Task[Any, Any]:
        """The task registered under ``name``.

        Raises:
            TaskNotRegistered: Naming the task and what is registered.
        """
        task = self._tasks.get(name)
        if task is None:
            known = ", ".join(sorted(self._tasks)) or "none"
            raise TaskNotRegistered(f"unknown task {name!r} (registered: {known})")
        return task

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._tasks)

    def __contains__(self, name: object) -> bool:
        return name in self._tasks

    def __iter__(self) -> Iterator[Task[Any, Any]]:
        return iter(list(self._tasks.values()))

    def __len__(self) -> int:
        return len(self._tasks)


#: The registry ``@task`` uses unless given another.
default_registry = Registry()
