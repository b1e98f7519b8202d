"""A group's commit stores the rows as that group left them, even when the store reads them only
after the next group was judged on top (pipelining: SQLite encodes the rows in its own thread, and
the writer judges the next group meanwhile). If the next group's commit then fails, what storage
holds still equals a rebuild from its journal."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from shared.errors import Unavailable

from core_ledger.journal_checks import rebuild_differences
from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.store import MemoryStore, StorageError
from core_ledger.store.base import Head, JournalRow, Rows
from core_ledger.writer import WriterLimits
from tests.support.clock import FakeClock
from tests.support.journal_commands import cmd, traffic


class LateReadingStore(MemoryStore):
    """Reads a commit's rows only after a pause (the next group is judged meanwhile), and fails
    every commit from the `fail_from`-th on, as a full disk would."""

    def __init__(self) -> None:
        super().__init__()
        self.pause_s = 0.0
        self.commits = 0
        self.fail_from: int | None = None

    async def commit(self, journal: Sequence[JournalRow], rows: Rows, head: Head) -> None:
        await asyncio.sleep(self.pause_s)
        if self.fail_from is not None and self.commits >= self.fail_from:
            raise StorageError("disk full")
        self.commits += 1
        await super().commit(journal, rows, head)


async def test_a_failed_commit_after_a_pipelined_one_leaves_storage_equal_to_its_journal() -> None:
    store = LateReadingStore()
    limits = WriterLimits(pipeline_depth=2)  # judged while the previous group commits
    service = LedgerService(store, limits, clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry()))
    await service.start()
    try:
        # A player with an active bonus, a jackpot on the game: a bet changes a round, the
        # jackpot's contributions by edge and the bonus's wagering, all rows kept in the overlay.
        for command in traffic()[:4]:
            await service.submit([command])
        store.pause_s, store.fail_from = 0.2, store.commits + 1  # the next commit lands, the one after fails
        bet = {"player_id": "p1", "currency": "EUR", "game_id": "slots", "round_id": "rx"}
        first = asyncio.create_task(service.submit([cmd("bet", "x1", id="x1", amount_minor=100, **bet)]))
        await asyncio.sleep(0.05)  # judged; its commit has not read its rows yet
        second = asyncio.create_task(service.submit([cmd("bet", "x2", id="x2", amount_minor=50, **bet)]))
        [committed], [failed] = await asyncio.wait_for(asyncio.gather(first, second), 5)
    finally:
        await service.stop()
    assert isinstance(committed, tuple) and committed[0] == 201, committed
    assert isinstance(failed, Unavailable) and failed.code == "storage_unavailable", failed
    assert (await store.head()).sequence == 5
    assert await rebuild_differences(store) == []
