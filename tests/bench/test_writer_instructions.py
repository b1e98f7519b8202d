"""bench/writer_instructions.py: instructions per bet as the difference of two counted runs."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from writer_instructions import WARMUP_BETS, drive_writer, instructions_of, measure, per_bet

CACHEGRIND_SUMMARY = """==4242== Cachegrind, a high-precision tracing profiler
==4242== Command: python bench/writer_instructions.py --inner 500
==4242==
==4242== I   refs:      4,234,787,533
"""


def test_the_count_is_read_from_cachegrinds_summary() -> None:
    assert instructions_of(CACHEGRIND_SUMMARY) == 4_234_787_533
    with pytest.raises(RuntimeError, match="no instruction count"):
        instructions_of("==4242== Command: python\n")


def test_per_bet_is_the_difference_over_the_bets_between_the_runs() -> None:
    assert per_bet(4_234_787_533, 6_126_890_318, 2000) == 946_051
    with pytest.raises(RuntimeError, match="not a difference"):
        per_bet(6_126_890_318, 4_234_787_533, 2000)


@pytest.mark.parametrize("store", ["sqlite", "memory"])
async def test_the_counted_run_commits_every_bet_and_verifies(store: str) -> None:
    head = await drive_writer(store, players=3, concurrency=4, bets=40, check=True)
    assert head == 1 + 2 * 3 + WARMUP_BETS + 40  # the jackpot, each player created and funded, every bet


def _fake_valgrind(tmp_path: Path, *, exit_code: int = 0) -> tuple[Path, Path]:
    """A stand-in for valgrind: records its arguments and reports 1,000 instructions per bet of
    `--inner N` (plus a fixed start-up cost), as cachegrind's summary on stderr."""
    calls = tmp_path / "calls"
    fake = tmp_path / "valgrind"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {calls}\n'
        'while [ "$1" != "--inner" ]; do shift; done\n'
        'echo "==1== I   refs:      $(( $2 * 1000 + 77777 ))" >&2\n'
        f"exit {exit_code}\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return fake, calls


def test_measure_runs_the_shorter_and_the_longer_run_under_cachegrind(tmp_path: Path) -> None:
    fake, calls = _fake_valgrind(tmp_path)
    figures = measure("memory", players=7, concurrency=3, bets=2000, base=500, valgrind=str(fake))
    assert figures["instructions_per_bet"] == 1000
    assert (figures["instructions_shorter"], figures["instructions_longer"]) == (577_777, 2_577_777)
    shorter, longer = calls.read_text().splitlines()
    assert shorter.startswith("--tool=cachegrind --cache-sim=no ")
    assert "--inner 500 --store memory --players 7 --concurrency 3" in shorter
    assert "--inner 2500 --store memory --players 7 --concurrency 3" in longer


def test_a_failed_count_is_an_error_not_a_figure(tmp_path: Path) -> None:
    fake, _ = _fake_valgrind(tmp_path, exit_code=1)
    with pytest.raises(RuntimeError, match="exited 1"):
        measure("memory", players=7, concurrency=3, bets=2000, base=500, valgrind=str(fake))
