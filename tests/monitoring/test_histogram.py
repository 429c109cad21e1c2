"""Tests for dtq_core.monitoring.histogram."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtq_core.errors import SerializationError
from dtq_core.monitoring.histogram import Histogram, WindowedHistogram

LO, HI = 1e-6, 1e3

DISTRIBUTIONS: dict[str, Callable[[random.Random], float]] = {
    "uniform": lambda r: r.uniform(LO, HI),
    "exponential": lambda r: r.expovariate(20.0),
    "lognormal": lambda r: r.lognormvariate(-4.0, 3.0),
    "loguniform": lambda r: 10 ** r.uniform(-6.0, 3.0),
}

PS = [0.0, 0.1, 1.0, 5.0, 10.0, 25.0, 33.3, 50.0, 66.7, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0]


def sample(dist: str, n: int, seed: int) -> list[float]:
    r = random.Random(seed)
    draw = DISTRIBUTIONS[dist]
    return [min(max(draw(r), LO), HI) for _ in range(n)]


def nearest_rank(ordered: list[float], p: float) -> float:
    """The exact nearest-rank percentile: the ceil(p/100 * N)-th smallest (1-based)."""
    if p == 0:
        return ordered[0]
    rank = max(1, math.ceil(p * len(ordered) / 100))
    return ordered[rank - 1]


def filled(values: list[float], precision: int = 2) -> Histogram:
    h = Histogram(precision)
    for v in values:
        h.record(v)
    return h


def assert_same_observations(a: Histogram, b: Histogram) -> None:
    assert a.buckets() == b.buckets()
    assert (a.count, a.min, a.max) == (b.count, b.min, b.max)
    assert a.sum == pytest.approx(b.sum, rel=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    dist=st.sampled_from(sorted(DISTRIBUTIONS)),
    n=st.integers(1, 2000),
    seed=st.integers(0, 2**32),
    precision=st.integers(1, 3),
    extra_p=st.floats(0.0, 100.0),
)
def test_percentiles_within_relative_error(
    dist: str, n: int, seed: int, precision: int, extra_p: float
) -> None:
    values = sample(dist, n, seed)
    ordered = sorted(values)
    h = filled(values, precision)
    assert h.relative_error <= 10.0**-precision
    ps = [*PS, extra_p]
    for p, got in zip(ps, h.percentiles(ps), strict=True):
        exact = nearest_rank(ordered, p)
        assert abs(got - exact) <= h.relative_error * exact * (1 + 1e-12), (p, got, exact)
        assert got == h.percentile(p)
    assert h.percentile(0) == ordered[0] == h.min
    assert h.percentile(100) == ordered[-1] == h.max
    assert h.count == n
    assert h.mean == pytest.approx(math.fsum(values) / n, rel=1e-9)


@given(st.floats(1e-300, 1e300), st.integers(1, 5))
def test_each_bucket_holds_its_value_within_the_bound(value: float, precision: int) -> None:
    h = Histogram(precision)
    h.record(value)
    [(lo, hi, count)] = h.buckets()
    assert lo <= value < hi
    assert count == 1
    assert (hi - lo) / (hi + lo) <= h.relative_error * (1 + 1e-12)


def test_precision_two_is_under_one_percent() -> None:
    assert Histogram(2).relative_error == pytest.approx(1 / 129)
    assert Histogram().precision == 2
    with pytest.raises(ValueError):
        Histogram(0)
    with pytest.raises(ValueError):
        Histogram(6)


def test_empty_histogram_answers_nan() -> None:
    h = Histogram()
    assert h.count == 0
    assert h.sum == 0.0
    assert all(math.isnan(x) for x in (h.mean, h.min, h.max, h.percentile(50)))
    assert h.buckets() == []
    assert h.coarse(10) == []


def test_zero_and_negative_values_share_the_zero_bucket() -> None:
    h = filled([0.0, -1.0, 0.5, 2.0])
    assert h.min == -1.0
    assert h.buckets()[0] == (-1.0, 0.0, 2)
    assert h.percentile(50) == 0.0
    assert h.percentile(0) == -1.0
    assert h.percentile(100) == 2.0
    with pytest.raises(ValueError):
        h.record(math.nan)
    with pytest.raises(OverflowError):
        h.record(math.inf)
    assert h.count == 4


def test_percentile_range_is_checked() -> None:
    h = filled([1.0])
    for bad in (-0.1, 100.1, math.nan):
        with pytest.raises(ValueError):
            h.percentile(bad)


def test_count_argument_equals_repeated_records() -> None:
    a = Histogram()
    a.record(0.25, count=7)
    b = filled([0.25] * 7)
    assert_same_observations(a, b)


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.lists(st.floats(-1.0, 1e3, allow_nan=False), max_size=50), max_size=5),
    st.integers(1, 3),
)
def test_merge_equals_recording_everything_into_one(
    parts: list[list[float]], precision: int
) -> None:
    hists = [filled(part, precision) for part in parts]
    everything = filled([v for part in parts for v in part], precision)
    assert_same_observations(Histogram.merged(*hists, precision=precision), everything)
    acc = Histogram(precision)
    for h in hists:
        assert acc.merge(h) is acc
    assert_same_observations(acc, everything)


def test_merge_leaves_sources_alone_and_checks_precision() -> None:
    a, b = filled([1.0, 2.0]), filled([3.0])
    merged = Histogram.merged(a, b)
    assert merged.count == 3
    assert (a.count, b.count) == (2, 1)
    assert Histogram.merged().count == 0
    with pytest.raises(ValueError):
        a.merge(Histogram(3))


def test_merge_into_itself_doubles() -> None:
    h = filled([1.0, 2.0])
    h.merge(h)
    assert h.count == 4
    assert [c for _, _, c in h.buckets()] == [2, 2]


def test_copy_is_independent_and_reset_forgets() -> None:
    h = filled([1.0, 2.0])
    c = h.copy()
    h.record(3.0)
    assert c.count == 2
    h.reset()
    assert h.count == 0
    assert h.buckets() == []
    h.record(5.0)
    assert h.min == h.max == 5.0


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-10.0, 1e6, allow_nan=False), max_size=100), st.integers(1, 5))
def test_to_dict_round_trips_through_json(values: list[float], precision: int) -> None:
    h = filled(values, precision)
    back = Histogram.from_dict(json.loads(json.dumps(h.to_dict(), allow_nan=False)))
    assert back.precision == precision
    assert back.buckets() == h.buckets()
    assert (back.count, back.sum) == (h.count, h.sum)
    assert back.percentiles(PS) == pytest.approx(h.percentiles(PS), nan_ok=True)


@pytest.mark.parametrize(
    "damage",
    [
        lambda d: d.update(version=99),
        lambda d: d.update(count=d["count"] + 1),
        lambda d: d.pop("buckets"),
        lambda d: d.update(buckets=[["x", 1]]),
        lambda d: d.update(buckets=[[1, 0]], count=0),
    ],
)
def test_from_dict_rejects_damage(damage: Callable[[dict[str, object]], object]) -> None:
    data = filled([0.1, 0.2]).to_dict()
    damage(data)
    with pytest.raises(SerializationError):
        Histogram.from_dict(data)


def test_coarse_keeps_counts_in_contiguous_log_bins() -> None:
    values = sample("loguniform", 5000, seed=7)
    h = filled([*values, 0.0])
    bins = h.coarse(20)
    assert len(bins) == 21
    assert bins[0] == (0.0, 0.0, 1)
    positive = bins[1:]
    assert sum(c for _, _, c in bins) == h.count
    assert positive[0][0] <= min(values)
    assert positive[-1][1] >= h.max
    for (_, upper, _), (lower, _, _) in itertools.pairwise(positive):
        assert upper == pytest.approx(lower)
    ratios = [hi / lo for lo, hi, _ in positive]
    assert max(ratios) == pytest.approx(min(ratios))
    with pytest.raises(ValueError):
        h.coarse(0)


# Slots of 4 s and times on a 1/64 s grid keep every comparison exact.
DYADIC = st.integers(0, 2**30).map(lambda k: k / 64)


@settings(max_examples=100, deadline=None)
@given(t=DYADIC, age=st.integers(0, 200 * 64).map(lambda k: k / 64))
def test_window_keeps_the_last_window_and_nothing_a_slot_older(t: float, age: float) -> None:
    w = WindowedHistogram(window_s=64, slots=16)
    w.record(0.5, now=t)
    got = w.snapshot(now=t + age).count
    if age < 64:
        assert got == 1
    elif age >= 64 + 4:
        assert got == 0
    short = w.snapshot(now=t + age, window_s=8).count
    if age < 8:
        assert short == 1
    elif age >= 8 + 4:
        assert short == 0


def test_windowed_one_and_five_minutes_on_fake_time() -> None:
    w = WindowedHistogram(window_s=300, slots=60)
    t0 = 1_700_000_000.0
    for i in range(300):
        w.record(1.0 if i < 240 else 2.0, now=t0 + i)
    now = t0 + 299.5
    assert w.snapshot(now).count == 300
    last_min = w.snapshot(now, window_s=60)
    # The last 60 s plus the elapsed part of the oldest 5 s slot: t0+235 .. t0+299.
    assert last_min.count == 65
    assert last_min.percentile(50) == 2.0
    assert w.snapshot(t0 + 299.5 + 400).count == 0
    with pytest.raises(ValueError):
        w.snapshot(now, window_s=301)
    with pytest.raises(ValueError):
        WindowedHistogram(window_s=0)


def test_windowed_reuses_slots_and_drops_too_old_values() -> None:
    w = WindowedHistogram(window_s=10, slots=5)
    w.record(1.0, now=100.0)
    # 12 s later is the same ring position (6 slots of 2 s): the old slot is cleared.
    w.record(2.0, now=112.0)
    snap = w.snapshot(112.0)
    assert (snap.count, snap.min) == (1, 2.0)
    # A value older than the ring would clobber a newer slot: it is dropped instead.
    w.record(3.0, now=100.0)
    assert w.snapshot(112.0).count == 1
    # A slightly late value still lands in its own (older) slot.
    w.record(4.0, now=110.5)
    assert w.snapshot(112.0).count == 2
