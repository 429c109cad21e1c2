"""Deduplication: explicit and derived keys, the TTL window, counts, bloom false positives."""

from __future__ import annotations

from typing import Any

import pytest

from dtq_core import Broker, TaskState, task
from dtq_core.clock import FakeClock
from dtq_core.registry import Registry
from dtq_core.reliability.dedup import DedupHook, derive_key
from tests.conftest import BrokerFactory

SUCCESS, PENDING = TaskState.SUCCESS, TaskState.PENDING


def stored(broker: Broker) -> int:
    return sum(broker.backend.count_by_state().values())


def dedup_hook(broker: Broker) -> DedupHook:
    hook = broker.hook(DedupHook)
    assert hook is not None
    return hook


@pytest.fixture
def ran() -> list[Any]:
    return []


@pytest.fixture
def plain(registry: Registry, ran: list[Any]) -> Any:
    @task(name="plain", registry=registry)
    def plain(x: Any = None) -> Any:
        ran.append(x)
        return x

    return plain


@pytest.fixture
def auto(registry: Registry, ran: list[Any]) -> Any:
    @task(name="auto", registry=registry, dedup=True)
    def auto(*args: Any, **kwargs: Any) -> None:
        ran.append((args, kwargs))

    return auto


# -- derive_key ------------------------------------------------------------------------


def test_derive_key_depends_on_name_args_and_kwargs_only() -> None:
    key = derive_key("t", [1, "a"], {"x": 1, "y": 2})
    assert key.startswith("t:")
    assert key == derive_key("t", (1, "a"), {"y": 2, "x": 1})
    assert key != derive_key("u", [1, "a"], {"x": 1, "y": 2})
    assert key != derive_key("t", [1, "b"], {"x": 1, "y": 2})
    assert key != derive_key("t", [1, "a"], {"x": 1, "y": 3})
    assert key != derive_key("t", ["a", 1], {"x": 1, "y": 2})
    assert derive_key("t", [], None) == derive_key("t", [], {})


# -- explicit and derived keys ---------------------------------------------------------


def test_an_explicit_dedup_key_returns_the_original_result(
    inline: Broker, plain: Any, ran: list[Any]
) -> None:
    first = plain.apply_async((1,), dedup_key="order-42", broker=inline)
    again = plain.apply_async((2,), dedup_key="order-42", broker=inline)
    assert again == first
    assert again.id == first.id
    assert stored(inline) == 1
    other = plain.apply_async((3,), dedup_key="order-43", broker=inline)
    assert other != first
    inline.work()
    assert sorted(ran) == [1, 3]
    assert first.get(timeout=1) == 1
    assert first.record().dedup_key == "order-42"


def test_a_duplicate_after_the_original_finished_still_answers_with_it(
    inline: Broker, plain: Any, ran: list[Any]
) -> None:
    first = plain.apply_async(("a",), dedup_key="k", broker=inline)
    inline.work()
    assert first.state is SUCCESS
    again = plain.apply_async(("b",), dedup_key="k", broker=inline)
    assert again.id == first.id
    assert again.get(timeout=1) == "a"
    inline.work()
    assert ran == ["a"]


def test_without_dedup_identical_calls_are_separate_tasks(
    inline: Broker, plain: Any, ran: list[Any]
) -> None:
    a = plain.apply_async((1,), broker=inline)
    b = plain.apply_async((1,), broker=inline)
    assert a.id != b.id
    inline.work()
    assert ran == [1, 1]


def test_dedup_true_derives_the_key_from_the_arguments(
    inline: Broker, auto: Any, ran: list[Any]
) -> None:
    a = auto.apply_async((1, 2), {"x": 1, "y": 2}, broker=inline)
    same = auto.apply_async((1, 2), {"y": 2, "x": 1}, broker=inline)
    other_args = auto.apply_async((1, 3), {"x": 1, "y": 2}, broker=inline)
    other_kwargs = auto.apply_async((1, 2), {"x": 1}, broker=inline)
    assert same.id == a.id
    assert len({a.id, other_args.id, other_kwargs.id}) == 3
    assert a.record().dedup_key == derive_key("auto", [1, 2], {"x": 1, "y": 2})
    inline.work()
    assert len(ran) == 3


def test_an_explicit_key_wins_over_the_derived_one(
    inline: Broker, auto: Any, ran: list[Any]
) -> None:
    a = auto.apply_async((1,), dedup_key="mine", broker=inline)
    b = auto.apply_async((2,), dedup_key="mine", broker=inline)
    c = auto.apply_async((1,), broker=inline)  # derived key: not "mine"
    assert b.id == a.id
    assert c.id != a.id


# -- the window ------------------------------------------------------------------------


def test_the_ttl_expiry_lets_a_new_task_through(
    make_broker: BrokerFactory, clock: FakeClock, plain: Any, ran: list[Any]
) -> None:
    broker = make_broker(clock=clock, dedup_ttl=60.0)
    first = plain.apply_async((1,), dedup_key="k", broker=broker)
    clock.advance(59.0)
    assert plain.apply_async((2,), dedup_key="k", broker=broker).id == first.id
    clock.advance(2.0)
    fresh = plain.apply_async((3,), dedup_key="k", broker=broker)
    assert fresh.id != first.id
    assert plain.apply_async((4,), dedup_key="k", broker=broker).id == fresh.id
    broker.work()
    assert sorted(ran) == [1, 3]


