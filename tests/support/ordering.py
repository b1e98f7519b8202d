"""Orders of the collected tests other than the given one, for checking that no test depends on
another having run first (the `--test-order` option of tests/conftest.py)."""

from __future__ import annotations

import random
from typing import Protocol, TypeVar


class HasNodeId(Protocol):
    @property
    def nodeid(self) -> str: ...


Item = TypeVar("Item", bound=HasNodeId)


def shuffled_by_module(items: list[Item], rng: random.Random) -> list[Item]:
    """Directories, the modules in each and the tests in each module in a shuffled order; each directory's
    and each module's tests stay together, so package- and module-scoped fixtures are set up once."""
    tree: dict[str, dict[str, list[Item]]] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        tree.setdefault(module.rsplit("/", 1)[0], {}).setdefault(module, []).append(item)
    result: list[Item] = []
    for modules in rng.sample(list(tree.values()), len(tree)):
        for tests in rng.sample(list(modules.values()), len(modules)):
            result += rng.sample(tests, len(tests))
    return result
