"""A duplicate of a committed id replays, even while a read is in flight on the SQLite store.

Under the chaos run the writer halted on an honest duplicate ("journal entry N of an id is
missing"): once a group commits, the writer drops its cached entries and loads them back from the
store when a retry needs them. Those loads shared the SQLite connection of the API reads, whose
statements span several thread hops (execute, fetch, close); a load that ran between them joined
that read's open snapshot, taken before the commit, and found no entry N. Reads now run whole in
one unit of work; these tests still hold a statement open on the readers' connection (as a read
spanning several units would), so loads stay safe even if one ever does.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from prometheus_client import CollectorRegistry

from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.store import SqliteStore
from core_ledger.writer import WriterLimits
from tests.support.clock import FakeClock
from tests.support.journal_commands import cmd, traffic

JOURNAL_SQL = "SELECT sequence FROM journal ORDER BY sequence"


async def open_read(store: SqliteStore) -> sqlite3.Cursor:
    """A read in flight on the readers' connection: its statement has stepped, so its snapshot stays open."""
    return await store._r.run(lambda db: db.execute(JOURNAL_SQL))


async def next_row(store: SqliteStore, reading: sqlite3.Cursor) -> tuple[int]:
    return await store._r.run(lambda _: reading.fetchone())


async def close_read(store: SqliteStore, reading: sqlite3.Cursor) -> None:
    await store._r.run(lambda _: reading.close())


BET = {"player_id": "p1", "currency": "EUR", "game_id": "slots", "round_id": "r9", "amount_minor": 10}


async def test_a_duplicate_replays_while_a_read_that_began_before_its_commit_is_open(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "ledger.db")
    service = LedgerService(store, WriterLimits(), clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry()))
    await service.start()
    try:
        await service.submit(traffic()[:3])  # a player with a deposit: sequences 1..3
        # An API read in flight (as GET /v1/journal between its execute and its fetch): its
        # statement has stepped, so its snapshot (head 3) stays open on the readers' connection.
        reading = await open_read(store)
        try:
            [first] = await service.submit([cmd("bet", "b1", via="eu", id="b1", **BET)])
            assert first[0] == 201 and first[1]["transaction"]["sequence"] == 4, first
            # The same bet through another edge, judged after the commit: a replay from storage.
            [again] = await service.submit([cmd("bet", "b1", via="us", id="b1", **BET)])
            assert service.halted is None, service.halted
            assert again[0] == 200 and again[1]["replayed"] is True, again
            assert again[1]["transaction"]["sequence"] == 4
            assert (await next_row(store, reading))[0] == 1  # the read itself went on, unharmed
        finally:
            await close_read(store, reading)
        [later] = await service.submit([cmd("bet", "b1", via="apac", id="b1", **BET)])
        assert later[0] == 200 and later[1]["transaction"]["sequence"] == 4
        assert service.head.sequence == 4  # replays journal nothing
    finally:
        await service.stop()


async def test_rows_reloaded_while_a_read_is_open_are_the_committed_ones(tmp_path: Path) -> None:
    """The same stale snapshot once gave derived rows too: with the overlay restarting before every
    group (as after a failed commit, or past `cache_rows_max`), a bet was judged against the
    balance from before the previous bet, and stored a balance 100 too high."""
    store = SqliteStore(tmp_path / "ledger.db")
    service = LedgerService(
        store, WriterLimits(cache_rows_max=0), clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry())
    )
    await service.start()
    try:
        await service.submit(traffic()[:3])  # the deposit leaves p1 with 5000
        reading = await open_read(store)
        try:
            [first] = await service.submit([cmd("bet", "b1", id="b1", **{**BET, "amount_minor": 100})])
            [second] = await service.submit([cmd("bet", "b2", id="b2", **{**BET, "amount_minor": 100})])
        finally:
            await close_read(store, reading)
        assert first[1]["balance"]["balance_minor"] == 4900, first
        assert second[1]["balance"]["balance_minor"] == 4800, second
        account, _ = await store.get("accounts", ("player:p1:EUR",))
        assert account is not None and account["balance_minor"] == 4800
    finally:
        await service.stop()