def test_a_task_dedup_ttl_shorter_than_the_default(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock
) -> None:
    @task(name="short", registry=registry, dedup=True, dedup_ttl=10.0)
    def short(x: int) -> None:
        pass

    broker = make_broker(clock=clock, dedup_ttl=3600.0)
    first = short.apply_async((1,), broker=broker)
    clock.advance(9.0)
    assert short.apply_async((1,), broker=broker).id == first.id
    clock.advance(2.0)
    assert short.apply_async((1,), broker=broker).id != first.id


def test_a_task_dedup_ttl_longer_than_the_default_is_honoured(
    make_broker: BrokerFactory, registry: Registry, clock: FakeClock
) -> None:
    @task(name="long", registry=registry, dedup=True, dedup_ttl=600.0)
    def long(x: int) -> None:
        pass

    broker = make_broker(clock=clock, dedup_ttl=60.0)
    first = long.apply_async((1,), broker=broker)
    clock.advance(300.0)
    assert long.apply_async((1,), broker=broker).id == first.id


@pytest.mark.parametrize("how", ["restart on a durable store", "second producer"])
def test_the_window_holds_for_a_fresh_hook_on_the_same_store(
    make_broker: BrokerFactory, clock: FakeClock, plain: Any, tmp_path: Any, how: str
) -> None:
    if how == "second producer":
        first = make_broker(clock=clock)
        original = plain.apply_async((1,), dedup_key="order-1", broker=first)
        second = make_broker(clock=clock)
        second.backend = first.backend
    else:
        url = f"embedded://{tmp_path / 'store'}"
        first = make_broker(clock=clock, backend=url)
        original = plain.apply_async((1,), dedup_key="order-1", broker=first)
        first.stop(drain_timeout=0.0)
        second = make_broker(clock=clock, backend=url)
    clock.advance(10.0)
    assert plain.apply_async((1,), dedup_key="order-1", broker=second).id == original.id


# -- snapshot --------------------------------------------------------------------------


def test_snapshot_counts_keys_drops_and_fill(
    make_broker: BrokerFactory, clock: FakeClock, plain: Any
) -> None:
    broker = make_broker(clock=clock, dedup_capacity=1000, dedup_ttl=120.0)
    broker.open()
    empty = broker.control.snapshot().dedup
    assert empty is not None
    assert (empty.keys, empty.dropped, empty.fill_ratio) == (0, 0, 0.0)
    assert (empty.capacity, empty.ttl_s) == (1000, 120.0)
    for i in range(5):
        plain.apply_async((i,), dedup_key=f"k{i}", broker=broker)
    for i in range(3):
        plain.apply_async((i,), dedup_key=f"k{i}", broker=broker)
    plain.apply_async((9,), broker=broker)  # no key: not counted
    snap = broker.control.snapshot()
    assert snap.dedup is not None
    assert (snap.dedup.keys, snap.dedup.dropped) == (5, 3)
    assert 0.0 < snap.dedup.fill_ratio < 0.1
    assert 0.0 <= snap.dedup.est_fp_rate < 0.001
    assert snap.counters["deduped"] == 3
    assert snap.counters["enqueued"] == 6


# -- bloom false positives -------------------------------------------------------------


def test_a_bloom_false_positive_never_drops_a_new_task(
    inline: Broker, plain: Any, ran: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    inline.open()
    hook = dedup_hook(inline)
    assert hook.bloom is not None
    # The filter is slotted: patch its class for this test.
    monkeypatch.setattr(type(hook.bloom), "might_contain", lambda self, key, now: True)
    ids = [plain.apply_async((i,), dedup_key=f"new-{i}", broker=inline).id for i in range(20)]
    assert len(set(ids)) == 20
    # A real duplicate is still answered with its original.
    assert plain.apply_async((0,), dedup_key="new-0", broker=inline).id == ids[0]
    inline.work()
    assert sorted(ran) == list(range(20))
    assert dedup_hook(inline).dropped == 1


def test_a_bloom_false_positive_with_derived_keys(
    inline: Broker, auto: Any, ran: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    inline.open()
    hook = dedup_hook(inline)
    assert hook.bloom is not None
    # The filter is slotted: patch its class for this test.
    monkeypatch.setattr(type(hook.bloom), "might_contain", lambda self, key, now: True)
    ids = {auto.apply_async((i,), broker=inline).id for i in range(10)}
    assert len(ids) == 10
    inline.work()
    assert len(ran) == 10


def test_a_resent_dedup_write_is_not_a_duplicate_of_itself(
    inline: Broker, plain: Any, ran: list[Any]
) -> None:
    """The first set_if_absent was stored but its reply lost; the resend finds our id."""
    backend = inline.backend
    real = backend.set_if_absent

    def stored_then_lost(key: str, value: str, ttl_s: float, now: float) -> str | None:
        real(key, value, ttl_s, now)  # stored...
        return real(key, value, ttl_s, now)  # ...and the resend sees its own value

    backend.set_if_absent = stored_then_lost  # type: ignore[method-assign]
    r = plain.apply_async((5,), dedup_key="order-5", broker=inline)
    backend.set_if_absent = real  # type: ignore[method-assign]
    assert stored(inline) == 1 and r.record() is not None
    inline.work()
    assert r.get(timeout=1) == 5 and ran == [5]
    again = plain.apply_async((6,), dedup_key="order-5", broker=inline)
    assert again.id == r.id  # a real duplicate is still dropped
