"""The PostgreSQL the benchmarks run the ledger on: durable as in production (fsync on,
synchronous_commit on, full_page_writes on), started by `harness/postgres.py` (the one way
Croupier starts a local PostgreSQL) on a free loopback port.

`BENCH_SETTINGS` are its server settings: the harness's durable ones with PostgreSQL's own default
shared_buffers (128MB) rather than the small one of a dev cluster. `ledger_throughput.py` starts
one per ledger mode with them; `local_postgres(root)` is a context manager yielding the DSN of one
in `root`, stopped at the end (the caller removes `root`). The tests start theirs with fsync off
(tests/support/local_postgres.py: they check semantics); a benchmark pays for durability like the
SQLite store does.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.postgres import DURABLE_SETTINGS, LocalPostgres

BENCH_SETTINGS = {**DURABLE_SETTINGS, "shared_buffers": "128MB"}


@contextmanager
def local_postgres(root: Path) -> Iterator[str]:
    """initdb into `root`, start, yield the DSN; stopped at the end."""
    server = LocalPostgres(root, settings=BENCH_SETTINGS)
    try:
        server.start()
        yield server.dsn
    finally:
        server.stop()
