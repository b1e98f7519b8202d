"""`croupier ledger serve | verify | rebuild | compare | migrate | backup | restore | verify-backup | keygen`."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog
import typer

from core_ledger.store import SqliteStore, StorageError, Store

if TYPE_CHECKING:
    from core_ledger.backup_format import Anchors


def _print(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value).decode() + "\n")


CANNOT_OPEN_EXIT = 2  # an offline command could not open a file (missing, or a schema it may not read)


POSTGRES_SCHEMES = ("postgresql://", "postgres://")
LOCATION_HELP = (
    "A SQLite ledger.db, the ledger's TOML config (its backend, SQLite or PostgreSQL), or a "
    "postgresql:// DSN (keep the password out of it: PGPASSWORD or ~/.pgpass; see --postgres-schema)"
)
CHECKPOINTS_OPTION = typer.Option(
    None,
    "--checkpoints",
    exists=True,
    dir_okay=False,
    help="NDJSON of signed checkpoints (GET /admin/v1/audit/checkpoints/export), kept off the ledger host",
)
PUBLIC_KEY_OPTION = typer.Option(
    None,
    "--public-key",
    exists=True,
    dir_okay=False,
    help="The checkpoint key's public half (PEM); required with --checkpoints",
)
POSTGRES_SCHEMA_OPTION = typer.Option(
    "public",
    "--postgres-schema",
    help="Schema of the ledger tables in a postgresql:// DSN given as a location (a config names its own).",
)


def store_at(location: str, *, postgres_schema: str = "public", migrate: bool = False) -> Store:
    """The store a command-line location names: a postgresql:// DSN, a ledger config file (.toml:
    the backend it configures), or a SQLite ledger file. BadParameter when it names none; a
    PostgreSQL schema without a ledger is refused when opened (StorageError), never created."""
    if location.startswith(POSTGRES_SCHEMES):
        from core_ledger.store.postgres import PostgresStore

        return PostgresStore(location, schema=postgres_schema, allow_migration=migrate, create=False)
    path = Path(location)
    if path.suffix == ".toml" and path.is_file():
        from dataclasses import replace

        from shared.config import ConfigError

        from core_ledger import config as ledger_config
        from core_ledger.app import store_for

        try:
            cfg = ledger_config.load(path)
        except ConfigError as e:
            raise typer.BadParameter(f"{path}: " + "; ".join(e.problems)) from None
        store = store_for(replace(cfg, migrate_on_start=migrate))
        if cfg.backend == "postgres":
            from core_ledger.store.postgres import PostgresStore

            assert isinstance(store, PostgresStore)
            store.create = False  # an offline tool never creates a ledger where it found none
        return store
    if not path.is_file():
        raise typer.BadParameter(f"{location} is not a ledger database, a ledger config or a postgresql:// DSN")
    return SqliteStore(path, allow_migration=migrate)


def _offline(
    locations: list[str],
    work: Callable[..., Awaitable[dict[str, Any]]],
    *,
    migrate: bool = False,
    postgres_schema: str = "public",
) -> dict[str, Any]:
    """Open each ledger (see `store_at`), run `work(*stores)`, close them all. Without `migrate` a
    store of an older schema version is refused, never migrated (a backup verified by a newer
    release must stay restorable by the release that wrote it); one without a version is only adopted."""
    from shared import logs

    opened = [store_at(location, postgres_schema=postgres_schema, migrate=migrate) for location in locations]
    logs.configure("info", service="ledger")  # JSON log lines (an adoption) on stderr: stdout is the report

    async def run() -> dict[str, Any]:
        stores: list[Store] = []
        try:
            for store in opened:
                await store.open()
                stores.append(store)
            return await work(*stores)
        finally:
            for store in stores:
                await store.close()

    try:
        return asyncio.run(run())
    except StorageError as e:
        sys.stderr.write(f"croupier ledger: {e}\n")
        raise typer.Exit(CANNOT_OPEN_EXIT) from None


def _shown(location: str) -> str:
    """A location as it may be printed: a DSN without its password."""
    if not location.startswith(POSTGRES_SCHEMES):
        return location
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(location)
    if "@" not in parts.netloc:
        return location
    user, _, hosts = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.split(':', 1)[0]}@{hosts}"))


def serve(
    config: Path = typer.Option(..., "--config", exists=True, dir_okay=False, help="TOML config file."),
    host: str | None = typer.Option(None, "--host"),
    port: int | None = typer.Option(None, "--port", min=1, max=65535),
    data_dir: Path | None = typer.Option(None, "--data-dir"),
    no_group_commit: bool = typer.Option(False, "--no-group-commit", help="One commit per request (baseline)."),
    standby_of: str | None = typer.Option(None, "--standby-of", help="Primary URL: run as its standby."),
    replica_token_file: Path | None = typer.Option(
        None, "--replica-token-file", exists=True, dir_okay=False, help="File holding a `replica` token of the primary."
    ),
    synchronous_standby: bool = typer.Option(
        False, "--synchronous-standby", help="Answer a commit only once a standby has applied it."
    ),
    peer_ledger: list[str] = typer.Option(
        [], "--peer-ledger", help="Another ledger's URL: a primary of a higher epoch there fences this one."
    ),
) -> None:
    """Run the ledger until SIGINT/SIGTERM, then drain the queue and close the database."""
    from shared import event_loop, gc_tuning, http_serving, logs
    from shared.config import ConfigError, exit_on_config_error
    from shared.credentials import FileSecret

    from core_ledger import config as ledger_config
    from core_ledger.app import create_app
    from core_ledger.standby_tailer import StandbySettings

    if (standby_of is None) != (replica_token_file is None):
        raise typer.BadParameter("--standby-of and --replica-token-file go together")
    try:
        cfg = ledger_config.load(
            config,
            host=host,
            port=port,
            data_dir=data_dir,
            group_commit=False if no_group_commit else None,
            synchronous_standby=True if synchronous_standby else None,
            peers=tuple(u.rstrip("/") for u in peer_ledger),
        )
    except ConfigError as e:
        raise exit_on_config_error(config, e.problems) from None
    standby = None
    if standby_of is not None and replica_token_file is not None:
        try:
            replica_token = FileSecret(replica_token_file.resolve())  # re-read on a credential reload
        except ConfigError as e:  # unreadable or empty: reported like a config problem (exit 2)
            raise exit_on_config_error(replica_token_file, (f"--replica-token-file: {e}",)) from None
        standby = StandbySettings(
            standby_of.rstrip("/"),
            replica_token.value,
            page_limit=cfg.page_limit_max,
            replica_token_file=replica_token,
            tls=cfg.tls.client_context(),
        )
    logs.configure(cfg.log_level, service="ledger", file=cfg.log_file)
    gc_tuning.tune_for_serving()  # the overlay's long-lived rows are not rescanned per request
    try:
        # With fronts, they own host:port and this process listens on its private socket only,
        # whose connections are the fronts' relays (their clients are counted at the fronts).
        listener = (
            http_serving.Listener(path=private_socket(cfg.front_socket), export_connections=False)
            if cfg.fronts
            else http_serving.Listener(host=cfg.host, port=cfg.port, ssl_context=cfg.tls.server_context())
        )
        app = create_app(cfg, standby=standby)
        http_serving.serve(app, cfg.listener_limits, listener, loop=event_loop.new_loop())
    except StorageError as e:  # the store cannot be opened (e.g. its schema version): a message, not a traceback
        import structlog

        structlog.get_logger("croupier.ledger").error("ledger_start_refused", error=str(e))
        sys.stderr.write(f"croupier ledger: cannot start: {e}\n")
        raise typer.Exit(1) from None


def private_socket(path: Path) -> Path:
    """The private listener's path, in a directory only this user may enter; a socket left by a
    ledger that is gone is removed (one still answering is not: a second ledger on this data_dir)."""
    import socket

    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.chmod(0o700)
    if path.exists():
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()
            else:
                sys.stderr.write(f"croupier ledger: cannot start: {path} is served by a running ledger\n")
                raise typer.Exit(1)
    return path


def front(
    config: Path = typer.Option(..., "--config", exists=True, dir_okay=False, help="TOML config file."),
    host: str = typer.Option(..., "--host"),
    port: int = typer.Option(..., "--port", min=1, max=65535),
    data_dir: Path = typer.Option(..., "--data-dir"),
    channel_fd: int = typer.Option(..., "--channel-fd", help="The channel's end, inherited from the ledger."),
) -> None:
    """One front process of a ledger with `fronts` (started by `ledger serve`, not by hand)."""
    from shared import gc_tuning, logs
    from shared.config import ConfigError, exit_on_config_error

    from core_ledger import config as ledger_config
    from core_ledger.front_app import run_front

    try:
        cfg = ledger_config.load(config, host=host, port=port, data_dir=data_dir)
    except ConfigError as e:
        raise exit_on_config_error(config, e.problems) from None
    logs.configure(cfg.log_level, service="ledger-front", file=cfg.log_file)
    gc_tuning.tune_for_serving()
    run_front(cfg, cfg.front_socket, channel_fd)


def migrate(
    config: Path = typer.Option(..., "--config", exists=True, dir_okay=False, help="TOML config file."),
    data_dir: Path | None = typer.Option(None, "--data-dir"),
) -> None:
    """Bring the configured store (SQLite or PostgreSQL) to this code's schema version; prints
    JSON. Take a backup first; the migration runs in one transaction (all or nothing)."""
    from dataclasses import replace

    from shared import logs

    from core_ledger import config as ledger_config
    from core_ledger.app import store_for

    cfg = ledger_config.load(config, data_dir=data_dir)
    logs.configure(cfg.log_level, service="ledger", file=cfg.log_file)  # the migration is logged with the rest
    store = store_for(replace(cfg, migrate_on_start=True))

    async def run() -> dict[str, Any]:
        await store.open()
        try:
            plan = store.schema_plan
            assert plan is not None  # SQLite and PostgreSQL stores record what open found
            return {
                "backend": cfg.backend,
                "from_version": plan.stored,
                "to_version": plan.target,
                "migrations": [{"version": m.version, "summary": m.summary} for m in plan.steps],
            }
        finally:
            await store.close()

    try:
        report = asyncio.run(run())
    except StorageError as e:
        sys.stderr.write(f"croupier ledger migrate: {e}\n")
        raise typer.Exit(1) from None
    _print(report)


def verify(
    path: str = typer.Argument(..., metavar="LEDGER", help=LOCATION_HELP),
    postgres_schema: str = POSTGRES_SCHEMA_OPTION,
    checkpoints: Path | None = CHECKPOINTS_OPTION,
    public_key: Path | None = PUBLIC_KEY_OPTION,
) -> None:
    """Verify the journal's hash chain offline; with --checkpoints also that every checkpoint is
    signed by the key and names the hash the journal holds at its sequence (a journal rewritten
    and re-hashed by someone with database access passes the chain check, not this one). Prints
    JSON, exit 1 when broken, 2 when the ledger cannot be opened (e.g. a schema version this code
    may not read: see docs/runbooks/upgrade.md)."""
    from core_ledger.journal_checks import verify_store

    anchors = _anchors(checkpoints, public_key)
    if anchors is None:
        report = _offline([path], verify_store, postgres_schema=postgres_schema)
    else:
        from core_ledger.checkpoint_verify import verify_with_checkpoints

        key, listed = anchors
        report = _offline(
            [path], lambda store: verify_with_checkpoints(store, listed, key), postgres_schema=postgres_schema
        )
    _print(report)
    raise typer.Exit(0 if report["ok"] else 1)


def _anchors(checkpoints: Path | None, public_key: Path | None) -> Anchors | None:
    """The signed checkpoints and their public key, when given (exit 2 when unreadable)."""
    if checkpoints is None:
        if public_key is not None:
            raise typer.BadParameter("--public-key is used with --checkpoints", param_hint="--public-key")
        return None
    if public_key is None:
        raise typer.BadParameter("--public-key is required with --checkpoints", param_hint="--public-key")
    from core_ledger.backup_format import Anchors
    from core_ledger.checkpoint_verify import read_checkpoints_or_exit

    return Anchors(*read_checkpoints_or_exit(checkpoints, public_key))


def keygen(
    out: Path = typer.Option(
        ..., "--out", dir_okay=False, help="Private key file to create (mode 600); its public key: OUT.pub"
    ),
) -> None:
    """Make an Ed25519 key pair for signed checkpoints (ledger.checkpoint_key_file); prints the key id."""
    from core_ledger.checkpoints import write_new_key

    try:
        pub, kid = write_new_key(out)
    except FileExistsError:
        raise typer.BadParameter(f"{out} exists: a key is never overwritten", param_hint="--out") from None
    _print({"private_key": str(out), "public_key": str(pub), "key_id": kid})


def rebuild(
    path: str = typer.Argument(..., metavar="LEDGER", help=LOCATION_HELP + "; the ledger must be stopped"),
    postgres_schema: str = POSTGRES_SCHEMA_OPTION,
) -> None:
    """Recompute every derived table from the journal (after verifying the chain). On SQLite with
    bounded memory: the journal is replayed page by page into a scratch file beside it
    (`<path>.rebuild`, loaded in bulk and fsynced before use, removed after), whose tables then
    replace the derived ones in one transaction: a rebuild cut short leaves the database as it was."""
    from core_ledger.journal_checks import REBUILD_CACHE_MIB, rebuild_state, replay_journal, verify_store
    from core_ledger.store.sqlite_bulk import SqliteBulkStore

    async def in_memory(store: Store) -> dict[str, int]:
        state = await rebuild_state(store)
        tables = {t: state.rows(t) for t in state.tables}
        await store.replace_derived(tables)
        return {t: len(rows) for t, rows in tables.items()}

    async def by_replay(store: SqliteStore) -> dict[str, int]:
        scratch = store.path.with_name(store.path.name + ".rebuild")

        def remove_scratch() -> None:
            for leftover in (scratch, *(scratch.with_name(scratch.name + s) for s in ("-wal", "-shm", "-journal"))):
                leftover.unlink(missing_ok=True)

        remove_scratch()  # a rebuild cut short before
        # Loaded without fsyncs, indexes made at the end (core_ledger/store/sqlite_bulk.py): the
        # scratch file is nobody's database until `finish` made it durable; only then is it copied.
        target = SqliteBulkStore(scratch, cache_mib=REBUILD_CACHE_MIB)
        try:
            try:
                await target.open()
                await replay_journal(store, target)
                await target.finish()
            finally:
                await target.close()
            return await store.replace_derived_from(scratch)
        finally:
            remove_scratch()

    async def work(store: Store) -> dict[str, Any]:
        report = await verify_store(store)
        if not report["ok"]:
            return {**report, "rebuilt": False}
        rows = await (by_replay(store) if isinstance(store, SqliteStore) else in_memory(store))
        return {**report, "rebuilt": True, "rows": rows}

    # rebuild writes the tables of this code's schema
    report = _offline([path], work, migrate=True, postgres_schema=postgres_schema)
    _print(report)
    raise typer.Exit(0 if report["rebuilt"] else 1)


def compare(
    a: str = typer.Argument(..., metavar="LEDGER_A", help="One ledger (stopped or a backup): " + LOCATION_HELP),
    b: str = typer.Argument(..., metavar="LEDGER_B", help="The other ledger, the same ways"),
    postgres_schema: str = POSTGRES_SCHEMA_OPTION,
) -> None:
    """Which copy is right (highest epoch, then longest chain that verifies), and where they
    diverge. Prints JSON; exit 0 when the loser is a prefix of a winner that verifies, else 1."""
    from core_ledger.compare import compare_stores

    names = (_shown(a), _shown(b))
    report = _offline([a, b], lambda sa, sb: compare_stores(sa, sb, names=names), postgres_schema=postgres_schema)
    _print(report)
    sys.stderr.write(report["verdict"] + "\n")  # the JSON is for tools; this line is for the operator
    winner = report["winner"]
    clean = winner is not None and report["loser_is_prefix"] and report["copies"][winner]["verifies"]
    raise typer.Exit(0 if clean else 1)


def backup(
    to: Path | None = typer.Option(
        None,
        "--to",
        file_okay=False,
        help="Directory the backup goes into (off the data disk); default: the config's backup_dir.",
    ),
    db: Path | None = typer.Option(None, "--db", dir_okay=False, help="A SQLite ledger.db (the ledger may run)."),
    config: Path | None = typer.Option(
        None,
        "--config",
        exists=True,
        dir_okay=False,
        help="The ledger's TOML config: back up its backend (SQLite or PostgreSQL).",
    ),
) -> None:
    """Write a verified, portable backup straight from the database, online (the ledger may be
    serving: the copy is one read snapshot). Prints the manifest as JSON; exit 1 on failure."""
    from shared import logs

    from core_ledger import config as ledger_config
    from core_ledger.app import store_for, utc_now
    from core_ledger.backup_format import BackupInvalid, write_backup
    from core_ledger.store.base import StorageError

    if (db is None) == (config is None):
        raise typer.BadParameter("give exactly one of --db and --config")
    logs.configure("info", service="ledger-backup")
    log = structlog.get_logger("croupier.backup")
    if config is not None:
        cfg = ledger_config.load(config)
        store: Store = store_for(cfg)
        backend, data_dir = cfg.backend, cfg.data_dir
        to = to or cfg.backup_dir
    else:
        assert db is not None
        if not db.is_file():
            raise typer.BadParameter(f"{db} is not a ledger database")
        store, backend, data_dir = SqliteStore(db), "sqlite", db.parent
    if to is None:
        raise typer.BadParameter("give --to (or --config with a backup_dir)")
    if to.resolve().is_relative_to(data_dir.resolve()):
        raise typer.BadParameter(f"{to} is inside the data directory {data_dir}: put backups off the data disk")

    async def run() -> dict[str, Any]:
        await store.open()
        try:
            return await write_backup(store, to, backend=backend, clock=utc_now)
        finally:
            await store.close()

    try:
        manifest = asyncio.run(run())
    except (OSError, StorageError, BackupInvalid) as e:
        log.error("backup_failed", trigger="cli", backup_dir=str(to), error=repr(e))
        _print({"ok": False, "error": str(e)})
        raise typer.Exit(1) from None
    log.info(
        "backup_written",
        trigger="cli",
        path=manifest["path"],
        head_sequence=manifest["head_sequence"],
        head_hash=manifest["head_hash"],
        epoch=manifest["epoch"],
    )
    _print(manifest)


def restore(
    backup_path: Path = typer.Argument(
        ..., metavar="BACKUP", exists=True, file_okay=False, help="A backup directory (holds manifest.json)."
    ),
    to: Path | None = typer.Option(
        None, "--to", file_okay=False, help="A new SQLite data directory (its ledger.db must not exist)."
    ),
    to_postgres_dsn_file: Path | None = typer.Option(
        None,
        "--to-postgres-dsn-file",
        exists=True,
        dir_okay=False,
        help="File holding the DSN of an empty PostgreSQL ledger to restore into (never on the command line).",
    ),
    postgres_schema: str = typer.Option("public", "--postgres-schema"),
    until_sequence: int | None = typer.Option(
        None, "--until-sequence", min=0, help="Point-in-time: restore the journal up to this sequence."
    ),
    checkpoints: Path | None = CHECKPOINTS_OPTION,
    public_key: Path | None = PUBLIC_KEY_OPTION,
    metrics_textfile: Path | None = typer.Option(
        None,
        "--metrics-textfile",
        dir_okay=False,
        help="Write ledger_restores_total here (Prometheus node-exporter textfile format).",
    ),
) -> None:
    """Verify a backup, then replay its journal into an empty ledger with the live fold (the
    backup's derived tables are never trusted). With --checkpoints, a backup whose journal does not
    match the signed checkpoints up to its head is refused (a re-hashed forgery passes the chain
    check, not this one). Prints JSON; exit 1 when refused or failed."""
    from prometheus_client import CollectorRegistry, write_to_textfile

    from shared import logs

    from core_ledger.backup_format import BackupInvalid, RestoreTargetNotEmpty, restore_backup, restore_into_sqlite
    from core_ledger.metrics import RestoreMetrics
    from core_ledger.store.base import StorageError

    if (to is None) == (to_postgres_dsn_file is None):
        raise typer.BadParameter("give exactly one of --to and --to-postgres-dsn-file")
    logs.configure("info", service="ledger-restore")
    log = structlog.get_logger("croupier.restore")

    dsn = to_postgres_dsn_file.read_text().strip() if to_postgres_dsn_file is not None else ""
    anchors = _anchors(checkpoints, public_key)

    async def run() -> dict[str, Any]:
        if to is not None:
            return await restore_into_sqlite(backup_path, to, until_sequence=until_sequence, anchors=anchors)
        assert to_postgres_dsn_file is not None
        from core_ledger.store.postgres import PostgresStore

        store = PostgresStore(dsn, schema=postgres_schema)
        await store.open()
        try:
            return await restore_backup(backup_path, store, until_sequence=until_sequence, anchors=anchors)
        finally:
            await store.close()

    registry = CollectorRegistry()
    metrics = RestoreMetrics(registry)
    target = str(to) if to is not None else f"postgres schema {postgres_schema}"
    try:
        report = asyncio.run(run())
    except BackupInvalid as e:
        report = {"restored": False, **e.report()}
        log.error(
            "restore_refused",
            backup=str(backup_path),
            target=target,
            error=e.detail,
            first_bad_sequence=e.first_bad_sequence,
            file=e.file,
        )
    except (RestoreTargetNotEmpty, OSError, StorageError) as e:
        report = {"restored": False, "ok": False, "error": str(e)}
        log.error("restore_failed", backup=str(backup_path), target=target, error=str(e))
    except Exception as e:  # e.g. a broken invariant while replaying: counted and reported too
        report = {"restored": False, "ok": False, "error": repr(e)}
        log.exception("restore_failed", backup=str(backup_path), target=target, error=repr(e))
    else:
        log.info(
            "restore_done",
            backup=str(backup_path),
            target=target,
            head_sequence=report["head_sequence"],
            head_hash=report["head_hash"],
            epoch=report["epoch"],
            until_sequence=until_sequence,
            derived_tables_differ=report.get("derived_tables_differ"),
        )
    metrics.restores_total.labels("ok" if report["restored"] else "failed").inc()
    if metrics_textfile is not None:
        write_to_textfile(str(metrics_textfile), registry)
    _print(report)
    raise typer.Exit(0 if report["restored"] else 1)


def verify_backup(
    backup_path: Path = typer.Argument(
        ..., metavar="BACKUP", exists=True, file_okay=False, help="A backup directory (holds manifest.json)."
    ),
    checkpoints: Path | None = CHECKPOINTS_OPTION,
    public_key: Path | None = PUBLIC_KEY_OPTION,
) -> None:
    """Check a backup without restoring it: the journal's hash chain up to the manifest's head, then
    every file's checksum; with --checkpoints, that the journal matches every signed checkpoint up
    to its head. Prints JSON (`first_bad_sequence`, `file` when refused); exit 1 when bad."""
    from core_ledger.backup_format import BackupInvalid
    from core_ledger.backup_format import verify_backup as check

    anchors = _anchors(checkpoints, public_key)
    try:
        report = check(backup_path, anchors)
    except BackupInvalid as e:
        report = e.report()
    _print(report)
    raise typer.Exit(0 if report["ok"] else 1)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("front", hidden=True)(front)
    app.command("verify")(verify)
    app.command("rebuild")(rebuild)
    app.command("compare")(compare)
    app.command("backup")(backup)
    app.command("restore")(restore)
    app.command("verify-backup")(verify_backup)
    app.command("migrate")(migrate)
    app.command("keygen")(keygen)
