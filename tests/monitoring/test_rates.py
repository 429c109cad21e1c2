"""Tests for dtq_core.monitoring.rates."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtq_core.monitoring.rates import RATE_WINDOWS, RollingCounter

T0 = 1_700_000_000.0


def test_rates_use_complete_seconds() -> None:
    c = RollingCounter()
    c.add(5, T0 + 0.2)
    c.add(3, T0 + 0.9)
    c.add(2, T0 + 1.5)
    assert c.rate(1, T0 + 1.7) == 8.0
    assert c.rate(1, T0 + 2.0) == 2.0
    assert c.rate(10, T0 + 2.0) == 1.0
    assert c.series(T0 + 2.0, 3) == [0, 8, 2]
    assert c.series(T0 + 1.7, 3, include_current=True) == [0, 8, 2]
    assert c.total == 10


def test_rates_over_gaps() -> None:
    c = RollingCounter()
    for second in (0, 3, 9, 30, 59):
        c.add(6, T0 + second + 0.5)
    now = T0 + 60.0
    assert c.rate(1, now) == 6.0
    assert c.rate(10, now) == pytest.approx(6 / 10)
    assert c.rate(60, now) == pytest.approx(30 / 60)
    assert c.series(now, 60).count(6) == 5
    assert sum(c.series(now, 60)) == 30
    # Ten quiet seconds later the short windows are empty; the 60 s one lost seconds 0..9.
    assert c.rate(1, now + 10) == c.rate(10, now + 10) == 0.0
    assert c.rate(60, now + 10) == pytest.approx(12 / 60)


def test_ring_wraps_around_without_resurrecting_old_seconds() -> None:
    c = RollingCounter(horizon_s=10)  # 11 cells
    c.add(4, T0)
    c.add(1, T0 + 11)  # same cell as T0: the old count is replaced
    assert c.series(T0 + 12, 10) == [0] * 9 + [1]
    assert c.rate(10, T0 + 100) == 0.0
    assert c.series(T0 + 100) == [0] * 10
    assert c.total == 5


def test_events_older_than_the_ring_only_count_in_total() -> None:
    c = RollingCounter(horizon_s=10)
    c.add(1, T0 + 20)
    c.add(7, T0 + 9)  # its cell holds T0 + 20 now
    assert sum(c.series(T0 + 21, 10, include_current=True)) == 1
    assert c.total == 8
    c.add(2, T0 + 19.5)  # late but within the ring: counted
    assert c.series(T0 + 21, 2) == [2, 1]


def test_arguments_are_checked() -> None:
    c = RollingCounter(horizon_s=60)
    assert max(RATE_WINDOWS) <= c.horizon_s
    for bad in (0, 61):
        with pytest.raises(ValueError):
            c.rate(bad, T0)
        with pytest.raises(ValueError):
            c.series(T0, bad)
    with pytest.raises(ValueError):
        c.add(-1, T0)
    with pytest.raises(ValueError):
        RollingCounter(horizon_s=0)


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(st.tuples(st.integers(0, 5), st.floats(0.0, 300.0)), max_size=80),
    later=st.floats(0.0, 100.0),
    horizon=st.integers(1, 70),
    include_current=st.booleans(),
)
def test_matches_a_brute_force_count_in_any_order(
    events: list[tuple[int, float]], later: float, horizon: int, include_current: bool
) -> None:
    c = RollingCounter(horizon_s=horizon)
    for n, t in events:
        c.add(n, T0 + t)
    now = T0 + max((t for _, t in events), default=0.0) + later
    end = math.floor(now) + include_current
    expected = [
        sum(n for n, t in events if math.floor(T0 + t) == s) for s in range(end - horizon, end)
    ]
    assert c.series(now, horizon, include_current=include_current) == expected
    if not include_current:
        assert c.rate(horizon, now) == pytest.approx(sum(expected) / horizon)
    assert c.total == sum(n for n, _ in events)
