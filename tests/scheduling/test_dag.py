"""DAG workflows: validation, files, execution, failure, retry, idempotency, snapshot."""

from __future__ import annotations

import json
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dtq_core import Broker, BrokerConfig, ConfigError, TaskState, task
from dtq_core.client import Task
from dtq_core.clock import FakeClock
from dtq_core.errors import BackendError, DAGError
from dtq_core.registry import Registry
from dtq_core.scheduling.dag import (
    Workflow,
    get_workflow,
    load_workflow,
    retry_workflow,
    run_workflow,
    wait_workflow,
)
from dtq_core.scheduling.dag_store import (
    ACTIVE_PREFIX,
    KEY_PREFIX,
    DagHook,
    dag_hook,
    new_run_id,
    parse_task_id,
)
from dtq_core.snapshot import WorkflowSnapshot
from tests.conftest import BrokerFactory


def states(snap: WorkflowSnapshot) -> dict[str, str]:
    return {n.id: n.state for n in snap.nodes}


def run_inline(broker: Broker, wf: Workflow) -> WorkflowSnapshot:
    """Start ``wf`` and run every task in this thread; return the finished run."""
    run_id = run_workflow(broker, wf)
    broker.work()
    snap = get_workflow(broker, run_id)
    assert snap is not None
    return snap


def _sentinel() -> None:
    return None


@pytest.fixture
def registry() -> Registry:
    """A fresh registry that is never empty.

    ``@task`` and ``Broker`` take ``registry or default_registry``, and an empty
    ``Registry`` is falsy (it has ``__len__``): a fresh one would silently fall back to the
    global registry, and names would collide across tests.
    """
    reg = Registry()
    Task(_sentinel, "dag_test_sentinel", {}, reg)
    return reg


@pytest.fixture
def calls() -> Counter[str]:
    return Counter()


@pytest.fixture
def tasks(registry: Registry, calls: Counter[str]) -> dict[str, Any]:
    """``const``, ``add_up`` (sums ``upstream``), ``boom`` (fails unless ``fixed``)."""
    fixed = threading.Event()

    @task(name="const", registry=registry)
    def const(value: Any) -> Any:
        calls[f"const:{value}"] += 1
        return value

    @task(name="add_up", registry=registry)
    def add_up(upstream: dict[str, int], extra: int = 0) -> int:
        calls["add_up"] += 1
        return sum(upstream.values()) + extra

    @task(name="boom", registry=registry, max_retries=0)
    def boom() -> str:
        calls["boom"] += 1
        if not fixed.is_set():
            raise RuntimeError("disk on fire")
        return "ok"

    return {"const": const, "add_up": add_up, "boom": boom, "fixed": fixed}


# -- validation ------------------------------------------------------------------------


def test_a_cycle_is_named_in_dependency_order() -> None:
    wf = Workflow("loop")
    wf.node("a", "t", after="c")
    wf.node("b", "t", after="a")
    wf.node("c", "t", after="b")
    wf.node("d", "t", after="a")
    with pytest.raises(DAGError, match="cycle a → b → c → a"):
        wf.validate()


def test_a_cycle_off_the_first_node_and_a_self_loop_are_named() -> None:
    wf = Workflow("w")
    wf.node("root", "t")
    wf.node("x", "t", after=["root", "y"])
    wf.node("y", "t", after="x")
    with pytest.raises(DAGError, match="cycle x → y → x"):
        wf.validate()
    solo = Workflow("s")
    solo.node("a", "t", after="a")
    with pytest.raises(DAGError, match="cycle a → a"):
        solo.validate()


def test_missing_parents_duplicates_and_unknown_tasks_are_all_named() -> None:
    wf = Workflow("etl")
    wf.node("extract", "extract")
    wf.node("transform", "transfrom", after="extract")
    wf.node("load", "load", after=["transfrom", "nowhere"])
    wf.node("extract", "extract")
    with pytest.raises(DAGError) as info:
        wf.validate({"extract", "transform", "load"})
    msg = str(info.value)
    assert msg.startswith("workflow 'etl': ")
    assert "duplicate node id 'extract'" in msg
    assert (
        "node 'load' runs after 'transfrom', which is not a node (did you mean 'transform'?)" in msg
    )
    assert "runs after 'nowhere', which is not a node" in msg
    assert "node 'transform': unknown task 'transfrom' (did you mean 'transform'?)" in msg
    assert "\n" not in msg


