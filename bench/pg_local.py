"""The PostgreSQL the benchmarks run the ledger on: durable as in production (fsync on,
synchronous_commit on, full_page_writes on), started by `harness/postgres.py` (the one way
Croupier starts a local PostgreSQL) on a free loopback port.

`BENCH_SETTINGS` are its server settings: the harness's durable ones with PostgreSQL's own default
shared_buffers (128MB) rather than the small one of a dev cluster. `ledger_throughput.py` starts
one per ledger mode with them; `local_postgres(root)` is a context manager yielding the DSN of one
in `root`, stopped at the end (the caller removes `root`). The tests start theirs with fsync off
(tests/support/local_postgres.py: they check semantics); a benchmark pays for durability like the
SQLite store does.

`start_with_warm_wal` starts one with the WAL segments a server in service has. A new server has
none to recycle: each time its WAL moves past the last segment, the backend writing it creates the
next one, zero-fills all 16 MiB and fsyncs it, and every commit waits meanwhile. Under the ledger
mode that was every 1.5 s or so, and it was the PostgreSQL p99: two pairs of runs gave 38.5 and
30.4 ms on new servers (8 and 9 segments made during the run) against 27.3 and 23.4 ms with the
segments made and recycled beforehand (none made during the run), at 3,292 and 3,723 bets/s
against 3,751 and 4,017. A server in service recycles the segments each checkpoint frees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg

from harness.postgres import DURABLE_SETTINGS, LocalPostgres

BENCH_SETTINGS = {**DURABLE_SETTINGS, "shared_buffers": "128MB"}
# Rows of about 1 KiB written (then dropped and checkpointed) before any measured run: ~384 MiB of
# WAL, 24 segments left to recycle, more than the longest mode writes (about 10); about 1 s here.
WARM_WAL_ROWS = 400_000


async def warm_wal(dsn: str) -> None:
    """Write WAL enough for a measured run, drop what was written, and checkpoint: the server then
    recycles those segments during the run instead of making new ones."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "CREATE TABLE bench_wal_warmup AS SELECT g, repeat('x', 900) AS pad "
            f"FROM generate_series(1, {WARM_WAL_ROWS}) AS g"
        )
        await conn.execute("DROP TABLE bench_wal_warmup")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def start_with_warm_wal(server: LocalPostgres) -> None:
    """Start `server` and warm its WAL (`warm_wal`); outside any running event loop (a thread)."""
    server.start()
    asyncio.run(warm_wal(server.dsn))


@contextmanager
def local_postgres(root: Path) -> Iterator[str]:
    """initdb into `root`, start, yield the DSN; stopped at the end."""
    server = LocalPostgres(root, settings=BENCH_SETTINGS)
    try:
        start_with_warm_wal(server)
        yield server.dsn
    finally:
        server.stop()
