"""The journal is the truth: rebuild equals live tables, tampering is pinpointed, writes are guarded."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

from shared.errors import Unavailable

from core_ledger import journal_checks
from core_ledger.domain import Command
from core_ledger.domain.state import TABLES
from core_ledger.journal_checks import rebuild_differences, rebuild_state, replay_journal, verify_store
from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.store import MemoryStore, SqliteStore, StorageError
from core_ledger.store.base import Head, JournalRow, Rows
from core_ledger.writer import WriterLimits
from tests.support.clock import FakeClock
from tests.support.journal_commands import cmd, traffic
from tests.support.ledger_cli import ledger_cli
from tests.support.seeding import assert_rebuilt_cleanly


async def run_service(store, commands: list[Command], *, batch: int = 4) -> list:
    service = LedgerService(store, WriterLimits(), clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry()))
    await service.start()
    try:
        results = []
        for i in range(0, len(commands), batch):
            results += await service.submit(commands[i : i + batch])
        return results
    finally:
        await service.stop()


async def test_rebuild_from_the_journal_equals_the_live_tables(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "ledger.db")
    results = await run_service(store, traffic())
    assert [r[0] for r in results if isinstance(r, tuple)].count(201) >= 17
    await store.open()
    try:
        assert await rebuild_differences(store) == []
        assert (await verify_store(store))["entries_checked"] == len(await store.journal(0, 1000))
    finally:
        await store.close()


async def test_a_flipped_byte_in_an_old_entry_is_named_by_both_verifiers(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    await run_service(SqliteStore(db), traffic())
    ok = await ledger_cli("verify", str(db))
    assert ok.returncode == 0 and orjson.loads(ok.stdout)["ok"] is True
    conn = sqlite3.connect(db)
    (stored,) = conn.execute("SELECT entry FROM journal WHERE sequence = 5").fetchone()
    conn.close()
    assert isinstance(stored, bytes)  # deflated at rest (core_ledger/store/sqlite_entries.py)
    raw = db.read_bytes()
    at = raw.index(stored) + len(stored) // 2
    flipped = raw[:at] + bytes([raw[at] ^ 0x10]) + raw[at + 1 :]
    db.write_bytes(flipped)
    bad = await ledger_cli("verify", str(db))
    report = orjson.loads(bad.stdout)
    assert bad.returncode == 1 and report["ok"] is False and report["first_bad_sequence"] == 5
    assert report["entries_checked"] == 4
    store = SqliteStore(db)
    await store.open()
    try:
        assert (await verify_store(store))["first_bad_sequence"] == 5
    finally:
        await store.close()


async def test_cli_rebuild_restores_wiped_derived_tables(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    await run_service(SqliteStore(db), traffic())
    conn = sqlite3.connect(db)
    before = conn.execute("SELECT * FROM accounts WHERE account = 'player:p1:EUR'").fetchone()
    conn.execute("DELETE FROM accounts")
    conn.commit()
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE journal SET entry = 'x' WHERE sequence = 1")
    conn.close()
    done = await ledger_cli("rebuild", str(db))
    assert done.returncode == 0 and orjson.loads(done.stdout)["rebuilt"] is True
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT * FROM accounts WHERE account = 'player:p1:EUR'").fetchone() == before
    conn.close()


async def test_replaying_the_journal_with_a_small_cache_equals_the_live_tables(tmp_path: Path) -> None:
    """The bounded-memory rebuild: rows dropped from its cache every page are loaded back from
    what it already wrote, and the result is the same as folding everything in memory."""
    db = tmp_path / "ledger.db"
    await run_service(SqliteStore(db), traffic(), batch=1)
    store, target = SqliteStore(db), MemoryStore()
    await store.open()
    await target.open()
    try:
        head = await replay_journal(store, target, rows_cached=2)
        assert head == await store.head() == await target.head()
        folded = await rebuild_state(store)
        for table in TABLES:
            assert await target.dump(table) == folded.rows(table) == await store.dump(table), table
    finally:
        await store.close()


class CountingMemoryStore(MemoryStore):
    commits: list[int]

    async def commit(self, journal: Sequence[JournalRow], rows: Rows, head: Head) -> None:
        self.commits.append(len(journal))
        await super().commit(journal, rows, head)


async def test_replaying_commits_many_pages_at_once_and_equals_the_live_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replay commits once per `commit_entries` (not once per page: an fsync and the hot index
    pages rewritten per thousand entries made a rebuild of 1M entries take 20 minutes); rows
    changed since the last commit stay in its cache, even when the cache is dropped."""
    db = tmp_path / "ledger.db"
    await run_service(SqliteStore(db), traffic(), batch=1)
    monkeypatch.setattr(journal_checks, "JOURNAL_PAGE", 3)
    store, target = SqliteStore(db), CountingMemoryStore()
    target.commits = []
    await store.open()
    await target.open()
    try:
        head = await replay_journal(store, target, rows_cached=2, commit_entries=7)
        assert head == await store.head() == await target.head()
        assert sum(target.commits) == head.sequence
        assert all(n == 9 for n in target.commits[:-1]) and 0 < target.commits[-1] <= 9  # three pages of 3
        for table in TABLES:
            assert await target.dump(table) == await store.dump(table), table
    finally:
        await store.close()


