"""Tests for dtq_core.reliability.bloom."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dtq_core.errors import ConfigError, SerializationError
from dtq_core.reliability.bloom import BloomFilter, RotatingBloom

KEYS = st.one_of(st.text(max_size=40), st.binary(max_size=40))


def test_sizing_follows_the_standard_formulas() -> None:
    bf = BloomFilter(capacity=20_000, error_rate=0.01)
    assert bf.num_bits == math.ceil(-20_000 * math.log(0.01) / math.log(2) ** 2)
    assert bf.num_hashes == 7
    assert (bf.capacity, bf.error_rate) == (20_000, 0.01)
    for capacity, rate in [(0, 0.01), (10, 0.0), (10, 1.0)]:
        with pytest.raises(ConfigError):
            BloomFilter(capacity, rate)


@settings(max_examples=60, deadline=None)
@given(st.lists(KEYS, max_size=300), st.integers(1, 200))
def test_no_false_negatives(keys: list[str | bytes], capacity: int) -> None:
    bf = BloomFilter(capacity, 0.05)
    for key in keys:
        bf.add(key)
    assert all(key in bf for key in keys)
    assert all(bf.add(key) for key in keys)


def test_add_reports_possible_presence_and_len_counts_new_keys() -> None:
    bf = BloomFilter(1000, 0.001)
    assert bf.add("a") is False
    assert bf.add("a") is True
    assert bf.add(b"b") is False
    assert "a" in bf
    assert "zzz" not in bf
    assert len(bf) == 2
    # str keys are their UTF-8 bytes.
    assert "é" not in bf
    bf.add("é")
    assert "é".encode() in bf


def test_false_positive_rate_at_capacity_is_near_the_configured_rate() -> None:
    rng = random.Random(20240601)
    bf = BloomFilter(capacity=20_000, error_rate=0.01)
    for _ in range(20_000):
        bf.add(rng.randbytes(16))
    trials = 50_000
    false_positives = sum(rng.randbytes(16) in bf for _ in range(trials))
    measured = false_positives / trials
    assert 0.01 / 1.5 <= measured <= 0.01 * 1.5
    assert bf.estimated_fp_rate == pytest.approx(0.01, rel=0.2)
    assert bf.fill_ratio == pytest.approx(0.5, abs=0.02)


def test_fill_ratio_is_tracked_incrementally() -> None:
    bf = BloomFilter(500, 0.01)
    for i in range(400):
        bf.add(f"key-{i}")
    bitset = bf.to_bytes()[-((bf.num_bits + 7) // 8) :]
    recount = int.from_bytes(bitset, "little").bit_count()
    assert bf.fill_ratio == recount / bf.num_bits
    assert bf.estimated_fp_rate == bf.fill_ratio**bf.num_hashes
    bf.clear()
    assert (len(bf), bf.fill_ratio, "key-1" in bf) == (0, 0.0, False)


@settings(max_examples=30, deadline=None)
@given(st.lists(KEYS, max_size=100), st.integers(1, 100), st.floats(1e-6, 0.5))
def test_to_bytes_round_trip(keys: list[str | bytes], capacity: int, rate: float) -> None:
    bf = BloomFilter(capacity, rate)
    for key in keys:
        bf.add(key)
    back = BloomFilter.from_bytes(bf.to_bytes())
    assert back.to_bytes() == bf.to_bytes()
    assert (back.num_bits, back.num_hashes, len(back)) == (bf.num_bits, bf.num_hashes, len(bf))
    assert (back.capacity, back.error_rate, back.fill_ratio) == (
        bf.capacity,
        bf.error_rate,
        bf.fill_ratio,
    )
    assert all(key in back for key in keys)


def test_from_bytes_rejects_damage() -> None:
    data = BloomFilter(100, 0.01).to_bytes()
    assert data[:4] == b"DTQB"
    bad_version = data[:4] + bytes([99]) + data[5:]
    for bad in (data[:10], data[:-1], data + b"\0", b"XXXX" + data[4:], bad_version):
        with pytest.raises(SerializationError):
            BloomFilter.from_bytes(bad)
    # 959 bits: the top bit of the last byte is past the end and must stay clear.
    assert BloomFilter(100, 0.01).num_bits % 8 != 0
    with pytest.raises(SerializationError):
        BloomFilter.from_bytes(data[:-1] + b"\x80")


# Periods that are powers of two and times on a 1/64 s grid keep the arithmetic exact.
PERIODS = st.sampled_from([0.5, 1.0, 4.0, 64.0])
TIMES = st.integers(0, 2**34).map(lambda k: k / 64)


@settings(max_examples=150, deadline=None)
@given(
    period=PERIODS,
    generations=st.integers(2, 5),
    t=TIMES,
    later=st.integers(0, 64 * 400).map(lambda k: k / 64),
)
def test_rotating_ttl_guarantee(period: float, generations: int, t: float, later: float) -> None:
    ttl = period * (generations - 1)
    rb = RotatingBloom(1000, 0.01, ttl_s=ttl, generations=generations)
    assert rb.period_s == period
    assert rb.add("job-1", t) is False
    assert rb.might_contain("job-1", t + ttl)
    assert not rb.might_contain("job-1", t + ttl + period)
    # The exact rule, at any later time; the gap keeps later generations empty.
    now = t + later
    expected = math.floor(now / period) - math.floor(t / period) < generations
    assert rb.might_contain("job-1", now) is expected


def test_rotating_expiry_on_a_fake_clock() -> None:
    rb = RotatingBloom(capacity=1000, error_rate=0.01, ttl_s=60.0, generations=3)
    assert rb.period_s == 30.0
    t0 = 30 * 56_666_666 + 10.0  # 10 s into a period
    rb.add("a", t0)
    rb.add("b", t0 + 45)
    assert rb.add("a", t0 + 50) is True  # refreshes "a"
    assert rb.might_contain("a", t0 + 60)
    assert rb.might_contain("a", t0 + 110)  # kept alive by the refresh at t0 + 50
    assert not rb.might_contain("a", t0 + 140)
    assert rb.might_contain("b", t0 + 105)
    assert not rb.might_contain("b", t0 + 140)
    assert rb.add("c", t0 + 1000) is False
    assert not rb.might_contain("a", t0 + 1000)
    assert not rb.might_contain("b", t0 + 1000)


def test_rotating_never_forgets_early_when_time_goes_back() -> None:
    rb = RotatingBloom(100, 0.01, ttl_s=10.0)
    rb.add("new", 1000.0)
    rb.add("late", 985.0)  # treated as added at the latest time seen
    assert rb.might_contain("new", 990.0)
    assert rb.might_contain("late", 1009.0)


def test_rotating_aggregates_fill_and_false_positive_rate() -> None:
    rb = RotatingBloom(capacity=2000, error_rate=0.02, ttl_s=100.0, generations=2)
    assert rb.capacity == 2000
    assert (rb.fill_ratio(0.0), rb.estimated_fp_rate(0.0)) == (0.0, 0.0)
    for i in range(2000):
        rb.add(f"k{i}", 10.0)
    for i in range(2000):
        rb.add(f"m{i}", 110.0)
    # Two full generations, each sized for error_rate / 2: about error_rate together.
    assert rb.fill_ratio(110.0) == pytest.approx(0.5, abs=0.03)
    assert rb.estimated_fp_rate(110.0) == pytest.approx(0.02, rel=0.25)
    rng = random.Random(7)
    trials = 20_000
    fp = sum(rb.might_contain(rng.randbytes(12), 110.0) for _ in range(trials)) / trials
    assert fp <= 0.02 * 1.5
    # A period later the first generation is gone.
    assert rb.fill_ratio(250.0) == pytest.approx(0.25, abs=0.03)
    assert rb.estimated_fp_rate(250.0) < 0.015
    rb.clear()
    assert rb.fill_ratio(110.0) == 0.0
    assert not rb.might_contain("m1", 110.0)


def test_rotating_arguments_are_checked() -> None:
    with pytest.raises(ConfigError):
        RotatingBloom(10, 0.01, ttl_s=0.0)
    with pytest.raises(ConfigError):
        RotatingBloom(10, 0.01, ttl_s=10.0, generations=1)
    with pytest.raises(ConfigError):
        RotatingBloom(10, 1.5, ttl_s=10.0)
