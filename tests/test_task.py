"""Task states, the transition table and the record's serialised form."""

from __future__ import annotations

import itertools

import pytest

from dtq_core.codec import encode_message
from dtq_core.errors import IllegalTransition
from dtq_core.task import (
    RECORD_FIELDS,
    TERMINAL,
    TRANSITIONS,
    Attempt,
    ErrorInfo,
    TaskRecord,
    TaskState,
    check_transition,
)

S = TaskState
ALL_PAIRS = list(itertools.product(TaskState, repeat=2))
LEGAL = [(old, new) for old, new in ALL_PAIRS if new in TRANSITIONS[old]]
ILLEGAL = [(old, new) for old, new in ALL_PAIRS if new not in TRANSITIONS[old]]


def _ids(pair: tuple[TaskState, TaskState]) -> str:
    return f"{pair[0].value}->{pair[1].value}"


def test_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(TaskState)
    for targets in TRANSITIONS.values():
        assert targets <= set(TaskState)


def test_table_is_the_documented_lifecycle() -> None:
    # Pinned on purpose: a change to the lifecycle must be a deliberate edit here too.
    expected = {
        S.PENDING: {S.RUNNING, S.CANCELLED, S.DEAD},
        S.RUNNING: {S.SUCCESS, S.FAILED, S.PENDING, S.DEAD},
        S.FAILED: {S.RETRY, S.DEAD},
        S.RETRY: {S.PENDING, S.CANCELLED},
        S.SUCCESS: set(),
        S.DEAD: set(),
        S.CANCELLED: set(),
    }
    assert expected == TRANSITIONS


@pytest.mark.parametrize("pair", LEGAL, ids=_ids)
def test_legal_transition_passes(pair: tuple[TaskState, TaskState]) -> None:
    check_transition("t1", *pair)


@pytest.mark.parametrize("pair", ILLEGAL, ids=_ids)
def test_illegal_transition_raises(pair: tuple[TaskState, TaskState]) -> None:
    old, new = pair
    with pytest.raises(IllegalTransition) as info:
        check_transition("t1", old, new)
    assert info.value.task_id == "t1"
    assert info.value.old == old.value
    assert info.value.new == new.value
    assert f"{old.value} -> {new.value}" in str(info.value)


def test_no_state_moves_to_itself() -> None:
    for state in TaskState:
        assert state not in TRANSITIONS[state]


def test_final_states_other_than_failed_have_no_exits() -> None:
    for state in TERMINAL - {S.FAILED}:
        assert TRANSITIONS[state] == frozenset(), state


def test_failed_exits_only_to_retry_or_dead() -> None:
    # FAILED is both a resting state (dead_letter=False) and the step before RETRY/DEAD,
    # taken in the same backend call (see the TERMINAL docstring).
    assert TRANSITIONS[S.FAILED] == frozenset({S.RETRY, S.DEAD})