def test_empty_workflow_and_upstream_kwarg_clash_are_rejected() -> None:
    with pytest.raises(DAGError, match="has no nodes"):
        Workflow("empty").validate()
    wf = Workflow("w")
    wf.node("a", "t")
    wf.node("b", "t", after="a", kwargs={"upstream": 1}, pass_results=True)
    with pytest.raises(DAGError, match="cannot set 'upstream'"):
        wf.validate()


def test_levels_are_longest_paths() -> None:
    wf = Workflow("w")
    wf.node("d", "t", after=["b", "c"])
    wf.node("a", "t")
    wf.node("b", "t", after="a")
    wf.node("c", "t", after=["a", "b"])
    wf.node("e", "t")
    assert wf.levels() == {"d": 3, "a": 0, "b": 1, "c": 2, "e": 0}


# -- the dict form and files -------------------------------------------------------------

SPEC: dict[str, Any] = {
    "name": "etl",
    "nodes": [
        {"id": "extract", "task": "const", "args": [2], "kwargs": {}, "after": []},
        {"id": "double", "task": "const", "args": [3], "kwargs": {}, "after": ["extract"]},
        {
            "id": "load",
            "task": "add_up",
            "args": [],
            "kwargs": {"extra": 10},
            "after": ["extract", "double"],
            "pass_results": True,
            "queue": "default",
            "priority": 5,
        },
    ],
}


def test_dict_form_round_trips_and_accepts_a_single_parent_string() -> None:
    wf = Workflow.from_dict(SPEC)
    assert wf.to_dict() == SPEC
    short = Workflow.from_dict(
        {"nodes": [{"id": "a", "task": "t"}, {"id": "b", "task": "t", "after": "a"}]}
    )
    assert short.name == "workflow"
    assert short.nodes[1].after == ("a",)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "must be a table/object, not list"),
        ({"name": "w"}, "'nodes' must be a list"),
        ({"nodes": [], "extra": 1}, "unknown workflow field 'extra'"),
        ({"nodes": ["a"]}, r"nodes\[0\]: a node must be a table/object"),
        ({"nodes": [{"task": "t"}]}, r"nodes\[0\]: 'id' must be a non-empty string"),
        (
            {"nodes": [{"id": "a", "task": "t", "afer": []}]},
            "unknown field 'afer'; did you mean 'after'",
        ),
        (
            {"nodes": [{"id": "a", "task": "t", "after": [1]}]},
            r"nodes\[0\] \('a'\): 'after' must be",
        ),
        ({"nodes": [{"id": "a", "task": "t", "priority": True}]}, "'priority' must be an integer"),
        ({"nodes": [{"id": "a", "task": "t", "kwargs": []}]}, "'kwargs' must be a table"),
    ],
)
def test_wrong_shapes_are_named(data: Any, message: str) -> None:
    with pytest.raises(DAGError, match=message):
        Workflow.from_dict(data)


def test_load_json_and_toml(tmp_path: Path) -> None:
    (tmp_path / "etl.json").write_text(json.dumps(SPEC))
    assert load_workflow(tmp_path / "etl.json").to_dict() == SPEC
    toml = tmp_path / "nightly.toml"
    toml.write_text(
        '[[nodes]]\nid = "extract"\ntask = "const"\nargs = [2]\n\n'
        '[[nodes]]\nid = "load"\ntask = "add_up"\nafter = ["extract"]\npass_results = true\n'
        "kwargs = { extra = 1 }\n"
    )
    wf = load_workflow(toml)
    assert wf.name == "nightly"
    assert [n.id for n in wf] == ["extract", "load"]
    assert wf.nodes[1].kwargs == {"extra": 1}
    assert wf.nodes[1].pass_results


