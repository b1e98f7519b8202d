"""`croupier ledger serve | verify | rebuild | compare`."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import typer

from core_ledger.store import SqliteStore

GC_THRESHOLDS = (50_000, 20, 100)


def _print(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value).decode() + "\n")


def _offline(paths: list[Path], work: Callable[..., Awaitable[dict[str, Any]]]) -> dict[str, Any]:
    """Open each ledger file, run `work(*stores)`, close them all."""
    for path in paths:
        if not path.is_file():
            raise typer.BadParameter(f"{path} is not a ledger database")

    async def run() -> dict[str, Any]:
        stores: list[SqliteStore] = []
        try:
            for path in paths:
                stores.append(SqliteStore(path))
                await stores[-1].open()
            return await work(*stores)
        finally:
            for store in stores:
                await store.close()

    return asyncio.run(run())


def serve(
    config: Path = typer.Option(..., "--config", exists=True, dir_okay=False, help="TOML config file."),
    host: str | None = typer.Option(None, "--host"),
    port: int | None = typer.Option(None, "--port", min=1, max=65535),
    data_dir: Path | None = typer.Option(None, "--data-dir"),
    no_group_commit: bool = typer.Option(False, "--no-group-commit", help="One commit per request (baseline)."),
    standby_of: str | None = typer.Option(None, "--standby-of", help="Primary URL: run as its standby."),
    replica_token_file: Path | None = typer.Option(None, "--replica-token-file", exists=True, dir_okay=False,
                                                   help="File holding a `replica` token of the primary."),
    synchronous_standby: bool = typer.Option(False, "--synchronous-standby",
                                             help="Answer a commit only once a standby has applied it."),
    peer_ledger: list[str] = typer.Option(
        [], "--peer-ledger", help="Another ledger's URL: a primary of a higher epoch there fences this one."),
) -> None:
    """Run the ledger until SIGINT/SIGTERM, then drain the queue and close the database."""
    from aiohttp import web

    from shared import logs
    from shared.config import ConfigError
    from shared.credentials import FileSecret

    from core_ledger import config as ledger_config
    from core_ledger.http import create_app
    from core_ledger.standby import StandbySettings

    if (standby_of is None) != (replica_token_file is None):
        raise typer.BadParameter("--standby-of and --replica-token-file go together")
    try:
        cfg = ledger_config.load(config, host=host, port=port, data_dir=data_dir,
                                 group_commit=False if no_group_commit else None,
                                 synchronous_standby=True if synchronous_standby else None,
                                 peers=tuple(u.rstrip("/") for u in peer_ledger))
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from None
    standby = None
    if standby_of is not None and replica_token_file is not None:
        replica_token = FileSecret(replica_token_file.resolve())  # re-read on a credential reload
        standby = StandbySettings(standby_of.rstrip("/"), replica_token.value, page_limit=cfg.page_limit_max,
                                  replica_token_file=replica_token, tls=cfg.tls.client_context())
    logs.configure(cfg.log_level, service="ledger", file=cfg.log_file)
    # The writer's overlay keeps many long-lived dicts; default young-generation collections
    # rescan them so often that GC cost a third of the per-bet CPU in profiles.
    gc.set_threshold(*GC_THRESHOLDS)
    gc.freeze()  # what start-up built (modules, models, routes) lives for good: never rescan it
    web.run_app(create_app(cfg, standby=standby), host=cfg.host, port=cfg.port, print=None, access_log=None,
                ssl_context=cfg.tls.server_context())


def verify(path: Path = typer.Argument(..., help="Path to ledger.db")) -> None:
    """Verify the journal's hash chain offline; prints JSON, exit 1 when broken."""
    from core_ledger.reads import verify_store

    report = _offline([path], verify_store)
    _print(report)
    raise typer.Exit(0 if report["ok"] else 1)


def rebuild(path: Path = typer.Argument(..., help="Path to ledger.db (the ledger must be stopped)")) -> None:
    """Recompute every derived table from the journal (after verifying the chain)."""
    from core_ledger.reads import rebuild_state, verify_store

    async def work(store: SqliteStore) -> dict[str, Any]:
        report = await verify_store(store)
        if not report["ok"]:
            return {**report, "rebuilt": False}
        state = await rebuild_state(store)
        tables = {t: state.rows(t) for t in state.tables}
        await store.replace_derived(tables)
        return {**report, "rebuilt": True, "rows": {t: len(rows) for t, rows in tables.items()}}

    report = _offline([path], work)
    _print(report)
    raise typer.Exit(0 if report["rebuilt"] else 1)


def compare(a: Path = typer.Argument(..., help="One ledger.db (stopped or a backup)"),
            b: Path = typer.Argument(..., help="The other ledger.db")) -> None:
    """Which copy is right (highest epoch, then longest chain that verifies), and where they
    diverge. Prints JSON; exit 0 when the loser is a prefix of a winner that verifies, else 1."""
    from core_ledger.compare import compare_stores

    report = _offline([a, b], lambda sa, sb: compare_stores(sa, sb, names=(str(a), str(b))))
    _print(report)
    sys.stderr.write(report["verdict"] + "\n")  # the JSON is for tools; this line is for the operator
    winner = report["winner"]
    clean = winner is not None and report["loser_is_prefix"] and report["copies"][winner]["verifies"]
    raise typer.Exit(0 if clean else 1)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("verify")(verify)
    app.command("rebuild")(rebuild)
    app.command("compare")(compare)
