"""Schema versions of the stores and the plan that moves a store forward (no I/O here).

Every store (ledger SQLite, ledger PostgreSQL, edge SQLite) records one integer: its schema
version. The code knows a list of numbered migrations, 1..N, each a list of statements that run in
ONE transaction together with the new version number, so a failed migration leaves the store at
the version it had. Version 1 is the schema as it was before versions were recorded; its
statements are idempotent (`IF NOT EXISTS`), so a store holding those tables without a recorded
version (version 0, not empty) is adopted in place by running them.

`plan` decides what to do with a store found at `stored`:
- newer than the code knows: refused (`SchemaTooNew`), nothing is changed; downgrades are not
  supported, a newer binary must run it;
- empty (a first start): every migration, whatever `allowed` says (there is nothing to protect);
- unversioned but not empty (version 0): migration 1 ADOPTS it, whatever `allowed` says: it only
  records what is there (older releases never read the version, so they can still open it);
- behind: the missing migrations when `allowed`, else refused (`SchemaBehind`) with a message
  telling the operator to run `croupier <service> migrate`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int
    summary: str
    statements: tuple[str, ...]


class SchemaVersionError(Exception):
    """The store's recorded schema version does not fit this code; nothing was changed."""

    def __init__(self, message: str, *, store: str, stored: int, code: int) -> None:
        super().__init__(message)
        self.store, self.stored, self.code = store, stored, code


class SchemaTooNew(SchemaVersionError):
    """The store was written by newer code (its version is above every migration known here)."""


class SchemaBehind(SchemaVersionError):
    """The store needs migrations and this start may not run them (`migrate_on_start = false`)."""


def latest(migrations: Sequence[Migration]) -> int:
    """The schema version this code writes: the last migration's (migrations are 1..N in order)."""
    if [m.version for m in migrations] != list(range(1, len(migrations) + 1)):
        raise ValueError("migrations must be numbered 1..N in order, without a gap")
    return len(migrations)


@dataclass(frozen=True)
class Plan:
    stored: int  # the version found (0: none recorded)
    target: int  # the version the store will have
    steps: tuple[Migration, ...]  # what to run, in order (empty: up to date)


def plan(
    migrations: Sequence[Migration], stored: int, *, empty: bool, allowed: bool, store: str, migrate_command: str
) -> Plan:
    """What to run on a store found at version `stored` (see the module docstring)."""
    code = latest(migrations)
    if stored > code:
        raise SchemaTooNew(
            f"{store} has schema version {stored}, newer than this code's {code}: run the croupier release that "
            f"wrote it (or a later one); downgrades are not supported",
            store=store,
            stored=stored,
            code=code,
        )
    steps = tuple(m for m in migrations if m.version > stored)
    changing = [m for m in steps if m.version > max(stored, 1)]  # adopting (0 -> 1) changes no schema
    if changing and not allowed and not empty:
        raise SchemaBehind(
            f"{store} has schema version {stored}, behind this code's {code}: stop the service, take a backup and "
            f"run `{migrate_command}` (or set migrate_on_start = true)",
            store=store,
            stored=stored,
            code=code,
        )
    return Plan(stored, code, steps)
