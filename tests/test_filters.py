"""The filter language shared by the CLI and the console."""

from __future__ import annotations

from typing import Any

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings

from dtq_core.codec import encode_message
from dtq_core.errors import ConfigError
from dtq_core.filters import KEYS, TaskFilter, parse_duration, parse_filter
from dtq_core.task import ErrorInfo, TaskRecord, TaskState

S = TaskState
NOW = 10_000.0


# -- durations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("90", 90.0),
        ("0", 0.0),
        ("30s", 30.0),
        ("15m", 900.0),
        ("1h", 3600.0),
        ("2d", 172_800.0),
        ("1w", 604_800.0),
        ("1.5h", 5400.0),
        ("0.25m", 15.0),
        ("1H", 3600.0),
        (" 2m ", 120.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "h", "1x", "-1h", "1 h", "1hm", "one", "1e3", ".5s", "1h30m"])
def test_parse_duration_rejects_and_names_the_value(bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(bad)
    assert repr(bad) in str(info.value)


# -- parsing -------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [None, "", [], ()])
def test_empty_spec_is_the_empty_filter(spec: Any) -> None:
    flt = parse_filter(spec)
    assert flt == TaskFilter()
    assert flt.is_empty()
    assert flt.describe() == ""


@pytest.mark.parametrize(
    "spec,expected",
    [
        ("task:app.add", TaskFilter(task="app.add")),
        ("queue:emails", TaskFilter(queue="emails")),
        ("exc:ValueError", TaskFilter(exc="ValueError")),
        ("state:failed", TaskFilter(states=frozenset({S.FAILED}))),
        ("since:1h", TaskFilter(since_s=3600.0)),
        ("id:abc1", TaskFilter(id_prefix="abc1")),
        ("text:timeout", TaskFilter(text="timeout")),
        ("reason:max_retries", TaskFilter(reason="max_retries")),
    ],
)
def test_each_key(spec: str, expected: TaskFilter) -> None:
    assert parse_filter(spec) == expected
    assert not expected.is_empty()


def test_every_key_is_covered_above() -> None:
    assert set(KEYS) == {"task", "queue", "exc", "state", "since", "id", "text", "reason"}


def test_keys_combine() -> None:
    flt = parse_filter("task:app.add queue:q1 exc:KeyError state:dead since:2d id:ff reason:lost")
    assert flt == TaskFilter(
        task="app.add",
        queue="q1",
        exc="KeyError",
        states=frozenset({S.DEAD}),
        since_s=172_800.0,
        id_prefix="ff",
        reason="lost",
    )


def test_keys_are_case_insensitive_and_states_too() -> None:
    assert parse_filter("TASK:App.Add State:Running") == TaskFilter(
        task="App.Add", states=frozenset({S.RUNNING})
    )


def test_several_states() -> None:
    assert parse_filter("state:failed,dead state:retry").states == {S.FAILED, S.DEAD, S.RETRY}


def test_bare_words_are_text() -> None:
    assert parse_filter("connection refused") == TaskFilter(text="connection refused")
    assert parse_filter("task:x connection text:refused again") == TaskFilter(
        task="x", text="connection refused again"
    )


def test_quoted_values() -> None:
    assert parse_filter('task:"my task" text:"two words"') == TaskFilter(
        task="my task", text="two words"
    )
    assert parse_filter("reason:'worker lost'") == TaskFilter(reason="worker lost")
    assert parse_filter("text:'a:b c'") == TaskFilter(text="a:b c")


def test_value_may_contain_a_colon() -> None:
    assert parse_filter("task:pkg:func") == TaskFilter(task="pkg:func")


def test_token_list_is_not_split_again() -> None:
    assert parse_filter(["task:my task", "hello world"]) == TaskFilter(
        task="my task", text="hello world"
    )


def test_last_value_of_a_repeated_key_wins() -> None:
    assert parse_filter("queue:a queue:b").queue == "b"


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        parse_filter("task:x colour:red")
    assert "'colour'" in str(info.value)
    assert "colour:red" in str(info.value)


@pytest.mark.parametrize("key", KEYS)
def test_key_without_value_is_named(key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_filter(f"{key}:")
    assert f"{key}:" in str(info.value)


def test_unknown_state_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        parse_filter("state:failed,exploded")
    assert "'exploded'" in str(info.value)
    assert "pending" in str(info.value)


def test_bad_duration_is_named() -> None:
    with pytest.raises(ConfigError, match="'soon'"):
        parse_filter("since:soon")


def test_unbalanced_quote_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="bad filter"):
        parse_filter('task:"open')


# -- matching ------------------------------------------------------------------------


def _rec(**overrides: Any) -> TaskRecord:
    fields: dict[str, Any] = {
        "id": "abc123",
        "name": "app.send_mail",
        "queue": "emails",
        "priority": 0,
        "payload": encode_message("abc123", "app.send_mail", ["bob@example.com"], {}),
        "state": S.PENDING,
        "created_at": NOW - 100,
        "enqueued_at": NOW - 100,
    }
    fields.update(overrides)
    return TaskRecord(**fields)


def test_empty_filter_matches_everything() -> None:
    for state in TaskState:
        assert TaskFilter().matches(_rec(state=state), NOW)


def test_match_task_queue_id() -> None:
    rec = _rec()
    assert parse_filter("task:app.send_mail").matches(rec, NOW)
    assert not parse_filter("task:app.send").matches(rec, NOW)  # names match exactly
    assert parse_filter("queue:emails").matches(rec, NOW)
    assert not parse_filter("queue:default").matches(rec, NOW)
    assert parse_filter("id:abc").matches(rec, NOW)
    assert not parse_filter("id:bc").matches(rec, NOW)  # a prefix, not a substring


def test_match_states() -> None:
    flt = parse_filter("state:failed,dead")
    assert flt.matches(_rec(state=S.DEAD), NOW)
    assert flt.matches(_rec(state=S.FAILED), NOW)
    assert not flt.matches(_rec(state=S.PENDING), NOW)


def test_match_exception_by_full_or_short_name() -> None:
    rec = _rec(state=S.DEAD, error=ErrorInfo("requests.exceptions.Timeout", "slow"))
    assert parse_filter("exc:Timeout").matches(rec, NOW)
    assert parse_filter("exc:requests.exceptions.Timeout").matches(rec, NOW)
    assert not parse_filter("exc:exceptions.Timeout").matches(rec, NOW)
    assert not parse_filter("exc:Time").matches(rec, NOW)
    assert not parse_filter("exc:Timeout").matches(_rec(), NOW)  # no error at all


def test_match_reason_is_a_case_insensitive_substring() -> None:
    rec = _rec(state=S.DEAD, dead_reason="worker_lost")
    assert parse_filter("reason:LOST").matches(rec, NOW)
    assert not parse_filter("reason:retries").matches(rec, NOW)
    assert not parse_filter("reason:lost").matches(_rec(), NOW)


def test_match_since_uses_finished_then_enqueued_time() -> None:
    flt = parse_filter("since:1m")
    assert flt.matches(_rec(enqueued_at=NOW - 60), NOW)  # the boundary is included
    assert not flt.matches(_rec(enqueued_at=NOW - 61), NOW)
    old_but_just_finished = _rec(enqueued_at=NOW - 5000, finished_at=NOW - 10, state=S.SUCCESS)
    assert flt.matches(old_but_just_finished, NOW)
    assert not flt.matches(_rec(enqueued_at=NOW - 30, finished_at=NOW - 90), NOW)


def test_match_text_searches_id_name_payload_error_and_reason() -> None:
    rec = _rec(
        state=S.DEAD,
        error=ErrorInfo("SMTPError", "Connection Refused by host"),
        dead_reason="max_retries",
    )
    for needle in ["abc1", "send_mail", "bob@example", "smtperror", "connection refused"]:
        assert parse_filter(f"text:{needle!r}").matches(rec, NOW), needle
    assert parse_filter("MAX_RETRIES").matches(rec, NOW)
    assert not parse_filter("alice").matches(rec, NOW)


def test_match_is_a_conjunction() -> None:
    rec = _rec(state=S.DEAD, dead_reason="worker_lost")
    assert parse_filter("queue:emails state:dead reason:lost").matches(rec, NOW)
    assert not parse_filter("queue:emails state:dead reason:retries").matches(rec, NOW)
    assert not parse_filter("queue:other state:dead reason:lost").matches(rec, NOW)


# -- describe() ----------------------------------------------------------------------


def test_describe_writes_the_language() -> None:
    flt = TaskFilter(
        task="app.add",
        queue="q",
        exc="KeyError",
        states=frozenset({S.RETRY, S.DEAD}),
        since_s=3600.0,
        id_prefix="ab",
        text="two words",
        reason="lost",
    )
    assert flt.describe() == (
        "task:app.add queue:q exc:KeyError id:ab reason:lost state:dead state:retry "
        "since:3600s text:'two words'"
    )
    assert parse_filter(flt.describe()) == flt


SAFE = st.text(alphabet=st.sampled_from("abcXYZ019._-:/@ "), min_size=1, max_size=12).filter(
    lambda s: s.strip() == s and s.strip() != ""
)
OPTIONAL = st.none() | SAFE


@settings(max_examples=60, deadline=None)
@given(
    task=OPTIONAL,
    queue=OPTIONAL,
    exc=OPTIONAL,
    states=st.frozensets(st.sampled_from(list(TaskState))),
    # Below 1e6 s: larger values are covered by test_describe_round_trip_keeps_since.
    since=st.none() | st.integers(0, 999_999).map(float),
    id_prefix=OPTIONAL,
    text=OPTIONAL,
    reason=OPTIONAL,
)
def test_describe_round_trip(
    task: str | None,
    queue: str | None,
    exc: str | None,
    states: frozenset[TaskState],
    since: float | None,
    id_prefix: str | None,
    text: str | None,
    reason: str | None,
) -> None:
    flt = TaskFilter(task, queue, exc, states, since, id_prefix, text, reason)
    assert parse_filter(flt.describe()) == flt


@pytest.mark.parametrize(
    "spec",
    [
        "since:1.5s",
        "since:0.5s",
        "since:90",
        "since:1h",
        "since:2w",
        "since:30d",
        "since:1.1h",
    ],
)
def test_describe_round_trip_keeps_since(spec: str) -> None:
    flt = parse_filter(spec)
    assert parse_filter(flt.describe()) == flt


@pytest.mark.parametrize(
    "flt",
    [TaskFilter(text="can't"), TaskFilter(task='say"hi'), TaskFilter(reason="a\\b")],
    ids=["apostrophe", "double-quote", "backslash"],
)
def test_describe_round_trip_with_quote_characters(flt: TaskFilter) -> None:
    assert parse_filter(flt.describe()) == flt
