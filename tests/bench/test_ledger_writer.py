"""bench/ledger_writer.py: its figures come from real commits and name the event-loop thread."""

from __future__ import annotations

from pathlib import Path

from ledger_writer import run


async def test_writer_bench_commits_every_bet_and_reports_cpu_and_bytes_per_bet(tmp_path: Path) -> None:
    figures = await run(1000, 20, tmp_path, warmup=100)
    # 1 jackpot + 20 players + 20 deposits + 100 warm-up bets + 1000 measured bets, all journaled
    assert figures["head_sequence"] == 1 + 20 + 20 + 100 + 1000
    assert figures["bets"] == 1000 and figures["bets_per_s"] > 0
    assert figures["written_kib_per_bet"] > 1  # a journal entry alone is about 1 KiB
    assert "loop" in figures["threads"] and figures["cpu_ms_per_bet"] >= 0
