"""Fixtures for ledger tests: a controllable clock, an app on loopback, a store of every backend.
The helpers they use live in tests/support/ledger.py and tests/support/clock.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from core_ledger.app import create_app
from core_ledger.config import LedgerConfig
from core_ledger.store import MemoryStore, SqliteStore, Store
from core_ledger.store.postgres import PostgresStore
from tests.support.clock import FakeClock
from tests.support.ledger import Api, ledger_config
from tests.support.local_postgres import TEST_LIMITS, PgServer, fresh_schema


def _same_memory_store() -> Callable[[], Store]:
    kept = MemoryStore()  # its storage is the object: a fresh open of it is the same object, reopened
    return lambda: kept


def _postgres_schema(request: pytest.FixtureRequest) -> Callable[[], Store]:
    server: PgServer = request.getfixturevalue("pg_server")
    schema = fresh_schema()
    return lambda: PostgresStore(server.dsn, TEST_LIMITS, schema=schema)


# Each backend: a maker of stores over ONE storage (a file, a schema), so a test can open it afresh.
BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], Callable[[], Store]]] = {
    "memory": lambda _, __: _same_memory_store(),
    "sqlite": lambda tmp, _: lambda: SqliteStore(tmp / "ledger.db"),
    "postgres": lambda _, request: _postgres_schema(request),
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def app_config(tmp_path: Path) -> LedgerConfig:
    return ledger_config(
        tmp_path / "data", page_limit_max=50, batch_actions_max=8, body_bytes_max=4096, backup_dir=tmp_path / "backups"
    )


@pytest.fixture
async def api(aiohttp_client: Any, app_config: LedgerConfig, clock: FakeClock) -> Api:
    return Api(await aiohttp_client(create_app(app_config, clock=clock)))


@pytest.fixture(params=sorted(BACKENDS))
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Store]:
    """A maker of stores over one storage of each backend in turn (memory, SQLite, PostgreSQL)."""
    return BACKENDS[request.param](tmp_path, request)


@pytest.fixture
async def store(storage: Callable[[], Store]) -> AsyncIterator[Store]:
    """An open store of each backend in turn: one contract for all."""
    s = storage()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """An open SQLite store in the test's own directory."""
    s = SqliteStore(tmp_path / "ledger.db")
    await s.open()
    try:
        yield s
    finally:
        await s.close()
