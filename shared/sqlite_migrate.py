"""Run the migration plan (`shared.migrations`) on a SQLite database: ledger and edge stores.

The version is SQLite's own header field `PRAGMA user_version`. The version is read, the plan made
and every step run inside ONE `BEGIN IMMEDIATE` transaction that also writes the new version, so
two processes opening one file never both migrate it and a failed step changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiosqlite
import structlog

from shared.migrations import Migration, Plan, plan

log = structlog.get_logger("croupier.schema")


async def _scalar(conn: aiosqlite.Connection, sql: str) -> int:
    async with conn.execute(sql) as cur:
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def stored_version(conn: aiosqlite.Connection) -> int:
    return await _scalar(conn, "PRAGMA user_version")


async def migrate(conn: aiosqlite.Connection, migrations: Sequence[Migration], *, allowed: bool, store: str,
                  migrate_command: str) -> Plan:
    """Bring the database to the code's schema version (or raise `SchemaVersionError`, changing
    nothing). `conn` must not be inside a transaction."""
    await conn.execute("BEGIN IMMEDIATE")
    try:
        stored = await stored_version(conn)
        empty = await _scalar(conn, "SELECT count(*) FROM sqlite_master WHERE type = 'table'") == 0
        steps = plan(migrations, stored, empty=empty, allowed=allowed, store=store, migrate_command=migrate_command)
        for step in steps.steps:
            for statement in step.statements:
                await conn.execute(statement)
        if steps.steps:
            await conn.execute(f"PRAGMA user_version = {int(steps.target)}")
        await conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            await conn.execute("ROLLBACK")
        raise
    if steps.steps:
        log.info("schema_migrated", store=store, from_version=steps.stored, to_version=steps.target,
                 steps=[f"{m.version}: {m.summary}" for m in steps.steps])
    return steps
