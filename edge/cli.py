"""`croupier edge serve`: run one edge node until SIGINT/SIGTERM, then stop cleanly
(websockets closed, queued state flushed to disk)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer


def serve(
    config: Path = typer.Option(..., "--config", exists=True, dir_okay=False, help="TOML config file."),
    host: str | None = typer.Option(None, "--host", help="Bind address (default from config: 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", min=1, max=65535),
) -> None:
    """Run the edge (money forwarded to the ledger, CRDT state synced with peers)."""
    from aiohttp import web

    from shared import logs
    from shared.config import ConfigError

    from edge import config as edge_config
    from edge.http import create_app

    try:
        cfg = edge_config.load(config)
    except ConfigError as e:
        raise typer.BadParameter(str(e)) from None
    cfg = dataclasses.replace(cfg, host=host or cfg.host, port=port or cfg.port)
    logs.configure(cfg.log_level, service="edge", edge_id=cfg.id, file=cfg.log_file)
    web.run_app(create_app(cfg), host=cfg.host, port=cfg.port, print=None, access_log=None,
                shutdown_timeout=5.0, ssl_context=cfg.tls.server_context())


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
