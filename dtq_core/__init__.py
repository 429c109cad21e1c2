"""DTQ: a task queue with an embedded write-ahead-logged store, Redis, and a live console.

Quick start::

    from dtq_core import Broker, BrokerConfig, task, set_default_broker

    @task(name="add")
    def add(a, b):
        return a + b

    broker = Broker(BrokerConfig(num_workers=4, backend="memory://"))
    set_default_broker(broker)
    broker.start()
    print(add.delay(2, 3).get(timeout=10))  # 5
    broker.stop()
"""

from __future__ import annotations

from dtq_core.broker import Broker, StopSummary
from dtq_core.client import AsyncResult, Task, get_default_broker, set_default_broker, task
from dtq_core.config import BrokerConfig
from dtq_core.errors import (
    ConfigError,
    DTQError,
    Retry,
    SerializationError,
    TaskFailed,
    TaskNotFound,
    TaskNotRegistered,
    TimeLimitExceeded,
)
from dtq_core.filters import TaskFilter, parse_filter
from dtq_core.hooks import Hook
from dtq_core.monitoring.latency import LatencyHook
from dtq_core.reliability.circuit import BreakerHook
from dtq_core.reliability.deadletter import DeadLetterHook
from dtq_core.reliability.dedup import DedupHook
from dtq_core.reliability.retry import RetryHook, RetryPolicy
from dtq_core.scheduling.periodic import PeriodicHook, periodic
from dtq_core.scheduling.ratelimit import RateLimitHook
from dtq_core.task import TaskRecord, TaskState

__version__ = "0.1.0"

__all__ = [
    "AsyncResult",
    "BreakerHook",
    "Broker",
    "BrokerConfig",
    "ConfigError",
    "DTQError",
    "DeadLetterHook",
    "DedupHook",
    "Hook",
    "LatencyHook",
    "PeriodicHook",
    "RateLimitHook",
    "Retry",
    "RetryHook",
    "RetryPolicy",
    "SerializationError",
    "StopSummary",
    "Task",
    "TaskFailed",
    "TaskFilter",
    "TaskNotFound",
    "TaskNotRegistered",
    "TaskRecord",
    "TaskState",
    "TimeLimitExceeded",
    "__version__",
    "get_default_broker",
    "parse_filter",
    "periodic",
    "set_default_broker",
    "task",
]