async def test_cli_rebuild_never_folds_the_whole_state_in_memory(tmp_path: Path) -> None:
    """`croupier ledger rebuild` replays into a scratch file (bounded memory): with the in-memory
    fold made unusable it still rebuilds, and leaves no scratch file behind."""
    db = tmp_path / "ledger.db"
    await run_service(SqliteStore(db), traffic())
    conn = sqlite3.connect(db)
    before = conn.execute("SELECT * FROM accounts WHERE account = 'player:p1:EUR'").fetchone()
    conn.execute("UPDATE accounts SET balance_minor = 999999 WHERE account = 'player:p1:EUR'")
    conn.execute("DELETE FROM history")
    conn.commit()
    conn.close()
    no_fold = [
        sys.executable,
        "-c",
        "import core_ledger.journal_checks as j; j.rebuild_state = None; from croupier.cli import main; main()",
        "ledger",
        "rebuild",
        str(db),
    ]
    done = await asyncio.to_thread(subprocess.run, no_fold, capture_output=True, check=False, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["rebuilt"] is True and report["rows"]["history"] > 0
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT * FROM accounts WHERE account = 'player:p1:EUR'").fetchone() == before
    conn.close()
    await assert_rebuilt_cleanly(tmp_path, db)


class FlakyStore(MemoryStore):
    """Fails the next commit on demand, as a full disk would."""

    fail_next = False

    async def commit(
        self, journal: Sequence[JournalRow], rows: Rows, head: Head
    ) -> None:  # the store's commit, failing on demand
        if self.fail_next:
            self.fail_next = False
            raise StorageError("disk full")
        await super().commit(journal, rows, head)


async def test_failed_commit_answers_503_and_leaves_no_trace() -> None:
    store = FlakyStore()
    await run_service(store, traffic()[:3])
    store.fail_next = True
    bet = {"player_id": "p1", "currency": "EUR", "game_id": "slots", "round_id": "rx", "amount_minor": 10}
    failed = await run_service(store, [cmd("bet", "x1", id="x1", **bet), cmd("bet", "x2", id="x2", **bet)])
    assert all(isinstance(r, Unavailable) and r.code == "storage_unavailable" for r in failed)
    assert (await store.head()).sequence == 3
    [again] = await run_service(store, [cmd("bet", "x1", id="x1", **bet)])
    assert again[0] == 201 and again[1]["transaction"]["sequence"] == 4
    assert await rebuild_differences(store) == []


async def test_full_queue_is_refused_with_503_ledger_unavailable() -> None:
    service = LedgerService(
        MemoryStore(), WriterLimits(queue_depth_max=1), clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry())
    )
    await service.start()
    try:
        first = service.submit(traffic()[:1])
        second = service.submit(traffic()[:1])
        results = await asyncio.gather(first, second, service.submit(traffic()[:1]), return_exceptions=True)
        refused = [r for r in results if isinstance(r, Unavailable)]
        assert refused and refused[0].code == "ledger_unavailable"
    finally:
        await service.stop()
    with pytest.raises(Unavailable):
        await service.submit(traffic()[:1])


