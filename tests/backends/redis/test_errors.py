"""Bad URLs and an unreachable Redis: one clear error in bounded time, no traceback spam.

"Unreachable" is a port nothing listens on (found free, then left closed), with
``?retry_s=0.5`` so the backend gives up after half a second of retries.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from dtq_core import Broker, BrokerConfig, ConfigError
from dtq_core.backends import make_backend
from dtq_core.backends.base import NewTask
from dtq_core.backends.redis.backend import RedisBackend
from dtq_core.control import connect
from dtq_core.errors import BackendUnavailable, DTQError
from dtq_core.registry import Registry
from dtq_core.task import TaskState
from tests.backends.redis.cluster import APP, REPO, dtq_command
from tests.backends.redis.server import free_port

pytestmark = pytest.mark.redis

RETRY_S = 0.5
#: The retry budget plus connection attempts and a loaded machine's scheduling.
BOUND = RETRY_S + 1.5


@pytest.fixture
def closed_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0?prefix=nobody&retry_s={RETRY_S}"


@pytest.fixture
def brokers() -> Iterator[list[Broker]]:
    made: list[Broker] = []
    yield made
    for b in made:
        b.stop(drain_timeout=0)


def test_send_to_an_unreachable_redis_raises_backend_unavailable_in_time(
    closed_url: str, brokers: list[Broker]
) -> None:
    b = Broker(BrokerConfig(backend=closed_url, num_workers=0, registry=Registry()))
    brokers.append(b)
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable) as err:
        b.open()
        b.backend.register_names(["x"])
    elapsed = time.monotonic() - t0
    assert elapsed <= BOUND, elapsed
    assert "unreachable" in str(err.value)
    assert "127.0.0.1" in str(err.value)
    assert err.value.__cause__ is None  # one clear error, not a chain of redis-py ones


def test_ping_and_health_of_an_unreachable_redis(closed_url: str) -> None:
    backend = make_backend(closed_url)
    t0 = time.monotonic()
    with pytest.raises(BackendUnavailable):
        backend.ping()
    assert time.monotonic() - t0 <= BOUND
    assert backend.info() == {"connected": False}
    backend.close()


def test_console_connect_to_an_unreachable_redis_is_clear(closed_url: str) -> None:
    t0 = time.monotonic()
    try:
        console = connect(closed_url)
    except BackendUnavailable as exc:  # refusing at connect is clear too
        assert "unreachable" in str(exc)
    else:
        health = console.health()
        assert health.status == "down"
        assert any("unreachable" in r for r in health.reasons)
    assert time.monotonic() - t0 <= 2 * BOUND


def run_dtq(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "DTQ_NO_PROGRESS": "1"}
    env.pop("DTQ_BACKEND", None)
    return subprocess.run(
        [*dtq_command(), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_dtq_worker_on_an_unreachable_redis_exits_3_with_one_line(closed_url: str) -> None:
    t0 = time.monotonic()
    out = run_dtq("worker", APP, "--backend", closed_url, "-c", "1")
    elapsed = time.monotonic() - t0
    assert out.returncode == 3, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr
    lines = out.stderr.splitlines()
    errors = [line for line in lines if line.startswith("dtq: error:")]
    assert len(errors) == 1 and "unreachable" in errors[0], out.stderr
    # A worker logs each failed attempt with the next delay, then gives up in one line.
    retries = [line for line in lines if "retrying in" in line]
    assert retries and all("unreachable (attempt" in line for line in retries), out.stderr
    assert len(lines) == len(retries) + 1, out.stderr
    assert elapsed < 15, elapsed  # interpreter start-up included


def test_dtq_stats_on_an_unreachable_redis_exits_3(closed_url: str) -> None:
    out = run_dtq("--backend", closed_url, "stats")
    assert out.returncode == 3, (out.returncode, out.stderr)
    assert "Traceback" not in out.stderr
    assert "unreachable" in out.stderr


@pytest.mark.parametrize(
    "bad",
    [
        "redis://127.0.0.1:notaport/0",
        "redis:///0",
    ],
)
def test_malformed_urls_are_config_errors(bad: str) -> None:
    with pytest.raises(ConfigError):
        make_backend(bad)


@pytest.mark.parametrize("option", ["retry_s=soon", "maxlen=lots"])
def test_bad_url_options_are_config_errors(option: str) -> None:
    with pytest.raises(ConfigError, match=option.split("=", maxsplit=1)[0]):
        make_backend(f"redis://127.0.0.1:6399/0?{option}")


def test_passwordless_remote_url_warns_and_loopback_does_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="dtq.redis"):
        make_backend("redis://127.0.0.1:6399/0").close()
        make_backend("redis://localhost:6399/0").close()
        assert not caplog.records
        make_backend("redis://:secret@10.1.2.3:6399/0").close()
        assert not caplog.records
        make_backend("redis://10.1.2.3:6399/0").close()
    assert len(caplog.records) == 1
    assert "no password" in caplog.records[0].getMessage()


def test_duplicate_id_in_another_queue_is_refused(url: str) -> None:
    backend = make_backend(url)
    assert isinstance(backend, RedisBackend)
    now = time.time()
    backend.enqueue(NewTask("same-id", "app.x", "a", 0, b"first"), now)
    with pytest.raises(DTQError):
        backend.enqueue(NewTask("same-id", "app.x", "b", 0, b"second"), now)
    rec = backend.get("same-id")
    assert rec is not None
    assert (rec.queue, rec.payload, rec.state) == ("a", b"first", TaskState.PENDING)
    assert sum(q.ready for q in backend.queue_stats()) == 1
    backend.close()


def test_failures_with_hostile_text_are_stored_on_redis(url: str) -> None:
    # An exception message of a lone surrogate could not be sent to Redis: the worker
    # thread died and the task ran again at each lease expiry.
    from dtq_core import Broker, BrokerConfig
    from tests.workers.pool_tasks import registry
    from tests.workers.test_unstorable_results import check_hostile_failures

    b = Broker(BrokerConfig(backend=url, num_workers=2, registry=registry))
    try:
        check_hostile_failures(b)
    finally:
        b.stop(drain_timeout=2.0)
