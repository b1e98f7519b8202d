"""bench/pg_local.py: the benchmarks' PostgreSQL starts with WAL segments to recycle, as a server in
service has them, so a measured run does not make (and zero-fill) new ones while commits wait."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from harness.postgres import LocalPostgres
from pg_local import BENCH_SETTINGS, start_with_warm_wal


def wal_segments(server: LocalPostgres) -> set[str]:
    return {p.name for p in (server.data_dir / "pg_wal").iterdir() if len(p.name) == 24}


async def test_a_bench_server_starts_with_wal_segments_to_recycle_and_nothing_left_of_the_warming(
    tmp_path: Path,
) -> None:
    server = LocalPostgres(tmp_path / "pg", settings=BENCH_SETTINGS)
    try:
        await asyncio.to_thread(start_with_warm_wal, server)  # as ledger_throughput.py starts it
        ready = wal_segments(server)
        assert len(ready) >= 16  # a new server has one or two
        conn = await asyncpg.connect(server.dsn)
        try:
            assert await conn.fetchval("SELECT to_regclass('bench_wal_warmup')") is None
            # Writes the size of a measured run land in segments already there.
            await conn.execute("CREATE TABLE t AS SELECT g, repeat('y', 900) AS pad FROM generate_series(1, 100000) g")
        finally:
            await conn.close()
        assert wal_segments(server) == ready
    finally:
        server.stop()
