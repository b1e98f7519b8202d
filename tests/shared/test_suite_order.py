"""`--test-order` (tests/conftest.py): the reordering keeps what scoped fixtures need together and is
the same for the same seed, so a failing order can be replayed."""

from __future__ import annotations

import random
from dataclasses import dataclass

from tests.support.ordering import shuffled_by_module


@dataclass(frozen=True)
class Item:
    nodeid: str


ITEMS = [Item(f"tests/{d}/test_{m}.py::test_{t}") for d in ("a", "b", "c") for m in range(4) for t in range(5)]


def runs(ids: list[str]) -> list[str]:
    """`ids` with repeats in a row collapsed: each contiguous group appears once."""
    return [k for i, k in enumerate(ids) if i == 0 or ids[i - 1] != k]


def test_a_shuffle_is_a_permutation_keeping_each_directory_and_module_together() -> None:
    order = [i.nodeid for i in shuffled_by_module(ITEMS, random.Random(3))]
    assert sorted(order) == sorted(i.nodeid for i in ITEMS)
    modules = [n.split("::")[0] for n in order]
    dirs = [n.rsplit("/", 1)[0] for n in modules]
    assert len(runs(modules)) == 12 and len(runs(dirs)) == 3
    assert order != [i.nodeid for i in ITEMS]


def test_the_same_seed_gives_the_same_order_and_another_seed_another() -> None:
    def order(seed: int) -> list[Item]:
        return shuffled_by_module(ITEMS, random.Random(seed))

    assert order(7) == order(7)
    assert order(7) != order(8)