def test_file_errors_are_one_clear_line(tmp_path: Path) -> None:
    with pytest.raises(DAGError, match=r"nope\.json: no such file"):
        load_workflow(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"nodes": [\n  {"id": "a",}\n]}')
    # The position and the parser's own words: Python 3.13 reworded this message.
    with pytest.raises(
        DAGError,
        match=r"bad\.json:2:1[34]: invalid JSON: (Expecting property name|Illegal trailing comma)",
    ):
        load_workflow(bad)
    badt = tmp_path / "bad.toml"
    badt.write_text('[[nodes]]\nid = "a"\ntask = \n')
    with pytest.raises(DAGError, match=r"bad\.toml: invalid TOML: .*line 3"):
        load_workflow(badt)
    shape = tmp_path / "shape.toml"
    shape.write_text('nodes = "a"\n')
    with pytest.raises(DAGError, match=r"shape\.toml: workflow 'shape': 'nodes' must be a list"):
        load_workflow(shape)
    with pytest.raises(DAGError, match=r"unsupported file type '\.yaml'"):
        load_workflow(tmp_path / "w.yaml")


# -- execution -----------------------------------------------------------------------------


def test_diamond_runs_in_order_and_results_feed_children(
    make_broker: BrokerFactory, tasks: dict[str, Any], calls: Counter[str]
) -> None:
    broker = make_broker()
    wf = Workflow("diamond")
    top = wf.node("top", tasks["const"], args=[1])
    left = wf.node("left", "const", args=[10], after=top)
    right = wf.node("right", "add_up", after=top, pass_results=True, kwargs={"extra": 100})
    wf.node("bottom", "add_up", after=[left, right], pass_results=True)
    snap = run_inline(broker, wf)
    assert snap.state == "success"
    assert set(states(snap).values()) == {"success"}
    bottom = next(n for n in snap.nodes if n.id == "bottom")
    assert bottom.task_id is not None
    assert broker.result(bottom.task_id).get(timeout=1) == 10 + (1 + 100)
    rec = broker.backend.get(bottom.task_id)
    assert rec is not None
    assert rec.kwargs == {"upstream": {"left": 10, "right": 101}}
    assert rec.workflow == f"{snap.id}/bottom"
    assert calls == Counter({"const:1": 1, "const:10": 1, "add_up": 2})


def test_fan_out_fan_in_on_a_thread_pool(make_broker: BrokerFactory, registry: Registry) -> None:
    running = 0
    peak = 0
    lock = threading.Lock()
    gate = threading.Barrier(4, timeout=5)

    @task(name="leaf", registry=registry)
    def leaf(i: int) -> int:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        gate.wait()  # all four leaves must be running at once
        with lock:
            running -= 1
        return i * i

    @task(name="begin", registry=registry)
    def begin() -> None:
        return None

    @task(name="total", registry=registry)
    def total(upstream: dict[str, int]) -> int:
        return sum(upstream.values())

    broker = make_broker(num_workers=4).start()
    wf = Workflow("fan")
    wf.node("start", "begin")
    leaves = [wf.node(f"leaf{i}", "leaf", args=[i], after="start") for i in range(1, 5)]
    wf.node("sum", "total", after=leaves, pass_results=True)
    snap = wait_workflow(broker, run_workflow(broker, wf), timeout=10)
    assert snap.state == "success"
    assert peak == 4
    last = next(n for n in snap.nodes if n.id == "sum")
    assert last.task_id is not None
    assert broker.result(last.task_id).get(timeout=1) == 1 + 4 + 9 + 16


def test_failure_marks_descendants_and_the_run_but_not_other_branches(
    make_broker: BrokerFactory, tasks: dict[str, Any], calls: Counter[str]
) -> None:
    broker = make_broker()
    wf = Workflow("w")
    wf.node("a", "const", args=["a"])
    wf.node("bad", "boom", after="a")
    wf.node("child", "const", args=["child"], after="bad")
    wf.node("grandchild", "add_up", after=["child", "a"], pass_results=True)
    wf.node("side", "const", args=["side"], after="a")
    wf.node("side2", "const", args=["side2"], after="side")
    snap = run_inline(broker, wf)
    assert snap.state == "failed"
    assert snap.finished_at is not None
    assert states(snap) == {
        "a": "success",
        "bad": "failed",
        "child": "upstream_failed",
        "grandchild": "upstream_failed",
        "side": "success",
        "side2": "success",
    }
    nodes = {n.id: n for n in snap.nodes}
    assert nodes["bad"].error is not None
    assert "RuntimeError: disk on fire" in nodes["bad"].error
    assert nodes["grandchild"].error == "upstream 'bad' failed"
    assert nodes["child"].task_id is None
    assert calls["const:child"] == 0


