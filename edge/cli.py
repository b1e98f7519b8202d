"""`croupier edge serve`: run one edge node until SIGINT/SIGTERM, then stop cleanly
(websockets closed, queued state flushed to disk). `croupier edge migrate`: bring its local store
to this code's schema version."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import sys
from pathlib import Path

import typer

from shared.migrations import SchemaVersionError


def serve(
    config: Path = typer.Option(..., "--config", exists=True, dir_okay=False, help="TOML config file."),
    host: str | None = typer.Option(None, "--host", help="Bind address (default from config: 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", min=1, max=65535),
) -> None:
    """Run the edge (money forwarded to the ledger, CRDT state synced with peers)."""
    from shared import event_loop, gc_tuning, http_serving, logs
    from shared.config import ConfigError, exit_on_config_error

    from edge import config as edge_config
    from edge.app import create_app

    try:
        cfg = edge_config.load(config)
    except ConfigError as e:
        raise exit_on_config_error(config, e.problems) from None
    cfg = dataclasses.replace(cfg, host=host or cfg.host, port=port or cfg.port)
    logs.configure(cfg.log_level, service="edge", edge_id=cfg.id, file=cfg.log_file)
    gc_tuning.tune_for_serving()  # the CRDT documents and their facts are not rescanned per update
    try:
        http_serving.serve(
            create_app(cfg),
            cfg.connection_limits,
            http_serving.Listener(host=cfg.host, port=cfg.port, ssl_context=cfg.tls.server_context()),
            shutdown_timeout=5.0,
            loop=event_loop.new_loop(),
        )
    except SchemaVersionError as e:  # a message, not a traceback
        import structlog

        structlog.get_logger("croupier.edge").error("edge_start_refused", error=str(e))
        sys.stderr.write(f"croupier edge: cannot start: {e}\n")
        raise typer.Exit(1) from None


def migrate(
    config: Path = typer.Option(..., "--config", exists=True, dir_okay=False, help="TOML config file."),
) -> None:
    """Bring the edge's local store (edge.db) to this code's schema version; prints JSON. The edge
    must be stopped; the migration runs in one transaction (all or nothing)."""
    import orjson

    from shared import logs
    from shared.config import ConfigError

    from edge import config as edge_config
    from edge.persist import DocumentStore

    try:
        cfg = edge_config.load(config)
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from None
    logs.configure(cfg.log_level, service="edge", edge_id=cfg.id, file=cfg.log_file)  # logged with the rest
    store = DocumentStore(cfg.data_dir / "edge.db", client_id=0, allow_migration=True)

    async def run() -> dict[str, object]:
        await store.open()
        try:
            plan = store.schema_plan
            assert plan is not None  # open records what it found
            return {
                "path": str(store.path),
                "from_version": plan.stored,
                "to_version": plan.target,
                "migrations": [{"version": m.version, "summary": m.summary} for m in plan.steps],
            }
        finally:
            await store.close()

    try:
        report = asyncio.run(run())
    except (SchemaVersionError, sqlite3.Error) as e:  # a message, not a traceback (e.g. the edge still runs)
        sys.stderr.write(f"croupier edge migrate: {e}\n")
        raise typer.Exit(1) from None
    sys.stdout.write(orjson.dumps(report).decode() + "\n")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("migrate")(migrate)
