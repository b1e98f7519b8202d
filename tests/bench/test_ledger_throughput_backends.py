"""bench/ledger_throughput.py on both backends in one run: the PostgreSQL figures come from a
durable local PostgreSQL, are checked like SQLite's (chain, rebuild, one row per bet) and are
reported beside SQLite's with their ratio."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from common import process_tree_cpu_s
from core_ledger.store.postgres import PostgresStore
from ledger_throughput import BACKENDS, PG_SETTINGS, QUICK, Options, offline_check, parse_args, run, summarize
from ledger_writer import Bets, drive, seed, writer_service
from tests.support.local_postgres import PgServer, fresh_schema


def mode_figures(ok_per_s: float, p99_ms: float, cpu_ms: float, database_cpu_ms: float | None = None) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "ok_per_s": ok_per_s,
        "p50_ms": p99_ms / 2,
        "p99_ms": p99_ms,
        "server_cpu_ms_per_ok": cpu_ms,
        "errors": 0,
        "warmup_errors": 0,
    }
    if database_cpu_ms is not None:
        figures["database_cpu_ms_per_ok"] = database_cpu_ms
    return figures


def options(tmp_path: Path, **changes: Any) -> Options:
    base: dict[str, Any] = {
        "seconds": 1.0,
        "warmup_seconds": 1.0,
        "connections": 4,
        "threads": 1,
        "players": 10,
        "root": tmp_path,
        "keep_dir": True,
    }
    return Options(**{**base, **changes})


def test_the_summary_reports_postgres_beside_sqlite_with_their_ratio(tmp_path: Path) -> None:
    sqlite = {"ledger": mode_figures(2000.0, 20.0, 0.5), "batch": mode_figures(10_000.0, 90.0, 0.2)}
    pg = {"ledger": mode_figures(1800.0, 24.0, 0.6, 0.3), "batch": mode_figures(12_000.0, 80.0, 0.25, 0.1)}
    summary = summarize(sqlite, options(tmp_path, modes=("ledger", "batch")), 0.1, pg)
    assert summary["bets_per_s"] == 2000.0 and summary["cpu_ms_per_bet"] == 0.5  # SQLite's keys are kept
    assert (summary["pg_bets_per_s"], summary["pg_p50_ms"], summary["pg_p99_ms"]) == (1800.0, 12.0, 24.0)
    assert summary["pg_cpu_ms_per_bet"] == 0.6 and summary["pg_database_cpu_ms_per_bet"] == 0.3
    assert summary["pg_total_cpu_ms_per_bet"] == 0.9
    assert summary["ratio_pg_vs_sqlite"] == 0.9 and summary["targets_met"]["pg_vs_sqlite"] is True
    assert summary["pg_batch_bets_per_s"] == 12_000.0 and summary["ratio_pg_vs_sqlite_batch"] == 1.2
    assert summary["pg_hot_bets_per_s"] is None and summary["ratio_pg_vs_sqlite_hot"] is None
    assert summary["postgres_modes"] == pg and summary["setup"]["postgres_settings"] == PG_SETTINGS
    assert {k: PG_SETTINGS[k] for k in ("fsync", "synchronous_commit", "full_page_writes")} == dict.fromkeys(
        ("fsync", "synchronous_commit", "full_page_writes"), "on"
    )

    slower = {"ledger": mode_figures(1700.0, 24.0, 0.6, 0.3)}
    assert summarize(sqlite, options(tmp_path), 0.1, slower)["targets_met"]["pg_vs_sqlite"] is False
    # PostgreSQL alone: its figures, no ratio and no judgement of one
    alone = summarize({}, options(tmp_path, backends=("postgres",)), 0.1, slower)
    assert alone["pg_bets_per_s"] == 1700.0 and alone["ratio_pg_vs_sqlite"] is None and alone["bets_per_s"] is None
    assert "pg_vs_sqlite" not in alone["targets_met"]
    errors = {"ledger": {**mode_figures(1700.0, 24.0, 0.6, 0.3), "errors": 2}}
    assert summarize(sqlite, options(tmp_path), 0.1, errors)["errors"] == 2  # PostgreSQL's errors count too


def test_backends_and_quick_options(tmp_path: Path) -> None:
    both = parse_args(["--dir", str(tmp_path)])
    assert both.backends == BACKENDS and both.seconds == 10.0 and "noop" in both.modes
    quick = parse_args(["--quick", "--dir", str(tmp_path), "--seconds", "3"])
    assert quick.seconds == 3.0 and quick.players == QUICK["players"] and quick.modes == ("ledger", "batch")
    assert parse_args(["--backends", "postgres", "--dir", str(tmp_path)]).backends == ("postgres",)
    for wrong in ("mysql", "sqlite,sqlite", ""):
        with pytest.raises(SystemExit):
            parse_args(["--backends", wrong, "--dir", str(tmp_path)])


def test_the_ledger_and_the_noop_log_alike_at_info_by_default(tmp_path: Path) -> None:
    """The ledger's ratio to the no-op compares the same logging: both at the services' default."""
    assert parse_args(["--dir", str(tmp_path)]).log_level == "info"
    assert parse_args(["--dir", str(tmp_path), "--log-level", "warning"]).log_level == "warning"
    with pytest.raises(SystemExit):
        parse_args(["--dir", str(tmp_path), "--log-level", "loud"])


def test_process_tree_cpu_time_counts_a_child_that_ended() -> None:
    before = process_tree_cpu_s(os.getpid())
    burn = "import time\nt = time.process_time() + 0.2\nwhile time.process_time() < t: pass"
    subprocess.run([sys.executable, "-c", burn], check=True, timeout=30)  # waited for: its time is ours
    assert process_tree_cpu_s(os.getpid()) - before >= 0.2


async def test_offline_check_on_postgres_finds_a_derived_row_that_differs_from_the_journal(
    pg_server: PgServer,
) -> None:
    schema = fresh_schema()
    service = writer_service(PostgresStore(pg_server.dsn, schema=schema))
    await service.start()
    try:
        await seed(service, 3)
        await drive(service, Bets(3, "run", 1), 12)
    finally:
        await service.stop()

    def stored() -> PostgresStore:
        return PostgresStore(pg_server.dsn, schema=schema, allow_migration=False, create=False)

    check = await offline_check(stored())
    assert check["offline_chain_ok"] and check["tables_equal_rebuild"] and check["one_row_per_bet"]
    assert check["bet_rows"] == check["journaled_bets"] == 12
    store = stored()
    await store.open()
    try:
        await store.replace_derived({"accounts": {("player:bench-p0:EUR",): {"balance_minor": 1, "version": 1}}})
    finally:
        await store.close()
    assert (await offline_check(stored()))["tables_equal_rebuild"] is False


@pytest.mark.slow
async def test_a_short_run_measures_and_verifies_the_ledger_on_sqlite_and_postgres(tmp_path: Path) -> None:
    summary = await run(options(tmp_path / "run", modes=("ledger",)))
    assert summary["errors"] == 0, summary
    sqlite, pg = summary["modes"]["ledger"], summary["postgres_modes"]["ledger"]
    for figures in (sqlite, pg):
        verify = figures["verify"]
        assert verify["chain_ok"] and verify["commits_match"] and verify["offline_chain_ok"]
        assert verify["tables_equal_rebuild"] and verify["one_row_per_bet"]
        assert verify["committed_201_seen"] > 0 and figures["server_cpu_ms_per_ok"] > 0
    assert "database_cpu_ms_per_ok" not in sqlite and pg["database_cpu_ms_per_ok"] > 0
    assert summary["pg_bets_per_s"] == pg["ok_per_s"] > 0 and summary["bets_per_s"] == sqlite["ok_per_s"] > 0
    assert summary["ratio_pg_vs_sqlite"] == round(pg["ok_per_s"] / sqlite["ok_per_s"], 3)
    assert summary["pg_p99_ms"] == pg["p99_ms"] and summary["pg_cpu_ms_per_bet"] == pg["server_cpu_ms_per_ok"]
    # the ledger ran on a PostgreSQL of its own (its DSN file), stopped after the checks
    assert (tmp_path / "run" / "ledger-postgres" / "secrets" / "postgres.dsn").is_file()
    assert not (tmp_path / "run" / "ledger" / "secrets" / "postgres.dsn").exists()
