"""bench/ledger_writer.py: its figures come from real commits and name the event-loop thread."""

from __future__ import annotations

from pathlib import Path

import pytest

from core_ledger.store import SqliteStore
from ledger_writer import Bets, drive, run, seed, verify, writer_service
from tests.support.local_postgres import PgServer, postgres_store


async def test_writer_bench_commits_every_bet_and_reports_cpu_and_bytes_per_bet(tmp_path: Path) -> None:
    figures = await run(1000, 20, tmp_path, warmup=100)
    # 1 jackpot + 20 players + 20 deposits + 100 warm-up bets + 1000 measured bets, all journaled
    assert figures["head_sequence"] == 1 + 20 + 20 + 100 + 1000
    assert figures["bets"] == 1000 and figures["bets_per_s"] > 0
    # Real writes: at least each bet's journal entry as stored (its derived rows, held behind the
    # journal and written many groups at a time, add less than a page per bet in this small shape).
    assert figures["written_kib_per_bet"] * 1024 > figures["stored_bytes_per_entry"]["journal"]
    assert "loop" in figures["threads"] and figures["cpu_ms_per_bet"] >= 0
    assert figures["verify"] == {
        "ok": True,
        "chain_ok": True,
        "entries_checked": 1141,
        "tables_equal_rebuild": True,
        "bet_rows": 1100,
    }
    stored = figures["stored_bytes_per_entry"]  # where the rows went, largest first
    # A journal entry is stored deflated (about 0.26 KiB of its 1 KiB: core_ledger/store/sqlite_entries.py).
    assert 100 < stored["journal"] < 500 and stored["bets"] > 100, stored
    assert list(stored.values()) == sorted(stored.values(), reverse=True)


async def test_writer_bench_takes_the_hot_shape_few_players_few_submitters(tmp_path: Path) -> None:
    figures = await run(1000, 5, tmp_path, warmup=50, concurrency=4)
    assert figures["concurrency"] == 4 and figures["players"] == 5
    assert figures["head_sequence"] == 1 + 5 + 5 + 50 + 1000
    assert figures["verify"]["ok"] and figures["verify"]["bet_rows"] == 1050


async def test_writer_bench_verification_catches_a_derived_row_that_differs_from_the_journal(tmp_path: Path) -> None:
    service = writer_service(SqliteStore(tmp_path / "ledger.db"))
    await service.start()
    try:
        await seed(service, 3)
        await drive(service, Bets(3, "run", 1), 10)
        await verify(service, 3, 10)  # as written: it verifies
        wrong = {("player:bench-p0:EUR",): {"balance_minor": 1, "version": 1}}
        await service.store.replace_derived({"accounts": wrong})
        with pytest.raises(RuntimeError, match="differing from the journal"):
            await verify(service, 3, 10)
    finally:
        await service.stop()


async def test_writer_bench_runs_and_verifies_on_postgres(pg_server: PgServer, tmp_path: Path) -> None:
    figures = await run(200, 5, tmp_path, warmup=20, store=postgres_store(pg_server))
    assert figures["head_sequence"] == 1 + 5 + 5 + 20 + 200
    assert figures["verify"]["ok"] and figures["verify"]["bet_rows"] == 220


async def test_writer_bench_times_the_writers_steps_in_place_and_puts_them_back(tmp_path: Path) -> None:
    import core_ledger.writer
    from step_times import WRITER_STEPS

    decide = core_ledger.writer.decide
    figures = await run(1000, 20, tmp_path, warmup=100, steps=True)
    steps = figures["steps_per_bet"]
    assert list(steps) == [s.label for s in WRITER_STEPS]
    # Counted over the measured bets only: one decision and one seal each, none of the warm-up's.
    assert steps["decide"]["calls"] == steps["sealed"]["calls"] == steps["journal entry deflated"]["calls"] == 1000
    assert steps["commit (_commit_sync)"]["calls"] >= 1000 // 64  # groups of at most the bets in flight
    assert all(step["us_per_bet"] > 0 for label, step in steps.items() if step["calls"])
    # A step includes the steps under it.
    assert steps["evolve"]["us_per_bet"] >= steps["render (the answer)"]["us_per_bet"]
    assert steps["commit (_commit_sync)"]["us_per_bet"] >= steps["journal entry deflated"]["us_per_bet"]
    assert core_ledger.writer.decide is decide  # the wrappers are gone after the run
    assert "steps_per_bet" not in await run(1000, 20, tmp_path / "plain", warmup=100)
