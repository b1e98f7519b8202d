"""`croupier ledger verify | rebuild | compare | backup | restore` on PostgreSQL: a location is a
SQLite file, a ledger config (its backend) or a postgresql:// DSN (the password from PGPASSWORD,
never on the command line); printed names never show a password."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core_ledger import config as ledger_config_module
from core_ledger.app import create_app
from tests.support.clock import FakeClock
from tests.support.ledger import Api, bet, ledger_config
from tests.support.local_postgres import PgServer, fresh_schema

CLI_TIMEOUT_S = 60.0
BETS = 6


async def _cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    """`croupier ledger ...` in its own process: exit code, last JSON line of stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "croupier",
        "ledger",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    lines = out.decode().strip().splitlines()
    return proc.returncode or 0, (json.loads(lines[-1]) if lines else {}), err.decode()


def _config_file(tmp_path: Path, dsn: str, schema: str) -> Path:
    (tmp_path / "pg.dsn").write_text(dsn + "\n")
    path = tmp_path / "ledger.toml"
    path.write_text(
        f'[ledger]\ndata_dir = "data"\nbackend = "postgres"\npostgres_dsn_file = "pg.dsn"\n'
        f'postgres_schema = "{schema}"\npostgres_pool_size_max = 2\n'
        f'backup_dir = "{tmp_path / "backups"}"\n'
    )
    return path


@pytest.fixture
async def pg_ledger(aiohttp_client: Any, pg_server: PgServer, tmp_path: Path) -> tuple[Path, str]:
    """A PostgreSQL ledger with a deposit and some bets, then stopped: its config file and schema."""
    schema = fresh_schema()
    toml = _config_file(tmp_path, pg_server.dsn, schema)
    cfg = replace(ledger_config_module.load(toml), tokens=ledger_config(tmp_path).tokens)
    client = await aiohttp_client(create_app(cfg, clock=FakeClock()))
    api = Api(client)
    await api.player(deposit=1000)
    for i in range(BETS):
        assert (await api.post("edge", "/v1/bets", bet(f"b{i}", 10)))[0] == 201
    await client.close()
    return toml, schema


def _passwordless(server: PgServer) -> tuple[str, dict[str, str]]:
    return f"postgresql://croupier@127.0.0.1:{server.port}/postgres", {"PGPASSWORD": server.password}


async def test_verify_rebuild_and_compare_take_a_config_or_a_dsn(pg_server: PgServer, pg_ledger: Any) -> None:
    toml, schema = pg_ledger
    dsn, env = _passwordless(pg_server)
    code, by_config, _ = await _cli("verify", str(toml))
    assert code == 0 and by_config["ok"] and by_config["entries_checked"] == BETS + 2, by_config
    code, by_dsn, _ = await _cli("verify", dsn, "--postgres-schema", schema, env=env)
    assert code == 0 and by_dsn == by_config
    code, rebuilt, _ = await _cli("rebuild", dsn, "--postgres-schema", schema, env=env)
    assert code == 0 and rebuilt["rebuilt"] and rebuilt["rows"]["accounts"] >= 1, rebuilt
    code, compared, verdict = await _cli("compare", str(toml), dsn, "--postgres-schema", schema, env=env)
    assert code == 0 and compared["same"] is True, compared
    # A password in a DSN location is never printed back.
    full = dsn.replace("croupier@", f"croupier:{pg_server.password}@")
    code, compared, verdict = await _cli("compare", str(toml), full, "--postgres-schema", schema)
    assert code == 0 and pg_server.password not in json.dumps(compared) + verdict


async def test_verify_of_a_postgres_ledger_finds_a_tampered_entry(pg_server: PgServer, pg_ledger: Any) -> None:
    toml, schema = pg_ledger
    conn = await asyncpg.connect(pg_server.dsn, server_settings={"search_path": schema})
    try:  # an operator with superuser rights goes around the append-only trigger
        await conn.execute("ALTER TABLE journal DISABLE TRIGGER journal_no_change")
        await conn.execute(
            "UPDATE journal SET entry = replace(entry, '\"amount_minor\":10', '\"amount_minor\":1') WHERE sequence = 4"
        )
    finally:
        await conn.close()
    code, report, _ = await _cli("verify", str(toml))
    assert code == 1 and not report["ok"] and report["first_bad_sequence"] == 4, report
    code, report, _ = await _cli("rebuild", str(toml))
    assert code == 1 and not report["rebuilt"]


async def test_backup_of_postgres_restores_into_a_fresh_postgres_schema_and_verifies(
    pg_server: PgServer, pg_ledger: Any, tmp_path: Path
) -> None:
    toml, _ = pg_ledger
    code, manifest, _ = await _cli("backup", "--config", str(toml))
    assert code == 0 and manifest["source_backend"] == "postgres" and manifest["head_sequence"] == BETS + 2
    (tmp_path / "target.dsn").write_text(pg_server.dsn)
    target = fresh_schema()
    code, restored, _ = await _cli(
        "restore", manifest["path"], "--to-postgres-dsn-file", str(tmp_path / "target.dsn"), "--postgres-schema", target
    )
    assert code == 0 and restored["head_hash"] == manifest["head_hash"], restored
    assert restored["derived_tables_differ"] == []
    dsn, env = _passwordless(pg_server)
    code, report, _ = await _cli("verify", dsn, "--postgres-schema", target, env=env)
    assert code == 0 and report["head_hash"] == manifest["head_hash"]
    code, again, _ = await _cli(
        "restore", manifest["path"], "--to-postgres-dsn-file", str(tmp_path / "target.dsn"), "--postgres-schema", target
    )
    assert code == 1 and not again["restored"]  # restore only fills an empty ledger


async def test_a_location_that_names_no_ledger_is_refused_and_nothing_is_created(
    pg_server: PgServer, tmp_path: Path
) -> None:
    code, _, err = await _cli("verify", str(tmp_path / "missing.db"))
    assert code == 2 and "postgresql:// DSN" in err
    dsn, env = _passwordless(pg_server)
    schema = fresh_schema()
    for command in ("verify", "rebuild"):
        code, _, err = await _cli(command, dsn, "--postgres-schema", schema, env=env)
        assert code == 2 and "no ledger in the PostgreSQL schema" in err, err
    conn = await asyncpg.connect(pg_server.dsn)
    try:
        assert not await conn.fetchval("SELECT 1 FROM pg_namespace WHERE nspname = $1", schema)
    finally:
        await conn.close()
