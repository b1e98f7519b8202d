"""A throwaway PostgreSQL 15 for the ledger tests, started once per test session (the `pg_server`
fixture of tests/ledger/conftest.py) by `harness.postgres.LocalPostgres` (the one way Croupier
starts a local PostgreSQL).

It runs in a fresh temp dir on a free 127.0.0.1 port and is stopped and deleted at the end of the
session. fsync is off here: these tests check semantics, not crash durability, on a shared box
(`croupier up --backend postgres` and the HA tests run durable). Each store gets its own schema,
so tests never see each other's rows. No skip: a PostgreSQL that cannot start fails the tests that
need it, saying why.
"""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from core_ledger.store.postgres import PostgresLimits, PostgresStore
from harness.postgres import DB_USER, DURABLE_SETTINGS, LocalPostgres, PostgresFailed

FAST_SETTINGS = {
    **DURABLE_SETTINGS,
    "fsync": "off",
    "full_page_writes": "off",
    "synchronous_commit": "off",
    "max_connections": "60",
}
TEST_LIMITS = PostgresLimits(pool_size_max=4)


@dataclass(frozen=True)
class PgServer:
    port: int
    password: str = field(repr=False)

    @property
    def dsn(self) -> str:
        return f"postgresql://{DB_USER}:{self.password}@127.0.0.1:{self.port}/postgres"


def fresh_schema() -> str:
    return f"t_{secrets.token_hex(6)}"


def postgres_store(server: PgServer) -> PostgresStore:
    """A store of its own (a new schema) on the session's server."""
    return PostgresStore(server.dsn, TEST_LIMITS, schema=fresh_schema())


@contextmanager
def running_postgres() -> Iterator[PgServer]:
    """A running PostgreSQL until the block ends, then stopped and removed (the `pg_server` fixture
    of tests/ledger/conftest.py holds one for the whole session)."""
    server = LocalPostgres(Path(tempfile.mkdtemp(prefix="croupier-pg-")), settings=FAST_SETTINGS)
    try:
        try:
            server.start()
        except PostgresFailed as e:
            pytest.fail(str(e), pytrace=False)
        assert server.port is not None
        yield PgServer(server.port, server.password)
    finally:
        try:
            server.stop()
        finally:
            shutil.rmtree(server.root, ignore_errors=True)
