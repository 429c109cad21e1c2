"""Secrets stay secret: URLs and sensitive arguments are masked by the engine's views."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from dtq_core import Broker, BrokerConfig, task
from dtq_core.control import LocalConsole, connect
from dtq_core.errors import ConfigError
from dtq_core.redact import REDACTED, Redactor, redact_text, redact_url, restore
from dtq_core.registry import Registry


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@db:6379/0", "redis://:***@db:6379/0"),
        ("redis://ann:hunter2@db:6379/0", "redis://ann:***@db:6379/0"),
        (
            "rediss://:s3cr%40t@db.example:6380/1?prefix=app",
            "rediss://:***@db.example:6380/1?prefix=app",
        ),
        (
            "redis+cluster://:pw@h1:7000,h2:7001/0?prefix=p",
            "redis+cluster://:***@h1:7000,h2:7001/0?prefix=p",
        ),
        (
            "redis://db:6379/0?password=hunter2&prefix=x",
            "redis://db:6379/0?password=***&prefix=x",
        ),
        (
            "rediss://db:6379/0?ssl_password=hunter2&ssl_certfile=/etc/c.pem",
            "rediss://db:6379/0?ssl_password=***&ssl_certfile=/etc/c.pem",
        ),
        (
            "redis://db:6379/0?password_file=/run/secrets/redis",
            "redis://db:6379/0?password_file=/run/secrets/redis",
        ),
        (
            "redis://127.0.0.1:6379/0?prefix=a&retry_s=3",
            "redis://127.0.0.1:6379/0?prefix=a&retry_s=3",
        ),
        ("redis://user@db:6379/0", "redis://user@db:6379/0"),
        ("embedded://./dtq-data", "embedded://./dtq-data"),
        ("memory://", "memory://"),
        ("not a url", "not a url"),
        ("redis://:pw@", "redis://:***@"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_masks_urls_inside_messages_and_named_secrets() -> None:
    text = "redis at redis://:hunter2@db:6379/0 unreachable; server said AUTH hunter2 failed"
    out = redact_text(text, ["hunter2"])
    assert "hunter2" not in out
    assert "redis://:***@db:6379/0" in out
    assert redact_text("'redis://:pw@h:1/0' is bad") == "'redis://:***@h:1/0' is bad"


def test_redactor_masks_sensitive_keys_at_any_depth_any_case() -> None:
    r = Redactor()
    value = {
        "user": "ann",
        "Password": "p",
        "nested": [{"X-Api-Key": "k", "n": 1}, {"cardToken": "t"}],
        "headers": {"Authorization": "Bearer x", "Cookie": "c"},
        "db_password": None,
    }
    assert r.value(value) == {
        "user": "ann",
        "Password": REDACTED,
        "nested": [{"X-Api-Key": REDACTED, "n": 1}, {"cardToken": REDACTED}],
        "headers": {"Authorization": REDACTED, "Cookie": REDACTED},
        "db_password": None,  # nothing to hide
    }
    assert Redactor(["iban"]).value({"IBAN_number": "DE00"}) == {"IBAN_number": REDACTED}
    assert r.value({"IBAN_number": "DE00"}) == {"IBAN_number": "DE00"}


def test_restore_keeps_untouched_secrets_and_takes_new_values() -> None:
    original = {"user": "ann", "password": "p", "keys": [{"token": "t1"}, {"token": "t2"}]}
    edited = {
        "user": "bob",
        "password": REDACTED,
        "keys": [{"token": REDACTED}, {"token": "new"}],
    }
    assert restore(edited, original) == {
        "user": "bob",
        "password": "p",
        "keys": [{"token": "t1"}, {"token": "new"}],
    }


@pytest.fixture
def registry() -> Registry:
    reg = Registry()

    @task(name="login", max_retries=0, registry=reg)
    def login(user: str, password: str = "", **extra: object) -> dict[str, str]:
        raise ValueError("refused")

    @task(name="charge", redact_args=True, max_retries=0, registry=reg)
    def charge(card: str, cvc: str) -> None:
        raise ValueError("declined")

    @task(name="fetch", registry=reg)
    def fetch(url: str) -> dict[str, str]:
        return {"status": "ok", "session_id": "s-123"}

    return reg


@pytest.fixture
def broker(registry: Registry) -> Iterator[Broker]:
    b = Broker(
        BrokerConfig(backend="memory://", num_workers=0, registry=registry, redact=("iban",))
    )
    b.open()
    yield b
    b.stop(drain_timeout=0)


def test_record_views_mask_keys_positional_args_results_and_edits(broker: Broker) -> None:
    c = broker.control
    login = broker.send("login", ["ann"], {"password": "hunter2", "IBAN": "DE99"}).id
    charge = broker.send("charge", ["4111111111111111", "123"]).id
    fetch = broker.send("fetch", ["https://x"]).id
    broker.work()
    rec = c.task(login)
    assert rec is not None
    assert rec.args == ["ann"]
    assert rec.kwargs == {"password": REDACTED, "IBAN": REDACTED}
    charged = c.task(charge)
    assert charged is not None and charged.args == [REDACTED, REDACTED]
    fetched = c.task(fetch)
    assert fetched is not None and fetched.result == {"status": "ok", "session_id": REDACTED}
    for view in (c.tasks(), c.dead_letters(), c.task_page().records):
        text = json.dumps([r.to_dict(with_payload=True) for r in view])
        assert "hunter2" not in text and "4111" not in text and "DE99" not in text
    # The store keeps the real values: the worker ran with them.
    raw = broker.backend.get(login)
    assert raw is not None and raw.kwargs["password"] == "hunter2"


def test_replay_keeps_masked_values_an_edit_left_and_shows_none(broker: Broker) -> None:
    c = broker.control
    dead = broker.send("login", ["ann"], {"password": "hunter2"}).id
    broker.work()
    shown = c.task(dead)
    assert shown is not None
    # The operator edits the user and leaves the masked password as shown.
    plans = c.replay([dead], args=["bob"], kwargs=dict(shown.kwargs), note="fix user")
    assert plans[0].kwargs == {"password": REDACTED}
    new = broker.backend.get(plans[0].new_id or "")
    assert new is not None
    assert new.args == ["bob"] and new.kwargs == {"password": "hunter2"}
    edits = c.task(plans[0].new_id or "")
    assert edits is not None
    assert "hunter2" not in json.dumps(edits.to_dict())
    # Typing a new value replaces it.
    broker.work()
    plans = c.replay([plans[0].new_id or ""], kwargs={"password": "new-pw"})
    again = broker.backend.get(plans[0].new_id or "")
    assert again is not None and again.kwargs == {"password": "new-pw"}


def test_redact_args_travels_in_the_message(registry: Registry, broker: Broker) -> None:
    tid = broker.send("charge", ["4111111111111111", "123"]).id
    # Another process, whose registry does not know the task, still masks it.
    other = Broker(BrokerConfig(backend="memory://", num_workers=0, registry=Registry()))
    other.backend = broker.backend
    rec = LocalConsole(other).task(tid)
    assert rec is not None and rec.args == [REDACTED, REDACTED]
    other_id = broker.send("login", ["ann"], options={"redact_args": True}).id
    shown = broker.control.task(other_id)
    assert shown is not None and shown.args == [REDACTED]


def test_redact_args_must_be_a_bool() -> None:
    with pytest.raises(ConfigError, match="redact_args"):

        @task(name="bad", redact_args="yes", registry=Registry())
        def bad() -> None: ...


def test_snapshot_and_errors_show_the_url_redacted() -> None:
    b = Broker(BrokerConfig(backend="memory://:hunter2@x", num_workers=0, registry=Registry()))
    b.open()
    try:
        snap = b.control.snapshot()
        assert snap.backend == "memory://:***@x"
        assert "hunter2" not in json.dumps(snap.to_dict(), default=str)
    finally:
        b.stop(drain_timeout=0)
    with pytest.raises(ConfigError) as err:
        connect("nosuch://:hunter2@host/0")
    assert "hunter2" not in str(err.value) and ":***@" in str(err.value)


def test_a_printed_config_hides_the_password() -> None:
    cfg = BrokerConfig(backend="redis://:hunter2@db:6379/0", num_workers=0)
    assert "hunter2" not in repr(cfg) and "redis://:***@db:6379/0" in repr(cfg)
    assert cfg.backend == "redis://:hunter2@db:6379/0"  # the real value is kept