async def test_a_failed_commit_also_fails_the_group_judged_on_top_of_it() -> None:
    # Two groups in flight (pipeline_depth 2): the second is judged on top of the first's commit.
    store = FlakyStore()
    await run_service(store, traffic()[:3])
    limits = WriterLimits(commit_batch_max=2, pipeline_depth=2)
    service = LedgerService(store, limits, clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry()))
    await service.start()
    try:
        first, second = _two_groups_replaying_x1()
        store.fail_next = True
        a, b = await asyncio.gather(service.submit(first), service.submit(second))
        assert all(isinstance(r, Unavailable) for r in a + b), (a, b)
        [again] = await service.submit([cmd("bet", "x1", id="x1", **BET_X)])
        assert again[0] == 201 and again[1]["transaction"]["sequence"] == 4
    finally:
        await service.stop()
    assert (await store.head()).sequence == 4
    assert await rebuild_differences(store) == []


BET_X = {"player_id": "p1", "currency": "EUR", "game_id": "slots", "round_id": "rx", "amount_minor": 10}


def _two_groups_replaying_x1() -> tuple[list[Command], list[Command]]:
    first = [cmd("bet", "x1", id="x1", **BET_X), cmd("bet", "x2", id="x2", **BET_X)]
    second = [cmd("bet", "x3", id="x3", **BET_X), cmd("bet", "x1", id="x1", **BET_X)]  # x1: a replay of `first`
    return first, second


async def test_with_one_group_in_flight_the_group_after_a_failed_commit_is_judged_on_what_is_stored() -> None:
    # The default (pipeline_depth 1): nothing is judged on top of a commit, so the failed group's x1
    # was never stored and is a new bet in the group taken after it.
    store = FlakyStore()
    await run_service(store, traffic()[:3])
    service = LedgerService(
        store, WriterLimits(commit_batch_max=2), clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry())
    )
    await service.start()
    try:
        first, second = _two_groups_replaying_x1()
        store.fail_next = True
        a, b = await asyncio.gather(service.submit(first), service.submit(second))
        assert all(isinstance(r, Unavailable) for r in a), a
        assert [(r[0], r[1]["transaction"]["sequence"], r[1]["replayed"]) for r in b] == [
            (201, 4, False),
            (201, 5, False),
        ]
    finally:
        await service.stop()
    assert (await store.head()).sequence == 5
    assert await rebuild_differences(store) == []


async def test_without_group_commit_every_command_is_its_own_commit() -> None:
    registry = CollectorRegistry()
    service = LedgerService(
        MemoryStore(), WriterLimits(group_commit=False), clock=FakeClock(), metrics=LedgerMetrics(registry)
    )
    await service.start()
    try:
        results = await service.submit(traffic())
    finally:
        await service.stop()
    assert [r[0] for r in results[:3]] == [201, 201, 201]
    commits = registry.get_sample_value("ledger_commit_batch_size_count")
    assert commits == len(traffic()) and registry.get_sample_value("ledger_commit_batch_size_sum") == commits


async def test_a_bonus_granted_and_claimed_in_one_group_commits_and_does_not_halt_the_writer() -> None:
    """Both in one group: the claim is planned before the grant is applied (its bonus row does not
    exist yet), so the grant must bring in the account the claim pays from. Before, the writer
    halted on `accounts('bonus:EUR',) was not loaded before use`."""
    store = MemoryStore()
    service = LedgerService(store, WriterLimits(), clock=FakeClock(), metrics=LedgerMetrics(CollectorRegistry()))
    await service.start()
    try:
        await service.submit(
            [
                cmd("player_create", "player:p1", player_id="p1", currencies=["EUR"]),
                cmd("deposit", "d1", id="d1", amount_minor=5000, player_id="p1", currency="EUR"),
            ]
        )
        grant, claim = await service.submit(
            [
                cmd(
                    "bonus_grant",
                    "g1",
                    id="g1",
                    bonus_id="b",
                    player_id="p1",
                    currency="EUR",
                    amount_minor=10,
                    wagering_requirement_minor=0,
                    expires_at="2030-01-01T00:00:00Z",
                ),
                cmd("bonus_claim", "c1", id="c1", player_id="p1", bonus_id="b"),
            ]
        )
        assert service.halted is None
        assert isinstance(grant, tuple) and grant[0] == 201, grant
        assert isinstance(claim, tuple) and claim[0] in (200, 201), claim
    finally:
        await service.stop()
    assert await rebuild_differences(store) == []
