"""Promotion safety: a standby promoted while it applies a page extends exactly what it stored
(SQLite and PostgreSQL), and after a commit of unknown outcome the journal's long polls see what
the store holds as soon as the writer reloaded its head."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from core_ledger.app import create_app
from core_ledger.app_keys import SERVICE, STANDBY
from core_ledger.journal_checks import verify_store
from core_ledger.standby_tailer import StandbySettings
from core_ledger.store import Head, JournalRow, SqliteStore, StorageError
from core_ledger.store.base import Rows
from core_ledger.store.held_rows import HeldRows
from core_ledger.store.postgres import PostgresStore
from core_ledger.store.sqlite import _commit_sync
from tests.support.clock import FakeClock
from tests.support.ledger import TOKENS, Api, bet, ledger_config
from tests.support.local_postgres import TEST_LIMITS, PgServer, fresh_schema
from tests.support.polling import wait_for

COMMIT_DELAY_S = 0.5


def _slow_commit(
    db: sqlite3.Connection, journal: Sequence[JournalRow], rows: Rows, head: Head, held: HeldRows, delay_s: float
) -> None:
    time.sleep(delay_s)  # in the database thread: cancelling the caller does not stop this commit
    _commit_sync(db, journal, rows, head, held)


class SlowSqlite(SqliteStore):
    """Journal commits take `delay_s` in SQLite's thread (a slow fsync); `committing` is set on entry."""

    delay_s = 0.0

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.committing = asyncio.Event()

    async def commit(self, journal: Sequence[JournalRow], rows: Rows, head: Head) -> None:
        if not (journal and self.delay_s):
            return await super().commit(journal, rows, head)
        self.committing.set()
        await self._w.run(_slow_commit, journal, rows, head, self._held, self.delay_s)


class SlowPostgres(PostgresStore):
    """Journal commits take `delay_s` and, once sent, complete even if the caller is cancelled
    (what the server does with a COMMIT it received)."""

    delay_s = 0.0

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.committing = asyncio.Event()

    async def commit(self, journal: Sequence[JournalRow], rows: Rows, head: Head) -> None:
        if not (journal and self.delay_s):
            return await super().commit(journal, rows, head)
        self.committing.set()

        async def sent() -> None:
            await asyncio.sleep(self.delay_s)
            await PostgresStore.commit(self, journal, rows, head)

        await asyncio.shield(asyncio.ensure_future(sent()))


async def _promote_during_apply(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, standby_store: SlowSqlite | SlowPostgres, reopen: Any
) -> None:
    clock = FakeClock()
    primary_app = create_app(ledger_config(tmp_path / "p"), clock=clock)
    primary_server = await aiohttp_server(primary_app)
    primary = Api(await aiohttp_client(primary_server))
    settings = StandbySettings(str(primary_server.make_url("")).rstrip("/"), TOKENS["replica"], poll_interval_s=0.05)
    standby_app = create_app(ledger_config(tmp_path / "s"), clock=clock, store=standby_store, standby=settings)
    standby = Api(await aiohttp_client(standby_app))
    await primary.player(deposit=0)
    await wait_for(lambda: standby_app[SERVICE].head.sequence == 1)

    standby_store.delay_s = COMMIT_DELAY_S
    status, _ = await primary.post(
        "cashier", "/v1/deposits", {"id": "d1", "player_id": "p1", "currency": "EUR", "amount_minor": 500}
    )
    assert status == 201
    await asyncio.wait_for(standby_store.committing.wait(), 10)
    status, promoted = await standby.post("admin_write", "/admin/v1/promote")  # while entry 2 is being applied
    assert status == 200 and promoted["head"]["sequence"] == 2, promoted
    assert not standby_app[STANDBY].running
    # 3 is the promotion's own record, the first entry of the new epoch.
    assert (await standby_store.head()).sequence == standby_app[SERVICE].head.sequence == 3
    status, body = await standby.post("edge", "/v1/bets", bet("b1", 100))
    assert status == 201 and body["transaction"]["sequence"] == 4 and body["balance"]["balance_minor"] == 400, body
    await standby.client.close()

    again = Api(await aiohttp_client(create_app(ledger_config(tmp_path / "s"), clock=clock, store=reopen())))
    status, body = await again.post("edge", "/v1/bets", bet("b2", 100))  # after a restart too
    assert status == 201 and body["transaction"]["sequence"] == 5, body
    status, report = await again.post("admin_read", "/admin/v1/audit/verify")
    assert report["ok"] and report["head_sequence"] == 5


