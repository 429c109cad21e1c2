"""Refusals with the right reason (issue 17, point 4): no store, unknown queue, bad URL, advice."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli import _common
from cli._errors import describe
from dtq_core import Broker, errors
from dtq_core.backends import make_backend
from dtq_core.backends.embedded.backend import parse_url as parse_embedded
from dtq_core.backends.redis.backend import parse_url as parse_redis
from dtq_core.control import wal_tools

from .conftest import RunDtq

# -- wal on a folder that holds no store ------------------------------------------------


@pytest.mark.parametrize("command", ["verify", "inspect", "repair", "compact"])
def test_wal_refuses_a_folder_without_a_store(dtq, tmp_path: Path, command: str) -> None:
    (tmp_path / "notes.txt").write_text("not a store")
    result = dtq("wal", command, str(tmp_path))
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1
    assert "holds no embedded store" in result.stderr
    assert list(tmp_path.iterdir()) == [tmp_path / "notes.txt"]  # nothing was created


def test_wal_tools_refuse_for_every_face(tmp_path: Path) -> None:
    with pytest.raises(errors.ConfigError, match="holds no embedded store"):
        wal_tools().verify(tmp_path)
    with pytest.raises(errors.ConfigError, match="is a file"):
        (tmp_path / "f").write_text("")
        wal_tools().inspect(tmp_path / "f")


def test_wal_still_verifies_a_real_store(dtq, tmp_path: Path) -> None:
    data = tmp_path / "data"
    b = Broker(_config(f"embedded://{data}"))
    b.start()  # a process that runs workers owns (and creates) the store
    b.stop(drain_timeout=0)
    result = dtq("wal", "verify", str(data))
    assert result.exit_code == 0, result.output
    assert "no problems" in result.stdout


def _config(url: str):
    from dtq_core import BrokerConfig

    return BrokerConfig(backend=url, num_workers=1)


# -- pausing a queue nobody named --------------------------------------------------------


@pytest.mark.parametrize("verb", ["pause", "resume"])
def test_unknown_queue_is_refused(dtq, broker: Broker, verb: str) -> None:
    broker.send("add", [1, 2], queue="emails")
    result = dtq("queues", verb, "emial")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "no queue 'emial': did you mean 'emails'?" in result.stderr
    assert "known queues: emails" in result.stderr
    assert "--create" in result.stderr
    assert not any(q.paused for q in broker.control.snapshot().queues)
    assert "emial" not in {q.name for q in broker.control.snapshot().queues}


def test_create_pauses_a_queue_before_first_use(dtq, broker: Broker) -> None:
    result = dtq("queues", "pause", "later", "--create")
    assert result.exit_code == 0, result.output
    assert {q.name: q.paused for q in broker.control.snapshot().queues} == {"later": True}


def test_a_queue_known_only_from_records_is_accepted(dtq, broker: Broker) -> None:
    broker.send("add", [1, 2], queue="batch")
    broker.work()  # the queue is empty now; its records still name it
    assert dtq("queues", "pause", "batch").exit_code == 0


# -- bad URLs, refused when parsed --------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("redis://host:6379/abc", "the database 'abc' is not a whole number"),
        ("redis://host:port/0", "the port is not a number"),
        ("redis://:6379/0", "no host"),
        ("redis://host:6379/0?prefx=app", "unknown option 'prefx'"),
        ("redis:/host", "expected SCHEME://"),
        ("rabbit://host", "unknown backend scheme 'rabbit'"),
        ("embedded://", "needs a directory"),
        ("embedded://./d?fsync=sometimes", "use always, interval or off"),
    ],
)
def test_bad_urls_are_refused_saying_what_was_expected(url: str, says: str) -> None:
    with pytest.raises(errors.ConfigError, match=says) as info:
        make_backend(url)
    message, code = describe(info.value)
    assert code == 2
    assert "\n" not in message


def test_good_redis_urls_still_parse() -> None:
    plain, ours = parse_redis("redis://:pw@host:6379/2?prefix=app&socket_timeout=2")
    assert ours == {"prefix": "app"}
    assert "socket_timeout=2" in plain
    assert parse_redis("rediss://host")[1] == {}


def test_embedded_url_naming_a_file(run_dtq: RunDtq, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    with pytest.raises(errors.ConfigError, match="is a file"):
        parse_embedded(f"embedded://{tmp_path}/afile")
    out = run_dtq("stats", "--backend", "embedded://./afile")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1
    assert "afile is a file; the store needs a directory" in out.stderr
    assert "internal error" not in out.stderr


# -- each error's advice fits its cause ---------------------------------------------------


@pytest.mark.parametrize(
    ("message", "advice"),
    [
        ("redis at redis://h:1/0 unreachable: refused", "is the Redis server up"),
        ("no embedded owner answers on /d/dtq.sock: refused", "start `dtq worker"),
        ("data directory /d is owned by process 7; attach through it", None),
        ("no embedded store at d: check the path, or start a worker there", None),
        ("/d is in use by process 7: stop it before changing its log", None),
        ("something else", "check --backend / DTQ_BACKEND"),
    ],
)
def test_unavailable_advice_fits_the_cause(message: str, advice: str | None) -> None:
    text, code = describe(errors.BackendUnavailable(message))
    assert code == 3
    if advice is None:
        assert text == message  # the message carries its own fix; nothing generic added
    else:
        assert text.startswith(message + " (")
        assert advice in text


def test_connect_failure_reaches_the_user_with_its_advice(
    dtq, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(url: str | None) -> None:
        raise errors.BackendUnavailable("redis at redis://x:1/0 unreachable: refused")

    monkeypatch.setattr(_common, "connect", refuse)
    result = dtq("stats")
    assert result.exit_code == 3
    assert "is the Redis server up" in result.stderr
    assert "broker or server is running" not in result.stderr


def test_a_queue_a_worker_serves_is_accepted(
    dtq, cli_registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dtq_core import BrokerConfig

    from .conftest import KeptConsole

    b = Broker(BrokerConfig(backend="memory://", num_workers=1, queues=("emails",),
                            registry=cli_registry))  # fmt: skip
    b.start()
    monkeypatch.setattr(_common, "connect", lambda url: KeptConsole(b))
    try:
        assert {q for w in b.control.snapshot().workers for q in w.queues} == {"emails"}
        result = dtq("queues", "pause", "emails")
        assert result.exit_code == 0, result.output
        assert dtq("queues", "pause", "emial").exit_code == 2
    finally:
        b.stop(drain_timeout=0)