def test_retry_reruns_only_failed_nodes(
    make_broker: BrokerFactory, tasks: dict[str, Any], calls: Counter[str]
) -> None:
    broker = make_broker()
    wf = Workflow("w")
    wf.node("a", "const", args=[1])
    wf.node("bad", "boom", after="a")
    wf.node(
        "after_bad", "add_up", after=["a", "bad"], pass_results=False, kwargs={"upstream": {"x": 1}}
    )
    wf.node("side", "const", args=[2], after="a")
    first = run_inline(broker, wf)
    assert first.state == "failed"
    old_task = next(n.task_id for n in first.nodes if n.id == "bad")
    with pytest.raises(DAGError, match="unknown workflow run"):
        retry_workflow(broker, "wf-nope")

    tasks["fixed"].set()
    assert retry_workflow(broker, first.id) == ["bad"]
    middle = get_workflow(broker, first.id)
    assert middle is not None
    assert middle.state == "running"
    assert states(middle)["after_bad"] == "waiting"
    broker.work()
    snap = wait_workflow(broker, first.id, timeout=5)
    assert snap.state == "success"
    assert calls == Counter({"const:1": 1, "const:2": 1, "boom": 2, "add_up": 1})
    new_task = next(n.task_id for n in snap.nodes if n.id == "bad")
    assert new_task != old_task
    assert parse_task_id(new_task or "") == (first.id, 1, 1)
    with pytest.raises(DAGError, match="is success: only a failed run can be retried"):
        retry_workflow(broker, first.id)


def test_task_retries_keep_the_node_pending_then_succeed(
    make_broker: BrokerFactory, registry: Registry
) -> None:
    attempts: list[int] = []

    @task(name="flaky", registry=registry, max_retries=2, retry_backoff=0)
    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 2:
            raise OSError("blip")
        return "fine"

    broker = make_broker()
    wf = Workflow("w")
    wf.node("f", "flaky")
    run_id = run_workflow(broker, wf)
    broker.work(max_tasks=1)
    mid = get_workflow(broker, run_id)
    assert mid is not None
    assert states(mid) == {"f": "pending"}
    assert mid.nodes[0].error is not None
    assert mid.nodes[0].error.startswith("retrying after OSError: blip")
    broker.work()
    snap = get_workflow(broker, run_id)
    assert snap is not None
    assert snap.state == "success"
    assert snap.nodes[0].error is None


def test_a_cancelled_node_fails_the_run(make_broker: BrokerFactory, tasks: dict[str, Any]) -> None:
    broker = make_broker()
    wf = Workflow("w")
    wf.node("a", "const", args=[1])
    wf.node("b", "const", args=[2], after="a")
    run_id = run_workflow(broker, wf)
    snap = get_workflow(broker, run_id)
    assert snap is not None
    assert broker.cancel(snap.nodes[0].task_id or "")
    snap = get_workflow(broker, run_id)
    assert snap is not None
    assert (snap.state, states(snap)) == ("failed", {"a": "failed", "b": "upstream_failed"})
    assert snap.nodes[0].error == "cancelled"


