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
from ledger_throughput import (
    BACKENDS,
    PG_SETTINGS,
    QUICK,
    Options,
    median_round,
    offline_check,
    parse_args,
    run,
    summarize,
)
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
    assert both.fronts == min(1, (os.cpu_count() or 1) - 1)  # as deployed on this machine
    assert parse_args(["--fronts", "0", "--dir", str(tmp_path)]).fronts == 0
    with pytest.raises(SystemExit):
        parse_args(["--fronts", "5", "--dir", str(tmp_path)])


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
        # the writer's side of the same window, from the ledger's own histograms: every bet journaled
        # in it was in one of the commits counted
        commits, groups = figures["store"]["commits"], figures["store"]["commit_group"]
        assert commits["count"] == groups["count"] > 0 and commits["mean"] > 0
        assert abs(groups["count"] * groups["mean"] - verify["journal_growth"]) < 1
    assert "database_cpu_ms_per_ok" not in sqlite and pg["database_cpu_ms_per_ok"] > 0
    assert summary["pg_bets_per_s"] == pg["ok_per_s"] > 0 and summary["bets_per_s"] == sqlite["ok_per_s"] > 0
    assert summary["ratio_pg_vs_sqlite"] == round(pg["ok_per_s"] / sqlite["ok_per_s"], 3)
    assert summary["pg_p99_ms"] == pg["p99_ms"] and summary["pg_cpu_ms_per_bet"] == pg["server_cpu_ms_per_ok"]
    # the ledger ran on a PostgreSQL of its own (its DSN file), stopped after the checks
    assert (tmp_path / "run" / "ledger-postgres" / "secrets" / "postgres.dsn").is_file()
    assert not (tmp_path / "run" / "ledger" / "secrets" / "postgres.dsn").exists()


async def test_a_short_run_with_a_front_process_measures_and_verifies_alike(short_dir: Path) -> None:
    # short_dir: the ledger's private socket to its front lives in its data dir (107 bytes at most)
    summary = await run(options(short_dir / "run", modes=("ledger", "batch"), backends=("sqlite",), fronts=1))
    assert summary["errors"] == 0 and summary["setup"]["ledger_fronts"] == 1, summary
    for name in ("ledger", "batch"):
        verify = summary["modes"][name]["verify"]
        assert verify["chain_ok"] and verify["commits_match"] and verify["tables_equal_rebuild"], verify
    # The front served the bets (its own log lines) and handed them to the ledger process.
    log = (short_dir / "run" / "ledger" / "ledger.log").read_text()
    assert '"service":"ledger-front"' in log and '"event":"ledger_front_started"' in log


def test_each_mode_reports_its_round_of_median_throughput() -> None:
    rounds = [
        {"noop": mode_figures(9000.0, 5.0, 0.1), "ledger": mode_figures(3000.0, 30.0, 0.3)},
        {"noop": mode_figures(5000.0, 9.0, 0.2), "ledger": mode_figures(3400.0, 28.0, 0.3)},  # a burst hit the no-op
        {"noop": mode_figures(8800.0, 6.0, 0.1), "ledger": mode_figures(1500.0, 90.0, 0.5)},  # ...and the ledger
    ]
    median = median_round(rounds)
    assert median["noop"] is rounds[2]["noop"] and median["ledger"] is rounds[0]["ledger"]  # real runs, whole
    assert median_round(rounds[:2])["noop"] is rounds[1]["noop"]  # an even count: the lower middle
    assert median_round([]) == {}


@pytest.mark.slow
async def test_rounds_run_every_mode_over_in_directories_of_their_own(tmp_path: Path) -> None:
    summary = await run(options(tmp_path / "run", modes=("noop",), backends=("sqlite",), rounds=2))
    assert summary["errors"] == 0 and len(summary["rounds"]) == 2, summary
    assert all(r["noop"]["ok_per_s"] > 0 for r in summary["rounds"])
    assert summary["modes"]["noop"]["ok_per_s"] == min(r["noop"]["ok_per_s"] for r in summary["rounds"])
    assert (tmp_path / "run" / "round-1" / "noop").is_dir() and (tmp_path / "run" / "round-2" / "noop").is_dir()
    assert parse_args(["--dir", str(tmp_path), "--rounds", "3"]).rounds == 3
    for wrong in ("0", "10"):
        with pytest.raises(SystemExit):
            parse_args(["--dir", str(tmp_path), "--rounds", wrong])


async def test_an_error_in_a_round_not_reported_still_fails_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = iter(
        [
            ({"ledger": {**mode_figures(1000.0, 30.0, 0.3), "errors": 3}}, {}),  # the slowest round: not the median
            ({"ledger": mode_figures(3000.0, 30.0, 0.3)}, {}),
            ({"ledger": mode_figures(3100.0, 30.0, 0.3)}, {}),
        ]
    )

    async def fake_round(opts: Options) -> Any:
        return next(results)

    monkeypatch.setattr("ledger_throughput.run_round", fake_round)
    summary = await run(options(tmp_path, modes=("ledger",), backends=("sqlite",), rounds=3))
    assert summary["bets_per_s"] == 3000.0  # the median round's figures...
    assert summary["errors"] == 3  # ...and every round's errors
    assert [r["ledger"]["ok_per_s"] for r in summary["rounds"]] == [1000.0, 3000.0, 3100.0]
