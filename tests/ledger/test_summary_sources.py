"""The transaction index by player and by round without B-trees of their own (SQLite schema
migration 9): a page filtered on a player comes from the player's balance history plus a partial
index, a page filtered on a round from the rounds' notes plus a partial index. On a journal rich in
types (refusals, rollbacks and markers, wins, bonus, jackpot, deposits, withdrawals, adjustments,
freezes, refunded and closed rounds, a player id that extends another's with ":", a round id shared
by players and clients) every page answers what filtering the index rows themselves answers.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry

from core_ledger.domain import Command
from core_ledger.domain.accounts import player_account
from core_ledger.journal_checks import rebuild_differences
from core_ledger.metrics import LedgerMetrics
from core_ledger.queries import LedgerQueries, Page
from core_ledger.service import LedgerService
from core_ledger.store import SqliteStore, Store, pg_summaries, sqlite_summaries
from core_ledger.store import postgres as pg_module
from core_ledger.store import sqlite as sqlite_module
from core_ledger.store.base import SUMMARY_NOTED_TYPES, SUMMARY_POSTING_TYPES
from core_ledger.store.postgres import PostgresStore
from core_ledger.writer import WriterLimits
from tests.support.clock import FakeClock
from tests.support.domain_world import (
    adjust,
    bet,
    claim,
    create_jackpot,
    create_player,
    deposit,
    freeze,
    grant_bonus,
    payout,
    rollback,
    settle,
    win,
    withdrawal,
)
from tests.support.local_postgres import TEST_LIMITS, PgServer, fresh_schema

V8 = sqlite_module.MIGRATIONS[:8]
LATEST = len(sqlite_module.MIGRATIONS)
PLAYERS = ("p1", "p2", "p1:x", "p1:", "nobody")
ROUNDS = ("r1", "r2", "r3", "r4", "r5", "r6", "r7", "nothing")
FILTERS: tuple[dict[str, str], ...] = (
    {},
    {"type": "bet"},
    {"type": "rollback"},
    {"outcome": "rejected"},
    {"outcome": "committed", "currency": "EUR"},
    {"client_id": "gs2"},
)


def rich_script() -> list[Command]:
    return [
        create_player("p1", "EUR", "GBP"),
        create_player("p2", "EUR"),
        create_player("p1:x", "EUR"),
        create_jackpot("j1", ["g1"]),
        deposit("d1", "p1", 1000),
        deposit("d2", "p2", 200),
        deposit("d3", "p1:x", 300),
        grant_bonus("g-b1", "p1", "b1", requirement=100),
        bet("b1", "p1", 100, "r1"),
        bet("b2", "p1", 50, "r1"),
        bet("b3", "p2", 5000, "r1"),  # refused for funds
        bet("b4", "p1", 10, "r2", currency="GBP"),  # no GBP yet: refused
        deposit("d4", "p1", 100, "GBP"),
        bet("b5", "p1", 10, "r2", currency="GBP"),
        win("w1", "p1", 30, "r1"),
        win("w2", "p1", 0, "r1", close=True),
        bet("b6", "p1", 10, "r1"),  # round closed: refused
        bet("b7", "p2", 20, "r3"),
        rollback("rb2", "p2", "b7", "r3"),  # reverses b7
        rollback("rb3", "p2", "b99", "r4"),  # nothing to reverse: a marker
        bet("b99", "p2", 10, "r4"),  # rolled back before it arrived: refused
        bet("b8", "p1:x", 20, "r1"),
        win("w3", "p1:x", 5, "r1"),
        payout("jp1", "p1", "j1", "r1"),
        claim("c1", "p1", "b1"),
        adjust("a1", "p2", 50),
        adjust("a2", "p2", -10),
        freeze("p2"),
        bet("b9", "p2", 10, "r5"),  # frozen: refused
        freeze("p2", frozen=False),
        withdrawal("wd1", "p1", 100),
        withdrawal("wd2", "p2", 100_000),  # refused for funds
        bet("b10", "p2", 10, "r6"),
        settle("refund", "p2", "r6"),
        bet("b11", "p2", 10, "r7"),
        settle("close", "p2", "r7"),
        bet("b12", "p1", 10, "r1", client="gs2"),  # the same round id under another client
        win("w4", "p1", 7, "r1", client="gs2"),
    ]


def service_on(store: SqliteStore) -> LedgerService:
    """At the scripts' own time (FakeClock): on the real clock the bonus they grant, which expires a
    week after it, expired on 2026-11-30 and the claim was refused."""
    return LedgerService(store, WriterLimits(), clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry()))


async def run_script(service: LedgerService, commands: list[Command]) -> None:
    for command in commands:  # one at a time: each sees the ones before it
        await service.submit([command])


def expected_page(
    rows: dict[int, dict[str, Any]], equals: dict[str, str], after: int, limit: int, time_from: str | None
) -> list[tuple[int, dict[str, Any]]]:
    """What the old single-table query answered: the index rows themselves, filtered."""
    found = [
        (s, d)
        for s, d in sorted(rows.items())
        if s > after
        and all(d.get(k) == v for k, v in equals.items())
        and (time_from is None or d["committed_at"] >= time_from)
    ]
    return found[:limit]


async def assert_every_page_as_the_rows_say(store: Store) -> int:
    """Every filter on every player and round, walked page by page at several page sizes, against
    the index rows; the number of non-empty pages compared."""
    rows = {key[0]: doc for key, doc in (await store.dump("tx_summaries")).items()}
    middle = sorted(rows.items())[len(rows) // 2][1]["committed_at"]
    compared = 0
    queries = [{"player_id": p} for p in PLAYERS] + [{"round_id": r} for r in ROUNDS]
    queries += [{"player_id": "p1", "round_id": "r1"}, {"player_id": "p2", "round_id": "r6"}]
    for base in queries:
        for more in FILTERS:
            equals = {**base, **more}
            for time_from in (None, middle):
                for limit in (1, 3, 100):
                    after = 0
                    while True:
                        got, _ = await store.summaries(equals, after_sequence=after, limit=limit, time_from=time_from)
                        assert got == expected_page(rows, equals, after, limit, time_from), (equals, after, limit)
                        if not got:
                            break
                        compared += 1
                        after = got[-1][0]
    return compared


async def operator_answers(store: Store) -> list[Any]:
    """What every operator query (core_ledger/queries.py) answers on the rich journal."""
    queries = LedgerQueries(store, clock=lambda: datetime(2026, 11, 1, tzinfo=UTC))
    head = (await store.head()).sequence
    out: list[Any] = [
        await queries.players(status=None, created_from=None, created_until=None, cursor=None, limit=50),
        await queries.players(
            status="active", created_from="2000-01-01T00:00:00Z", created_until=None, cursor=None, limit=50
        ),
        await queries.accounts(kind=None, currency=None, cursor=None, limit=50),
        await queries.rounds(status=None, min_age_s=None, cursor=None, limit=50),
        await queries.jackpots(currency=None, cursor=None, limit=50),
        await queries.bonuses(player_id=None, status=None, cursor=None, limit=50),
    ]
    for filters in ({}, *({"player_id": p} for p in PLAYERS), *({"round_id": r} for r in ROUNDS)):
        out.append(await queries.transactions(filters, time_from=None, time_until=None, cursor=None, limit=50))
    for player in ("p1", "p2", "p1:x"):
        out += [await queries.balances_as_of(player, sequence=s, moment=None) for s in range(1, head + 1, 3)]
    return out


async def test_a_version_8_ledger_migrates_and_every_player_and_round_page_answers_the_same(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    service = service_on(SqliteStore(path, migrations=V8))
    await service.start()
    try:
        await run_script(service, rich_script())
        summaries = await service.store.dump("tx_summaries")
        answers = await operator_answers(service.store)
    finally:
        await service.stop()
    assert sum(len(a.items) for a in answers if isinstance(a, Page)) > 100  # pages with rows to compare
    kinds = {(d["type"], d["outcome"]) for d in summaries.values()}
    for kind in (
        ("bet", "rejected"),
        ("rollback", "committed"),
        ("win", "committed"),
        ("jackpot_payout", "committed"),
        ("bonus_claim", "committed"),
        ("adjustment", "committed"),
        ("withdrawal", "rejected"),
        ("round_refund", "committed"),
        ("round_close", "committed"),
        ("freeze", "committed"),
    ):
        assert kind in kinds, (kind, sorted(kinds))
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 8
        v8_indexes = {r[1] for r in db.execute("PRAGMA index_list(tx_summaries)")}
    finally:
        db.close()
    assert {"tx_summaries_by_player_id", "tx_summaries_by_round_id"} <= v8_indexes
    service = service_on(SqliteStore(path))
    await service.start()
    try:
        store = service.store
        assert isinstance(store, SqliteStore) and store.schema_plan is not None
        assert (store.schema_plan.stored, store.schema_plan.target) == (8, LATEST)
        assert await store.dump("tx_summaries") == summaries
        assert await operator_answers(store) == answers
        assert await assert_every_page_as_the_rows_say(store) > 100
        assert await rebuild_differences(store) == []
        # entries written after the migration are found the same way
        await run_script(
            service,
            [
                bet("b13", "p1", 10, "r8"),
                bet("b14", "p2", 10_000, "r8"),  # refused
                rollback("rb4", "p1", "b13", "r8"),
                win("w5", "p1:x", 1, "r1"),
            ],
        )
        assert await assert_every_page_as_the_rows_say(store) > 100
        assert await rebuild_differences(store) == []
    finally:
        await service.stop()
    db = sqlite3.connect(path)
    try:
        indexes = {r[1] for r in db.execute("PRAGMA index_list(tx_summaries)")}
    finally:
        db.close()
    assert indexes == {
        "tx_summaries_by_type",
        "tx_summaries_by_committed_at",
        "tx_summaries_unposted_by_player_id",
        "tx_summaries_unnoted_by_round_id",
    }


async def test_the_entries_the_partial_indexes_leave_out_are_in_history_or_a_rounds_notes(tmp_path: Path) -> None:
    """What migration 9 rests on, checked on the rich journal: a committed entry of a posting type
    has a history row on its player's account; one of a noted type is noted by a round of its id;
    and the partial indexes hold every other entry of a player or a round (refusals among them)."""
    service = service_on(SqliteStore(tmp_path / "ledger.db"))
    await service.start()
    try:
        await run_script(service, rich_script())
        store = service.store
        summaries = {k[0]: d for k, d in (await store.dump("tx_summaries")).items()}
        history = set(await store.dump("history"))
        noted: set[tuple[str, int]] = set()
        for table in ("rounds", "client_rounds"):
            for key, doc in (await store.dump(table)).items():
                noted.update((key[1], note["sequence"]) for note in doc["transactions"])
        assert isinstance(store, SqliteStore)
        db = sqlite3.connect(store.path)
        try:
            unposted = {
                s for (s,) in db.execute(f"SELECT sequence FROM tx_summaries WHERE {sqlite_summaries.UNPOSTED}")
            }
            unnoted = {s for (s,) in db.execute(f"SELECT sequence FROM tx_summaries WHERE {sqlite_summaries.UNNOTED}")}
        finally:
            db.close()
    finally:
        await service.stop()
    posting = noting = 0
    for sequence, d in summaries.items():
        if d["outcome"] == "committed" and d["type"] in SUMMARY_POSTING_TYPES:
            assert (player_account(d["player_id"], d["currency"]), sequence) in history, (sequence, d)
            posting += 1
        elif d["player_id"] is not None:
            assert sequence in unposted, (sequence, d)
        if d["outcome"] == "committed" and d["type"] in SUMMARY_NOTED_TYPES:
            assert (d["round_id"], sequence) in noted, (sequence, d)
            noting += 1
        elif d["round_id"] is not None:
            assert sequence in unnoted, (sequence, d)
    assert posting > 10 and noting > 10
    assert any(summaries[s]["outcome"] == "rejected" for s in unposted & unnoted)


async def test_each_page_query_searches_an_index_without_sorting(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    store = SqliteStore(path)
    await store.open()
    await store.close()
    doc = sqlite_module.doc_sql("tx_summaries", "t.")
    checks = ["t.player_id = ?", "t.type = ?"]
    queries = {
        "history": (sqlite_summaries.history_arm_sql(doc, checks), 5, ("sqlite_autoindex_history_1",)),
        "unposted": (sqlite_summaries.unposted_arm_sql(doc, checks), 5, ("tx_summaries_unposted_by_player_id",)),
        "round": (
            sqlite_summaries.round_sql(doc, ["t.round_id = ?"]),
            7,
            ("client_rounds_by_round", "rounds_by_round", "tx_summaries_unnoted_by_round_id"),
        ),
    }
    db = sqlite3.connect(path)
    try:
        for name, (sql, params, indexes) in queries.items():
            plan = " | ".join(str(r[-1]) for r in db.execute("EXPLAIN QUERY PLAN " + sql, [None] * params))
            for index in indexes:
                assert f"INDEX {index}" in plan, (name, plan)
            assert "TEMP B-TREE" not in plan and "SCAN t" not in plan, (name, plan)
    finally:
        db.close()


class TestPostgres:
    """The same sources on PostgreSQL (its migration 9): the same pages, the partial indexes used."""

    async def test_a_version_8_schema_migrates_and_every_player_and_round_page_answers_the_same(
        self, pg_server: PgServer
    ) -> None:
        schema = fresh_schema()
        service = LedgerService(
            PostgresStore(pg_server.dsn, TEST_LIMITS, schema=schema, migrations=pg_module.MIGRATIONS[:8]),
            WriterLimits(),
            clock=FakeClock(),
            metrics=LedgerMetrics(CollectorRegistry()),
        )
        await service.start()
        try:
            await run_script(service, rich_script())
        finally:
            await service.stop()
        store = PostgresStore(pg_server.dsn, TEST_LIMITS, schema=schema)
        await store.open()
        try:
            assert store.schema_plan is not None and (store.schema_plan.stored, store.schema_plan.target) == (8, LATEST)
            assert await assert_every_page_as_the_rows_say(store) > 100
        finally:
            await store.close()
        conn = await asyncpg.connect(pg_server.dsn)
        try:
            await conn.execute(f'SET search_path TO "{schema}"')
            indexes = {
                str(r[0])
                for r in await conn.fetch(
                    "SELECT indexname FROM pg_indexes WHERE schemaname = $1 AND tablename = 'tx_summaries'", schema
                )
            }
            # rows of other players: a player's few rows are then worth an index (as in a real ledger)
            await conn.execute(
                "INSERT INTO tx_summaries (sequence, doc) SELECT 100000 + g, json_build_object('type', 'bet', "
                "'outcome', 'committed', 'player_id', 'other' || g % 500, 'round_id', 'x' || g)::text "
                "FROM generate_series(1, 20000) AS g"
            )
            await conn.execute("ANALYZE")
            await conn.execute("SET enable_seqscan = off")
            checks, _ = pg_summaries.filters({"player_id": "p1", "type": "bet"}, 0, None, None)
            plans = {}
            for name, sql, key, index in (
                (
                    "unposted",
                    pg_summaries.unposted_arm_sql(checks, "$4", "$5"),
                    "p1",
                    "tx_summaries_unposted_by_player_id",
                ),
                ("history", pg_summaries.history_arm_sql(checks, "$4", "$5"), "player:p1:EUR", "history_pkey"),
            ):
                plans[name] = (
                    "\n".join(r[0] for r in await conn.fetch("EXPLAIN " + sql, 0, "p1", "bet", key, 10)),
                    index,
                )
            checks, _ = pg_summaries.filters({"round_id": "r1"}, 0, None, None)
            plans["round"] = (
                "\n".join(
                    r[0]
                    for r in await conn.fetch(
                        "EXPLAIN " + pg_summaries.round_sql(checks, "$3", "$4"), 0, "r1", "r1", 10
                    )
                ),
                "tx_summaries_unnoted_by_round_id",
            )
        finally:
            await conn.close()
        assert "tx_summaries_by_player_id" not in indexes and "tx_summaries_by_round_id" not in indexes
        assert {"tx_summaries_unposted_by_player_id", "tx_summaries_unnoted_by_round_id"} <= indexes
        for name, (plan, index) in plans.items():
            assert index in plan, (name, plan)
