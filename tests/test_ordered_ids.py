"""OrderedIds against a sorted list: adds, removes, chunks from a key, ranges, bulk build."""

from __future__ import annotations

import random
from bisect import bisect_left, bisect_right

import pytest

from dtq_core import ordered_ids
from dtq_core.ordered_ids import OrderedIds


@pytest.mark.parametrize("keyed", [False, True], ids=["by-id", "by-key"])
def test_matches_a_sorted_list_through_random_adds_and_removes(
    keyed: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ordered_ids, "LOAD", 8)  # many blocks, splits and empty blocks
    rnd = random.Random(7)
    when = {f"id{i:05d}": float(rnd.randrange(50)) for i in range(3000)}

    def key(i: str) -> tuple[float, str]:
        return (when[i], i)

    lst = OrderedIds(key if keyed else None)
    model: list[str] = []
    mk = key if keyed else (lambda i: i)
    pool = list(when)
    rnd.shuffle(pool)
    for step, tid in enumerate(pool):
        lst.add(tid)
        model.insert(bisect_left([mk(m) for m in model], mk(tid)), tid)
        if step % 3 == 2:
            gone = rnd.choice(model)
            lst.remove(gone)
            model.remove(gone)
        if step % 250 == 0:
            assert list(lst) == model and len(lst) == len(model)
            keys = [mk(m) for m in model]
            pivot = mk(rnd.choice(model))
            asc = [i for c in lst.chunks(pivot) for i in c]
            assert asc == model[bisect_right(keys, pivot) :]
            desc = [i for c in lst.chunks(pivot, descending=True) for i in c]
            assert desc == model[: bisect_left(keys, pivot)][::-1]
            assert [i for c in lst.chunks(None, True) for i in c] == model[::-1]
    assert list(lst) == model
    with pytest.raises(KeyError):
        lst.remove("not-there")
    built = OrderedIds.from_sorted(list(model), key if keyed else None)
    assert list(built) == model


def test_between_reads_a_prefix_range(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ordered_ids, "LOAD", 4)
    lst = OrderedIds()
    for i in range(200):
        lst.add(f"{i:03d}")
    assert lst.between("01", "01\U0010ffff") == [f"{i:03d}" for i in range(10, 20)]
    for lo, hi in (("01", "01\U0010ffff"), ("0", "1"), ("005", "177"), ("2", "3"), ("", "~")):
        assert lst.count_between(lo, hi) == len(lst.between(lo, hi)), (lo, hi)
    assert lst.between("2", "2\U0010ffff") == []
    assert lst.between("", "\U0010ffff") == list(lst)
