"""bench/ledger_scale.py's seeding: on SQLite it replaces the empty database the ledger made with a
bulk-loaded file (core_ledger/store/sqlite_bulk.py) that the ledger's own store then opens, with
the whole plan journaled, the chain verified, and CPU per entry reported."""

from __future__ import annotations

import math
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import cast

import asyncpg
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.samples import Sample

import ledger_scale
from common import WrkResult, median_by
from core_ledger.journal_checks import rebuild_differences, verify_store
from core_ledger.metrics import LedgerMetrics
from core_ledger.store import SqliteStore
from core_ledger.store.sqlite_bulk import SqliteBulkStore
from harness.cluster import Cluster
from harness.launcher import ServiceConfig
from ledger_metrics import samples_of, store_figures
from ledger_scale import (
    earlier_schema,
    page_cached_share,
    parse_args,
    reuse_seeded,
    reuse_seeded_schema,
    seed,
    seeding_store,
    settle_postgres,
    startup_audit_ended,
)
from tests.support.local_postgres import PgServer, fresh_schema


async def test_seeding_replaces_the_empty_database_with_a_durable_bulk_loaded_one(tmp_path: Path) -> None:
    db = tmp_path / "ledger.db"
    made = SqliteStore(db)  # what the ledger's first start leaves: the schema, no entries
    await made.open()
    await made.close()
    opts = parse_args(["--sizes", "0,400", "--players", "20", "--dir", str(tmp_path / "run")])
    store = seeding_store(opts, db, "unused")
    assert isinstance(store, SqliteBulkStore)
    seeded = await seed(store, db, 400, 20, 100)
    assert seeded["seeded_entries"] == 400 and seeded["seed_cpu_us_per_entry"] > 0
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    live = SqliteStore(db)
    await live.open()
    try:
        report = await verify_store(live)
        assert report["ok"] and report["entries_checked"] == 400
        assert await rebuild_differences(live) == []
    finally:
        await live.close()


async def test_a_database_seeded_by_an_earlier_run_is_moved_in_not_seeded_again(tmp_path: Path) -> None:
    earlier = tmp_path / "earlier" / "400" / "ledger-data" / "ledger.db"
    earlier.parent.mkdir(parents=True)
    opts = parse_args(["--sizes", "0,400", "--players", "20", "--dir", str(tmp_path / "earlier")])
    await seed(seeding_store(opts, earlier, "unused"), earlier, 400, 20, 100)
    db = tmp_path / "now" / "ledger.db"
    db.parent.mkdir()
    made = SqliteStore(db)  # the new run's empty database: replaced
    await made.open()
    await made.close()
    with pytest.raises(RuntimeError, match="fewer than"):
        await reuse_seeded(earlier, db, 401)  # moved in, then found too small: refused
    earlier.parent.mkdir(parents=True, exist_ok=True)
    for part in db.parent.glob("ledger.db*"):
        part.rename(earlier.parent / part.name)
    reused = await reuse_seeded(earlier, db, 400)
    assert reused["seeded_entries"] == 400 and not earlier.exists()
    live = SqliteStore(db)
    await live.open()
    try:
        assert (await verify_store(live))["entries_checked"] == 400
    finally:
        await live.close()


def test_the_share_of_the_database_in_the_page_cache_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "ledger.db"
    db.write_bytes(b"\1" * 2**20)  # just written: in the page cache
    (tmp_path / "ledger.db-wal").write_bytes(b"\2" * 2**18)
    share = page_cached_share(db)
    assert share is not None and 0.9 <= share <= 1.0
    assert page_cached_share(tmp_path / "absent.db") is None
    monkeypatch.setattr("shutil.which", lambda name: None)  # no fincore: nothing is claimed
    assert page_cached_share(db) is None


async def test_a_seeded_postgres_schema_is_vacuumed_analyzed_and_checkpointed(
    pg_server: PgServer, tmp_path: Path
) -> None:
    schema = fresh_schema()
    (tmp_path / "dsn").write_text(pg_server.dsn)
    opts = parse_args(["--sizes", "0,400", "--players", "20", "--postgres-dsn-file", str(tmp_path / "dsn")])
    await seed(seeding_store(opts, tmp_path / "unused.db", schema), tmp_path / "unused.db", 400, 20, 100)
    conn = await asyncpg.connect(pg_server.dsn)
    try:
        stats = "SELECT relname, last_vacuum, last_analyze FROM pg_stat_user_tables WHERE schemaname = $1"
        before = await conn.fetch(stats, schema)
        assert before and all(row["last_vacuum"] is None for row in before)  # nothing vacuumed them yet
        checkpoints = "SELECT checkpoints_req FROM pg_stat_bgwriter"
        requested_before = await conn.fetchval(checkpoints)
        other = fresh_schema()  # another run's schema on the same server: left alone
        await seed(seeding_store(opts, tmp_path / "unused.db", other), tmp_path / "unused.db", 400, 20, 100)
        settled = await settle_postgres(pg_server.dsn, schema)
        assert settled["checkpointed"] is True and settled["vacuum_analyze_s"] >= 0
        after = {row["relname"]: row for row in await conn.fetch(stats, schema)}
        for table in ("journal", "bets", "accounts", "tx_summaries"):
            assert after[table]["last_vacuum"] is not None and after[table]["last_analyze"] is not None, table
        assert await conn.fetchval(checkpoints) > requested_before
        left_alone = await conn.fetch(stats, other)
        assert left_alone and all(row["last_vacuum"] is None for row in left_alone)
    finally:
        await conn.close()


