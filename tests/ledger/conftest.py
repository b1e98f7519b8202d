"""Fixtures for ledger tests: a controllable clock, an app on loopback, a store of every backend.
The helpers they use live in tests/support/ledger.py and tests/support/clock.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from core_ledger.config import LedgerConfig
from core_ledger.http import create_app
from core_ledger.store import MemoryStore, SqliteStore, Store
from tests.ledger.pg import pg_server, postgres_store  # noqa: F401 (one PostgreSQL per session for every ledger module)
from tests.support.clock import FakeClock
from tests.support.ledger import NAMES, ROLES, TOKENS, Api, ledger_config

# tests/ledger/procs.py still imports the credentials from here (until it moves to tests/support).
__all__ = ["NAMES", "ROLES", "TOKENS"]

STORE_BACKENDS: dict[str, Callable[[Path, pytest.FixtureRequest], Store]] = {
    "memory": lambda _, __: MemoryStore(),
    "sqlite": lambda tmp, _: SqliteStore(tmp / "ledger.db"),
    "postgres": lambda _, request: postgres_store(request.getfixturevalue("pg_server")),
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def app_config(tmp_path: Path) -> LedgerConfig:
    return ledger_config(tmp_path / "data", page_limit_max=50, batch_actions_max=8, body_bytes_max=4096,
                         backup_dir=tmp_path / "backups")


@pytest.fixture
async def api(aiohttp_client: Any, app_config: LedgerConfig, clock: FakeClock) -> Api:
    return Api(await aiohttp_client(create_app(app_config, clock=clock)))


@pytest.fixture(params=sorted(STORE_BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """An open store of each backend in turn (memory, SQLite, PostgreSQL): one contract for all."""
    s = STORE_BACKENDS[request.param](tmp_path, request)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