def test_unknown_task_is_rejected_at_start_and_a_failed_send_fails_the_node(
    make_broker: BrokerFactory, tasks: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = make_broker()
    wf = Workflow("w")
    wf.node("a", "cnst")
    with pytest.raises(DAGError, match="unknown task 'cnst' \\(did you mean 'const'\\?\\)"):
        run_workflow(broker, wf)
    assert broker.backend.scan_keys(KEY_PREFIX, broker.clock.now()) == []

    wf = Workflow("w")
    wf.node("a", "const", args=[object()])
    with pytest.raises(DAGError, match="node 'a': args/kwargs is not JSON-serializable"):
        run_workflow(broker, wf)

    def broken_send(*args: Any, **kwargs: Any) -> Any:
        raise BackendError("connection reset")

    wf = Workflow("w")
    wf.node("a", "const", args=[1])
    wf.node("b", "const", args=[2], after="a")
    monkeypatch.setattr(broker, "send", broken_send)
    run_id = run_workflow(broker, wf)
    snap = get_workflow(broker, run_id)
    assert snap is not None
    assert (snap.state, states(snap)) == ("failed", {"a": "failed", "b": "upstream_failed"})
    assert snap.nodes[0].error == "not enqueued: BackendError: connection reset"


# -- concurrency and idempotency -------------------------------------------------------------


def test_two_hooks_seeing_every_event_enqueue_each_node_once(
    make_broker: BrokerFactory, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    @task(name="work", registry=registry)
    def work(i: int) -> int:
        return i

    broker = make_broker(num_workers=4)
    rival = DagHook()  # another process's hook, sharing the backend
    broker.start()
    rival.attach(broker)
    sent: Counter[str] = Counter()
    real_send = broker.send

    def counting_send(name: str, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("task_id"):
            sent[kwargs["task_id"]] += 1
        return real_send(name, *args, **kwargs)

    monkeypatch.setattr(broker, "send", counting_send)
    wf = Workflow("wide")
    roots = [wf.node(f"r{i}", "work", args=[i]) for i in range(6)]
    mids = [wf.node(f"m{i}", "work", args=[i], after=roots) for i in range(6)]
    wf.node("end", "work", args=[0], after=mids)
    run_id = run_workflow(broker, wf)
    snap = wait_workflow(broker, run_id, timeout=10)
    rival.detach(broker)
    assert snap.state == "success"
    assert len(sent) == 13
    assert set(sent.values()) == {1}


def test_an_event_seen_twice_changes_nothing(
    make_broker: BrokerFactory, tasks: dict[str, Any]
) -> None:
    broker = make_broker()
    wf = Workflow("w")
    wf.node("a", "const", args=[1])
    wf.node("b", "const", args=[2], after="a")
    run_id = run_workflow(broker, wf)
    broker.work(max_tasks=1)
    hook = dag_hook(broker)
    key = KEY_PREFIX + run_id
    before = broker.backend.get_key(key, broker.clock.now())
    a_task = json.loads(before or "{}")["nodes"][0]["task_id"]
    hook.observe(broker, a_task, TaskState.SUCCESS, broker.clock.now())
    hook.observe(broker, a_task, TaskState.RUNNING, broker.clock.now())
    assert broker.backend.get_key(key, broker.clock.now()) == before
    assert broker.work() == 1


def test_a_lost_cas_race_rereads_and_does_not_enqueue_twice(
    make_broker: BrokerFactory, tasks: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = make_broker()
    hook, rival = dag_hook(broker), DagHook()
    wf = Workflow("w")
    wf.node("a", "const", args=[1])
    wf.node("b", "const", args=[2], after="a")
    run_id = run_workflow(broker, wf)
    hook.detach(broker)  # events are delivered by hand below
    broker.work(max_tasks=1)
    a_task = f"{run_id}.0.0"
    sent: list[str] = []
    real_send, real_cas = broker.send, broker.backend.compare_and_set

    def counting_send(*args: Any, **kwargs: Any) -> Any:
        sent.append(kwargs["task_id"])
        return real_send(*args, **kwargs)

    raced: list[bool] = []

    def racing_cas(*args: Any) -> bool:
        if not raced:  # the rival process writes between our read and our CAS
            raced.append(True)
            rival.observe(broker, a_task, TaskState.SUCCESS, broker.clock.now())
        return real_cas(*args)

    monkeypatch.setattr(broker, "send", counting_send)
    monkeypatch.setattr(broker.backend, "compare_and_set", racing_cas)
    hook.observe(broker, a_task, TaskState.SUCCESS, broker.clock.now())
    assert sent == [f"{run_id}.1.0"]  # enqueued by the rival only
    hook.attach(broker)
    assert broker.work() == 1
    assert wait_workflow(broker, run_id, timeout=1).state == "success"


def test_a_task_kept_failed_without_dead_lettering_fails_its_node(
    make_broker: BrokerFactory, registry: Registry
) -> None:
    @task(name="fragile", registry=registry, max_retries=0, dead_letter=False)
    def fragile() -> None:
        raise ValueError("nope")

    broker = make_broker()
    wf = Workflow("w")
    wf.node("f", "fragile")
    snap = run_inline(broker, wf)
    assert snap.state == "failed"
    assert broker.backend.get_state(snap.nodes[0].task_id or "") is TaskState.FAILED
    assert snap.nodes[0].error == "ValueError: nope"


def test_reconcile_applies_missed_events_and_resends_lost_enqueues(
    make_broker: BrokerFactory,
    tasks: dict[str, Any],
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broker = make_broker(clock=clock)
    hook = dag_hook(broker)
    wf = Workflow("w")
    wf.node("a", "const", args=[1])
    wf.node("b", "const", args=[2], after="a")
    run_id = run_workflow(broker, wf)
    hook.detach(broker)  # this process misses a's events
    broker.work()
    snap = get_workflow(broker, run_id)
    assert snap is not None
    assert states(snap) == {"a": "pending", "b": "waiting"}
    # b is released, but the process "dies" before enqueueing it.
    monkeypatch.setattr(broker, "send", lambda *a, **k: None)
    assert hook.reconcile(broker) == 1
    monkeypatch.undo()
    snap = get_workflow(broker, run_id)
    assert snap is not None
    assert states(snap) == {"a": "success", "b": "pending"}
    assert hook.reconcile(broker) == 0  # too early to call b's enqueue lost
    released_at = clock.now()
    clock.advance(hook.resend_after_s)
    assert hook._resend(broker, run_id, 1, f"{run_id}.1.0", released_at - 1) == 0  # stale view
    assert hook.reconcile(broker) == 1
    assert hook._resend(broker, run_id, 1, f"{run_id}.1.0", released_at) == 0  # resent already
    assert hook.reconcile(broker) == 0
    hook.attach(broker)
    assert broker.backend.scan_keys(ACTIVE_PREFIX, clock.now()) == [ACTIVE_PREFIX + run_id]
    broker.work()
    assert wait_workflow(broker, run_id, timeout=1).state == "success"
    assert (
        broker.backend.scan_keys(ACTIVE_PREFIX, clock.now()) == []
    )  # finished runs are not scanned


# -- properties ------------------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> tuple[int, list[tuple[int, int]], list[int]]:
    n = draw(st.integers(1, 9))
    pairs = [(i, j) for j in range(n) for i in range(j)]
    edges = draw(st.lists(st.sampled_from(pairs), unique=True) if pairs else st.just([]))
    order = draw(st.permutations(range(n)))
    return n, edges, list(order)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(dag=dags())
def test_no_node_starts_before_its_parents_finished(
    registry: Registry, dag: tuple[int, list[tuple[int, int]], list[int]]
) -> None:
    n, edges, order = dag
    log: list[tuple[str, int]] = []
    lock = threading.Lock()
    name = f"step{len(registry)}"

    @task(name=name, registry=registry)
    def step(i: int) -> int:
        with lock:
            log.append(("start", i))
        with lock:
            log.append(("end", i))
        return i

    parents = {j: [i for i, jj in edges if jj == j] for j in range(n)}
    wf = Workflow("random")
    for j in order:  # declaration order is not the topological order
        wf.node(f"n{j}", name, args=[j], after=[f"n{i}" for i in parents[j]])
    with Broker(BrokerConfig(backend="memory://", num_workers=4, registry=registry)) as broker:
        snap = wait_workflow(broker, run_workflow(broker, wf), timeout=10)
    assert snap.state == "success"
    position = {entry: k for k, entry in enumerate(log)}
    assert len(position) == 2 * n
    for j in range(n):
        for i in parents[j]:
            assert position[("end", i)] < position[("start", j)]


# -- snapshot and console ---------------------------------------------------------------------


def test_snapshot_shows_levels_states_and_timings(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock
) -> None:
    @task(name="slow", registry=registry)
    def slow(seconds: float) -> None:
        clock.advance(seconds)

    broker = make_broker(clock=clock)
    wf = Workflow("timed")
    wf.node("a", "slow", args=[2])
    wf.node("b", "slow", args=[3], after="a")
    wf.node("c", "slow", args=[1], after=["a", "b"])
    t0 = clock.now()
    run_id = run_workflow(broker, wf)
    broker.work(max_tasks=1)
    live = broker.control.snapshot().workflows
    assert [w.id for w in live] == [run_id]
    assert states(live[0]) == {"a": "success", "b": "pending", "c": "waiting"}
    broker.work()
    (snap,) = dag_hook(broker).snapshot(broker)["workflows"]
    assert snap == broker.control.workflow(run_id)
    assert (snap.name, snap.state, snap.created_at, snap.finished_at) == (
        "timed",
        "success",
        t0,
        t0 + 6,
    )
    by_id = {n.id: n for n in snap.nodes}
    assert [(n.level, n.parents) for n in snap.nodes] == [(0, ()), (1, ("a",)), (2, ("a", "b"))]
    assert (by_id["a"].started_at, by_id["a"].finished_at) == (t0, t0 + 2)
    assert (by_id["b"].started_at, by_id["b"].finished_at) == (t0 + 2, t0 + 5)
    assert (by_id["c"].started_at, by_id["c"].finished_at) == (t0 + 5, t0 + 6)


def test_snapshot_lists_the_newest_runs_first_and_at_most_fifty(
    make_broker: BrokerFactory, tasks: dict[str, Any], clock: FakeClock
) -> None:
    broker = make_broker(clock=clock)
    wf = Workflow("w")
    wf.node("a", "const", args=[1])
    ids = []
    for _ in range(53):
        ids.append(run_workflow(broker, wf))
        clock.advance(0.001)
    runs = dag_hook(broker).snapshot(broker)["workflows"]
    assert [r.id for r in runs] == ids[::-1][:50]
    assert ids == sorted(ids)


def test_console_runs_and_retries_from_the_dict_form(
    make_broker: BrokerFactory, tasks: dict[str, Any]
) -> None:
    broker = make_broker()
    console = broker.control
    run_id = console.run_workflow(
        {
            "name": "c",
            "nodes": [
                {"id": "x", "task": "boom"},
                {"id": "y", "task": "const", "args": [1], "after": ["x"]},
            ],
        }
    )
    broker.work()
    snap = console.workflow(run_id)
    assert snap is not None
    assert snap.state == "failed"
    tasks["fixed"].set()
    assert console.retry_workflow(run_id) == ["x"]
    broker.work()
    snap = console.workflow(run_id)
    assert snap is not None
    assert snap.state == "success"
    assert console.workflow("wf-unknown") is None


def test_ids_and_a_broker_without_the_hook() -> None:
    assert parse_task_id("wf0123.4.5") == ("wf0123", 4, 5)
    for other in ("abc.1.2", "wf1.x.2", "wf1.2", "wf1.2.3.4x", "wf1.\u0661.2"):
        assert parse_task_id(other) is None
    assert new_run_id(1.0) < new_run_id(2.0)
    broker = Broker(BrokerConfig(backend="memory://", num_workers=0, hooks=[], registry=Registry()))
    wf = Workflow("w")
    wf.node("a", "t")
    with pytest.raises(ConfigError, match="no DagHook"):
        run_workflow(broker, wf)


def test_runs_on_the_embedded_backend(registry: Registry, tmp_path: Path) -> None:
    @task(name="num", registry=registry)
    def num(i: int) -> int:
        return i

    @task(name="total", registry=registry)
    def total(upstream: dict[str, int]) -> int:
        return sum(upstream.values())

    cfg = BrokerConfig(backend=f"embedded://{tmp_path / 'data'}", num_workers=2, registry=registry)
    with Broker(cfg) as broker:
        wf = Workflow("w")
        parts = [wf.node(f"n{i}", "num", args=[i]) for i in range(4)]
        wf.node("sum", "total", after=parts, pass_results=True)
        snap = wait_workflow(broker, run_workflow(broker, wf), timeout=10)
        assert snap.state == "success"
        last = snap.nodes[-1].task_id
        assert last is not None
        assert broker.result(last).get(timeout=1) == 6