def test_non_terminal_states_can_reach_a_terminal_state() -> None:
    for start in set(TaskState) - TERMINAL:
        seen, todo = {start}, [start]
        while todo:
            for nxt in TRANSITIONS[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen & TERMINAL, start


def test_states_are_str_enums() -> None:
    for state in TaskState:
        assert state == state.value
        assert TaskState(state.value) is state


# -- records -------------------------------------------------------------------------


def _record(**overrides: object) -> TaskRecord:
    payload = encode_message("abc123", "app.add", [1, 2], {"z": "é"}, {"priority": 3})
    fields: dict[str, object] = {
        "id": "abc123",
        "name": "app.add",
        "queue": "default",
        "priority": 3,
        "payload": payload,
        "state": S.PENDING,
        "created_at": 100.0,
        "enqueued_at": 101.0,
    }
    fields.update(overrides)
    return TaskRecord(**fields)  # type: ignore[arg-type]


def _full_record() -> TaskRecord:
    boom = ErrorInfo("builtins.ValueError", "boom", "Traceback...\nValueError: boom")
    return _record(
        state=S.DEAD,
        eta=150.0,
        max_retries=2,
        time_limit=30.0,
        attempt=3,
        deliveries=4,
        started_at=200.0,
        finished_at=201.5,
        result={"partial": [1, 2, None]},
        error=boom,
        history=(
            Attempt(1, "w1", 110.0, 111.0, "FAILED", ErrorInfo("KeyError", "k")),
            Attempt(2, "w2", 120.0, 121.0, "LOST", None),
        ),
        replayed_from="old1",
        replayed_to=("new1", "new2"),
        dead_reason="max_retries",
        worker="w3",
        lease_deadline=None,
        edits=({"args": [5, 6], "new_task": "new1"},),
        dedup_key="dk",
        workflow="wf1",
    )


def test_round_trip_with_payload_keeps_every_field() -> None:
    rec = _full_record()
    back = TaskRecord.from_dict(rec.to_dict(with_payload=True))
    assert back == rec


def test_round_trip_of_a_minimal_record() -> None:
    rec = _record()
    assert TaskRecord.from_dict(rec.to_dict(with_payload=True)) == rec


def test_to_dict_decodes_args_and_hides_payload_by_default() -> None:
    data = _record().to_dict()
    assert "payload" not in data
    assert data["args"] == [1, 2]
    assert data["kwargs"] == {"z": "é"}
    assert data["options"] == {"priority": 3}
    assert data["state"] == "PENDING"


def test_to_dict_is_json_ready() -> None:
    import json

    data = _full_record().to_dict(with_payload=True)
    assert json.loads(json.dumps(data)) == data


def test_to_dict_of_an_undecodable_payload() -> None:
    rec = _record(payload=b"\x80\x04not a message", state=S.DEAD)
    data = rec.to_dict()
    assert data["args"] is None
    assert data["kwargs"] is None
    assert data["options"] == {}


def test_args_and_kwargs_properties() -> None:
    rec = _record()
    assert rec.args == [1, 2]
    assert rec.kwargs == {"z": "é"}
    assert rec.message()["task"] == "app.add"


def test_error_info_and_attempt_round_trip() -> None:
    err = ErrorInfo("T", "m", "tb")
    assert ErrorInfo.from_dict(err.to_dict()) == err
    assert ErrorInfo.from_dict({"type": "T", "message": "m"}) == ErrorInfo("T", "m", "")
    att = Attempt(2, None, None, 3.0, "LOST", err)
    assert Attempt.from_dict(att.to_dict()) == att
    bare = Attempt(1, "w", 1.0, 2.0, "FAILED")
    assert Attempt.from_dict(bare.to_dict()) == bare


# -- attempts() ----------------------------------------------------------------------


def test_attempts_of_a_task_never_started_is_empty() -> None:
    assert _record().attempts() == []


def test_attempts_shows_the_running_attempt() -> None:
    rec = _record(state=S.RUNNING, attempt=1, started_at=5.0, worker="w1")
    assert rec.attempts() == [Attempt(1, "w1", 5.0, None, "RUNNING", None)]


def test_attempts_of_a_success_has_no_error() -> None:
    rec = _record(
        state=S.SUCCESS,
        attempt=1,
        started_at=5.0,
        finished_at=6.0,
        worker="w1",
        error=ErrorInfo("Stale", "left over"),
    )
    assert rec.attempts() == [Attempt(1, "w1", 5.0, 6.0, "SUCCESS", None)]


@pytest.mark.parametrize("state", [S.FAILED, S.DEAD])
def test_attempts_of_a_failure_carries_the_error(state: TaskState) -> None:
    err = ErrorInfo("ValueError", "bad")
    rec = _record(state=state, attempt=1, started_at=5.0, finished_at=6.0, worker="w", error=err)
    assert rec.attempts() == [Attempt(1, "w", 5.0, 6.0, state.value, err)]


def test_attempts_appends_the_current_attempt_after_history() -> None:
    first = Attempt(1, "w1", 1.0, 2.0, "FAILED", ErrorInfo("E", "one"))
    rec = _record(state=S.RUNNING, attempt=2, started_at=3.0, worker="w2", history=(first,))
    assert rec.attempts() == [first, Attempt(2, "w2", 3.0, None, "RUNNING", None)]


def test_attempts_does_not_repeat_a_closed_attempt() -> None:
    # A task waiting to retry: its last attempt is already in history.
    first = Attempt(1, "w1", 1.0, 2.0, "FAILED", ErrorInfo("E", "one"))
    rec = _record(
        state=S.RETRY, attempt=1, started_at=1.0, finished_at=2.0, worker="w1", history=(first,)
    )
    assert rec.attempts() == [first]


def test_attempts_returns_a_new_list() -> None:
    first = Attempt(1, "w1", 1.0, 2.0, "FAILED")
    rec = _record(state=S.RETRY, attempt=1, started_at=1.0, history=(first,))
    rec.attempts().clear()
    assert rec.history == (first,)


# -- the compact record ----------------------------------------------------------------


def test_a_queued_record_stores_no_optional_part() -> None:
    rec = _record(enqueued_at=100.0)  # created_at == enqueued_at: not stored apart
    assert rec.last_run is None and rec.extras is None
    assert rec.attempt == 0 and rec.history == () and rec.created_at == 100.0
    rec.worker = None  # a default changes nothing
    rec.edits = ()
    assert rec.last_run is None and rec.extras is None
    apart = _record()  # created at 100, enqueued at 101
    assert apart.extras is not None and (apart.created_at, apart.enqueued_at) == (100.0, 101.0)


def test_every_field_reads_back_as_built() -> None:
    rec = _full_record()
    values = dict(zip(RECORD_FIELDS, rec.values(), strict=True))
    assert values["history"] == rec.history and values["created_at"] == 100.0
    assert all(getattr(rec, name) == value for name, value in values.items())
    assert TaskRecord(*rec.values()) == rec  # positionally too


def test_setting_a_field_makes_its_part() -> None:
    rec = _record()
    rec.attempt = 2
    rec.dead_reason = "why"
    assert rec.last_run is not None and rec.last_run.attempt == 2
    assert rec.extras is not None and rec.dead_reason == "why"
    assert rec != _record()


def test_copy_is_independent_of_the_original() -> None:
    rec = _full_record()
    dup = rec.copy()
    assert dup == rec and dup is not rec
    dup.attempt += 1
    dup.replayed_to = (*dup.replayed_to, "new3")
    assert rec.attempt == 3 and rec.replayed_to == ("new1", "new2")


def test_replace_changes_only_the_copy() -> None:
    rec = _record()
    other = rec.replace(eta=5.0, edits=({"args": [1]},), state=S.CANCELLED)
    assert (other.eta, other.edits, other.state) == (5.0, ({"args": [1]},), S.CANCELLED)
    assert (rec.eta, rec.edits, rec.state) == (None, (), S.PENDING)
    with pytest.raises(TypeError):
        rec.replace(nope=1)


def test_equality_ignores_how_a_default_is_stored() -> None:
    rec = _record()
    rec.attempt = 1
    rec.attempt = 0  # a LastRun of defaults now
    assert rec.last_run is not None
    assert rec == _record()


def test_unknown_field_is_refused() -> None:
    with pytest.raises(TypeError):
        _record(colour="red")


def test_pickle_and_deepcopy_keep_every_field() -> None:
    import copy
    import pickle

    rec = _full_record()
    assert pickle.loads(pickle.dumps(rec)) == rec
    deep = copy.deepcopy(rec)
    assert deep == rec
    deep.attempt += 1
    assert rec.attempt == 3