async def test_promotion_while_applying_extends_what_sqlite_stored(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    path = tmp_path / "s" / "ledger.db"
    await _promote_during_apply(aiohttp_server, aiohttp_client, tmp_path, SlowSqlite(path), lambda: SqliteStore(path))


async def test_promotion_while_applying_extends_what_postgres_stored(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, pg_server: PgServer
) -> None:
    schema = fresh_schema()
    await _promote_during_apply(
        aiohttp_server,
        aiohttp_client,
        tmp_path,
        SlowPostgres(pg_server.dsn, TEST_LIMITS, schema=schema),
        lambda: PostgresStore(pg_server.dsn, TEST_LIMITS, schema=schema),
    )


class LostAnswerPostgres(PostgresStore):
    """The next journal commit lands, but its answer is lost (the connection died after COMMIT)."""

    lose_next = False

    async def commit(self, journal: Sequence[JournalRow], rows: Rows, head: Head) -> None:
        await super().commit(journal, rows, head)
        if journal and self.lose_next:
            self.lose_next = False
            raise StorageError("commit failed: ConnectionDoesNotExistError: connection was closed")


async def test_long_polls_see_a_commit_of_unknown_outcome_once_the_head_is_reloaded(
    aiohttp_client: Any, tmp_path: Path, pg_server: PgServer
) -> None:
    store = LostAnswerPostgres(pg_server.dsn, TEST_LIMITS, schema=fresh_schema())
    app = create_app(ledger_config(tmp_path / "p"), clock=FakeClock(), store=store)
    api = Api(await aiohttp_client(app))
    await api.player()
    store.lose_next = True
    deposit = {"id": "d1", "player_id": "p1", "currency": "EUR", "amount_minor": 500}
    status, problem = await api.post("cashier", "/v1/deposits", deposit)
    assert status == 503 and problem["code"] == "storage_unavailable"
    assert (await store.head()).sequence == 2  # it landed all the same

    started = time.monotonic()  # no other write follows: the long poll must not wait for one
    status, page = await api.get("admin_read", "/v1/journal?after_sequence=1&wait_ms=5000")
    assert status == 200 and len(page.splitlines()) == 1
    assert time.monotonic() - started < 2.5, "the long poll waited for a commit that is already stored"
    assert app[SERVICE].head.sequence == 2

    status, body = await api.post("cashier", "/v1/deposits", deposit)  # the retry is a replay of what landed
    assert status == 200 and body["replayed"] is True and app[SERVICE].head.sequence == 2
    status, body = await api.post("cashier", "/v1/deposits", {**deposit, "id": "d2"})
    assert status == 201 and body["transaction"]["sequence"] == 3
    assert (await verify_store(store))["ok"]


class LandsThenFailsSqlite(SlowSqlite):
    """As SlowSqlite; and the next journal commit after `lose_next` is stored, then reported failed
    (the caller cannot know it landed)."""

    lose_next = False

    async def commit(self, journal: Sequence[JournalRow], rows: Rows, head: Head) -> None:
        await super().commit(journal, rows, head)
        if journal and self.lose_next:
            self.lose_next = False
            raise StorageError("commit failed: disk I/O error")


async def primary_with_a_player(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path, clock: FakeClock
) -> tuple[Any, Api]:
    """A primary ledger app (in `tmp_path / "p"`) serving one funded player, and its client."""
    primary_app = create_app(ledger_config(tmp_path / "p"), clock=clock)
    primary = Api(await aiohttp_client(await aiohttp_server(primary_app)))
    await primary.player(deposit=500)
    return primary_app, primary


async def hand_driven_standby(aiohttp_client: Any, tmp_path: Path, clock: FakeClock, store: SqliteStore) -> Any:
    """The service of a standby ledger on `store` whose tailer is stopped: the test applies pages itself."""
    settings = StandbySettings("http://127.0.0.1:9", TOKENS["replica"], poll_interval_s=10)
    standby_app = create_app(ledger_config(tmp_path / "s"), clock=clock, store=store, standby=settings)
    await aiohttp_client(standby_app)
    await standby_app[STANDBY].stop()
    return standby_app[SERVICE]


async def test_a_standby_apply_that_failed_or_was_cancelled_leaves_memory_equal_to_disk(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    clock = FakeClock()
    primary_app, primary = await primary_with_a_player(aiohttp_server, aiohttp_client, tmp_path, clock)
    for i in range(3):
        assert (await primary.post("edge", "/v1/bets", bet(f"b{i}", 10)))[0] == 201
    rows = await primary_app[SERVICE].store.journal(0, 10)

    store = LandsThenFailsSqlite(tmp_path / "s" / "ledger.db")
    service = await hand_driven_standby(aiohttp_client, tmp_path, clock, store)

    store.lose_next = True
    try:
        await service.apply_replicated(rows[:2])
    except StorageError:
        pass
    else:
        raise AssertionError("the failure was not reported")
    assert service.head == await store.head() and service.head.sequence == 2  # it landed: memory says so

    store.delay_s = COMMIT_DELAY_S
    applying = asyncio.ensure_future(service.apply_replicated(rows[2:4]))
    await asyncio.wait_for(store.committing.wait(), 10)
    applying.cancel()  # cut while SQLite's thread still commits
    await asyncio.gather(applying, return_exceptions=True)
    assert service.head == await store.head() and service.head.sequence == 4  # the cut commit landed too
    store.delay_s = 0
    await service.apply_replicated(rows[4:])  # and tailing goes on from there
    assert service.head == primary_app[SERVICE].head == await store.head()


class FailsThenBlindSqlite(SqliteStore):
    """The next journal commit after `fail_next` fails before storing anything, and the head reads
    fail while `blind` is set."""

    fail_next = False
    blind = False

    async def commit(self, journal: Sequence[JournalRow], rows: Rows, head: Head) -> None:
        if journal and self.fail_next:
            self.fail_next = False
            raise StorageError("commit failed: disk I/O error")
        await super().commit(journal, rows, head)

    async def head(self) -> Head:
        if self.blind:
            raise StorageError("reading the head failed: disk I/O error")
        return await super().head()


async def test_a_head_that_cannot_be_read_back_after_a_failed_apply_is_logged_and_read_at_the_next(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    clock = FakeClock()
    primary_app, _ = await primary_with_a_player(aiohttp_server, aiohttp_client, tmp_path, clock)
    rows = await primary_app[SERVICE].store.journal(0, 10)

    store = FailsThenBlindSqlite(tmp_path / "s" / "ledger.db")
    service = await hand_driven_standby(aiohttp_client, tmp_path, clock, store)

    store.fail_next = store.blind = True
    with capture_logs() as logs, pytest.raises(StorageError, match="commit failed"):
        await service.apply_replicated(rows)  # the commit's error is the one raised
    [reload_failed] = [e for e in logs if e["event"] == "ledger_head_reload_failed"]
    assert reload_failed["log_level"] == "error" and "reading the head failed" in reload_failed["error"]
    store.blind = False
    await service.apply_replicated(rows)  # reads the head first, then applies from it
    assert service.head == primary_app[SERVICE].head == await store.head()


async def test_a_fenced_copy_promoted_from_standby_is_no_longer_fenced(tmp_path: Path) -> None:
    """A copy fenced as a primary (epoch 1 fenced by 3), later restarted as a standby and promoted,
    takes an epoch above the fence (4): the stored fence no longer holds, also after a restart."""
    from prometheus_client import CollectorRegistry

    from core_ledger.metrics import LedgerMetrics
    from core_ledger.service import LedgerService
    from core_ledger.writer import WriterLimits

    async def run(standby: bool, step: Any) -> Any:
        service = LedgerService(
            SqliteStore(tmp_path / "ledger.db"),
            WriterLimits(),
            clock=FakeClock(),
            metrics=LedgerMetrics(CollectorRegistry()),
            standby=standby,
        )
        await service.start()
        try:
            return await step(service)
        finally:
            await service.stop()

    async def fence(s: LedgerService) -> bool:
        await s.fence(3, {"peer": "test"})
        return s.fenced

    async def promote(s: LedgerService) -> tuple[int, bool]:
        return (await s.promote()).epoch, s.fenced

    async def reopen(s: LedgerService) -> tuple[int, bool]:
        return s.epoch, s.fenced

    assert await run(False, fence) is True
    assert await run(True, promote) == (4, False)
    assert await run(False, reopen) == (4, False)


async def test_a_standby_promoted_after_a_primary_that_wrote_nothing_takes_a_higher_epoch(
    aiohttp_server: Any, tmp_path: Path, clock: FakeClock
) -> None:
    """A copy promoted to epoch 2 that journaled nothing since, followed by its standby: the standby
    holds no entry of epoch 2, yet it must never be promoted to epoch 2 too (two copies writing
    under one epoch): it keeps the epoch its primary announced, durably, and is promoted to 3."""
    from tests.support.ledger import standby_of

    first = create_app(
        ledger_config(tmp_path / "a"),
        clock=clock,
        standby=StandbySettings("http://127.0.0.1:9", TOKENS["replica"], poll_interval_s=0.05),
    )
    first_server = await aiohttp_server(first)
    await first[STANDBY].stop()
    assert (await first[SERVICE].promote()).epoch == 2  # a promoted copy, nothing journaled at epoch 2
    follower = standby_of(first_server, tmp_path / "b", clock)
    follower_server = await aiohttp_server(follower)
    await wait_for(lambda: follower[STANDBY].primary_epoch == 2 and follower[SERVICE].fenced_by == 2)
    assert follower[SERVICE].head.epoch == 1 and not follower[SERVICE].fenced  # a standby is never "fenced"
    await first_server.close()
    await follower[STANDBY].stop()
    assert (await follower[SERVICE].promote()).epoch == 3
    await follower_server.close()
