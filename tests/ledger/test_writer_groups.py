"""How the writer forms groups: it takes a group only once a pipeline slot is free, so the jobs
that arrive while a commit runs all join the next group (not a first one taken alone while the
rest queue behind it); with `pipeline_depth = 2` the next group is judged while one commits."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from core_ledger.domain import Command
from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.store import MemoryStore
from core_ledger.store.base import Head, JournalRow, Rows
from core_ledger.writer import Result, WriterLimits
from tests.support.clock import FakeClock
from tests.support.journal_commands import cmd, traffic


def bet(i: int) -> Command:
    return cmd(
        "bet", f"gb{i}", id=f"gb{i}", player_id="p1", currency="EUR", game_id="slots", amount_minor=10, round_id="rg"
    )


def status(result: Result) -> int | str:
    return result[0] if isinstance(result, tuple) else repr(result)


class SlowCommitStore(MemoryStore):
    """Each commit takes `pause_s`; the number of journal rows of every commit, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.pause_s = 0.0
        self.group_sizes: list[int] = []
        self.committing = asyncio.Event()

    async def commit(self, journal: Sequence[JournalRow], rows: Rows, head: Head) -> None:
        self.committing.set()
        await asyncio.sleep(self.pause_s)
        self.group_sizes.append(len(journal))
        await super().commit(journal, rows, head)


async def groups_of_bets_arriving_during_a_commit(limits: WriterLimits) -> tuple[list[int], list[Result]]:
    """One bet commits slowly; five more arrive one by one while it does. The group sizes, and
    each bet's result."""
    store = SlowCommitStore()
    service = LedgerService(store, limits, clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry()))
    await service.start()
    try:
        for command in traffic()[:4]:
            await service.submit([command])
        store.pause_s, store.group_sizes = 0.3, []
        store.committing.clear()
        first = asyncio.create_task(service.submit([bet(0)]))
        await asyncio.wait_for(store.committing.wait(), 5)
        later = []
        for i in range(1, 6):
            later.append(asyncio.create_task(service.submit([bet(i)])))
            await asyncio.sleep(0.02)  # each its own request, arriving while the first commits
        results = await asyncio.wait_for(asyncio.gather(first, *later), 10)
    finally:
        await service.stop()
    return store.group_sizes, [result for [result] in results]


async def test_bets_arriving_during_a_commit_form_one_group() -> None:
    sizes, results = await groups_of_bets_arriving_during_a_commit(WriterLimits())
    assert [status(r) for r in results] == [201] * 6
    assert sizes == [1, 5]  # not [1, 1, 4]: the second group is taken once the first committed


async def test_a_second_pipeline_slot_judges_the_next_group_during_a_commit() -> None:
    sizes, results = await groups_of_bets_arriving_during_a_commit(WriterLimits(pipeline_depth=2))
    assert [status(r) for r in results] == [201] * 6
    assert sizes[0] == 1 and sum(sizes) == 6 and len(sizes) >= 3  # judged while the first committed
