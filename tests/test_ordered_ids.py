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


def test_the_id_view_of_a_list_in_id_order_reads_as_a_list_by_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ordered_ids, "LOAD", 8)  # many blocks, splits and empty blocks
    rnd = random.Random(11)
    when: dict[str, float] = {}

    def key(i: str) -> tuple[float, str]:
        return (when[i], i)

    keyed = OrderedIds(key)
    view = keyed.by_id()
    plain = OrderedIds()
    t = 0.0
    for n in range(600):
        tid = f"id{n:05d}"
        t += rnd.choice((0.0, 0.5))  # ties in time: the id breaks them, as in the key
        when[tid] = t
        keyed.add(tid)
        plain.add(tid)
        if n % 4 == 3:
            gone = rnd.choice(list(plain))
            keyed.remove(gone)
            plain.remove(gone)
        if n % 50 == 49:
            ids = list(plain)
            assert list(view) == ids and len(view) == len(plain) and keyed.last() == ids[-1]
            pivot = rnd.choice(ids)
            for desc in (False, True):
                assert list(view.chunks(pivot, desc)) == list(plain.chunks(pivot, desc))
                assert list(view.chunks(None, desc)) == list(plain.chunks(None, desc))
            lo, hi = sorted(rnd.sample(ids, 2))
            assert view.between(lo, hi) == plain.between(lo, hi)
            assert view.count_between(lo, hi) == plain.count_between(lo, hi)
            assert view.between("id", "id\U0010ffff") == ids
    with pytest.raises(TypeError):
        view.add("id99999")
    assert OrderedIds().last() is None


def test_append_past_the_end_matches_add(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ordered_ids, "LOAD", 4)  # several block splits
    when = {f"id{i:03d}": float(i // 3) for i in range(50)}

    def key(i: str) -> tuple[float, str]:
        return (when[i], i)

    added, appended = OrderedIds(key), OrderedIds(key)
    for tid in when:
        added.add(tid)
        appended.append(tid, key(tid))
    assert list(appended) == list(added) == list(when)
    assert appended._maxes == added._maxes and len(appended) == len(added)
    assert [i for c in appended.chunks(key("id020")) for i in c] == list(when)[21:]