async def test_a_postgres_schema_seeded_by_an_earlier_run_is_measured_again(
    pg_server: PgServer, tmp_path: Path
) -> None:
    schema = fresh_schema()
    (tmp_path / "dsn").write_text(pg_server.dsn)
    earlier = tmp_path / "earlier"
    (earlier / "400").mkdir(parents=True)
    ServiceConfig("ledger", {"backend": "postgres", "postgres_schema": schema}).write(earlier / "400" / "ledger.toml")
    args = ["--sizes", "0,400", "--players", "20", "--postgres-dsn-file", str(tmp_path / "dsn")]
    opts = parse_args([*args, "--seeded", str(earlier)])
    await seed(seeding_store(opts, tmp_path / "unused.db", schema), tmp_path / "unused.db", 400, 20, 100)
    assert earlier_schema(opts, "400") == schema
    assert earlier_schema(opts, "1m") is None  # that run held no such size
    assert earlier_schema(parse_args(args), "400") is None  # no --seeded: seeded afresh
    assert earlier_schema(parse_args(["--sizes", "0,400", "--seeded", str(earlier)]), "400") is None  # SQLite
    # A config that lies about its schema (an SQL fragment, not a name) is refused by the store's own rule.
    liar = tmp_path / "liar"
    (liar / "400").mkdir(parents=True)
    hostile = 'x"; DROP SCHEMA public CASCADE; --'
    ServiceConfig("ledger", {"backend": "postgres", "postgres_schema": hostile}).write(liar / "400" / "ledger.toml")
    with pytest.raises(ValueError, match="not a plain lower-case SQL name"):
        earlier_schema(parse_args([*args, "--seeded", str(liar)]), "400")
    reused = await reuse_seeded_schema(opts, schema, 400)
    assert reused["seeded_entries"] == 400 and reused["seed_reused_from"] == schema
    with pytest.raises(RuntimeError, match="fewer than"):
        await reuse_seeded_schema(opts, schema, 401)


def test_the_writers_side_of_a_load_counts_only_what_happened_between_the_two_scrapes() -> None:
    registry = CollectorRegistry()
    metrics = LedgerMetrics(registry)

    def scrape() -> list[Sample]:
        return samples_of(generate_latest(registry).decode())

    metrics.commit_duration_seconds.observe(0.3)  # before the load: not counted
    before = scrape()
    for seconds in (0.004, 0.03, 0.06, 0.2):
        metrics.commit_duration_seconds.observe(seconds)
    metrics.commit_batch_size.observe(10)
    metrics.commit_batch_size.observe(30)
    figures = store_figures(before, scrape())
    assert figures["commits"] == {
        "count": 4,
        "mean": 0.0735,
        "over_10ms": 3,
        "over_25ms": 3,
        "over_50ms": 2,
        "over_100ms": 1,
    }
    assert figures["commit_group"] == {"count": 2, "mean": 20.0}
    assert figures["wal_checkpoints"]["count"] == 0 and figures["wal_checkpoints"]["mean"] is None
    assert figures["wal_checkpoint_writer"]["count"] == 0


def _load(ok: int, p99_ms: float) -> WrkResult:
    latency = {"mean": 1.0, "max": p99_ms, "p50": 1.0, "p90": 1.0, "p99": p99_ms, "p999": p99_ms}
    return WrkResult(10.0, ok, {201: ok}, {}, latency, None)


def test_of_several_loads_the_one_of_median_throughput_is_reported_with_its_own_latencies() -> None:
    slow_stall, fast, middle = _load(20_000, 90.0), _load(32_000, 30.0), _load(30_000, 40.0)

    def throughput(load: WrkResult) -> float:  # what bench/ledger_scale.py picks its load by
        return load.ok_per_s

    assert median_by([slow_stall, fast, middle], throughput) is middle
    assert median_by([fast, slow_stall], throughput) is slow_stall  # of an even count, the lower of the middle two
    assert median_by([fast], throughput) is fast
    assert parse_args(["--rounds", "3"]).rounds == 3
    for rounds in ("0", "10"):
        with pytest.raises(SystemExit):
            parse_args(["--rounds", rounds])


NO_CLUSTER = cast(Cluster, object())  # never used: the gauge it would be read from is replaced


async def test_the_measured_loads_wait_for_the_start_up_chain_audit_to_end(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger publishes its last verified time when its first audit ends: NaN until then."""
    published = iter([math.nan, math.nan, 1.7e9])

    async def gauge(cluster: object, name: str) -> float:
        assert name == "ledger_audit_last_verified_timestamp_seconds"
        return next(published)

    monkeypatch.setattr(ledger_scale, "ledger_gauge", gauge)
    monkeypatch.setattr(ledger_scale, "AUDIT_POLL_S", 0.0)
    assert await startup_audit_ended(NO_CLUSTER) is not None
    assert next(published, None) is None  # polled until the audit ended, not past it

    async def never(cluster: object, name: str) -> float:
        return math.nan

    monkeypatch.setattr(ledger_scale, "ledger_gauge", never)
    monkeypatch.setattr(ledger_scale, "AUDIT_WAIT_MAX_S", 0.05)
    assert await startup_audit_ended(NO_CLUSTER) is None
