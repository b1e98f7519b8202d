"""The edge's composition root: builds the document store, the CRDT state, the ledger client, the
jackpot catalog, the reconciler, the sync hub, the service, the background tasks (reconciler,
ledger watch, credential reloads) and the aiohttp app that serves the handlers of edge/http.py;
starts and stops them with the app, in dependency order, in one cleanup context."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from shared import auth, event_loop, logs
from shared.credentials import CredentialMetrics, CredentialReloader, FileSecret
from shared.routes import serve_routes
from shared.runtime_metrics import file_bytes, register_runtime_collectors, sqlite_files
from shared.tasks import supervise
from shared.tracing import TraceMetrics, Tracing
from shared.tracing import setup as setup_tracing
from shared.web import make_app

from edge.app_keys import CREDENTIALS, HEALTH, HUB, SERVICE
from edge.config import EdgeConfig, reload_tokens
from edge.crdt.identity import fresh_client_id
from edge.health import TaskHealth
from edge.http import ROUTES
from edge.jackpots import JackpotCatalog
from edge.ledger_client import LedgerClient
from edge.metrics import EdgeMetrics
from edge.persist import DocumentStore, StoreLimits
from edge.reconcile import Reconciler
from edge.service import EdgeService
from edge.state import EdgeState
from edge.sync import SyncHub

log = structlog.get_logger("croupier.edge")


def _export_capacity(registry: CollectorRegistry, metrics: EdgeMetrics, store_path: Path, ledger: LedgerClient) -> None:
    """Process, build, breaker and disk gauges, read at scrape time."""
    register_runtime_collectors(registry, "edge")
    for index in range(ledger.url_count):
        metrics.ledger_breaker_open.labels(str(index)).set_function(partial(ledger.breaker_open, index))
    for name, path in sqlite_files(store_path).items():
        metrics.db_bytes.labels(name).set_function(partial(file_bytes, path))


def _outbound_token(path: Path | None, value: str) -> FileSecret | None:
    """The token file an outbound link presents from (re-read on reloads); None: fixed at start-up."""
    return FileSecret(path, value) if path is not None else None


def _present(secret: FileSecret | None, fixed: str) -> Callable[[], str]:
    """What an outbound link presents: the secret's current value, or a token fixed at start-up."""
    if secret is None:
        return lambda: fixed
    return lambda: secret.value


def credential_reloader(
    cfg: EdgeConfig, tokens: auth.TokenStore, metrics: CredentialMetrics, outbound: list[FileSecret]
) -> CredentialReloader:
    """Reloads the accepted tokens (config file and tokens_file) and the outbound token files."""
    path = cfg.config_path
    return CredentialReloader(
        tokens,
        metrics,
        load_tokens=(lambda: reload_tokens(path, cfg.peers)) if path is not None else None,
        secrets=outbound,
        watched=[p for p in (path, cfg.tokens_file) if p is not None],
        interval_s=cfg.credentials_check_interval_s,
    )


def create_app(
    cfg: EdgeConfig,
    *,
    registry: CollectorRegistry | None = None,
    clock: Callable[[], float] = time.time,
    store_limits: StoreLimits = StoreLimits(),
    tracing: Tracing | None = None,
) -> web.Application:
    """The edge application; `tracing` (tests) replaces the one the config describes."""
    registry = registry or CollectorRegistry()
    tokens = auth.TokenStore(cfg.tokens)
    trace_metrics = TraceMetrics(registry)
    if tracing is None:
        tracing = setup_tracing(
            cfg.tracing_otlp_endpoint, cfg.trace_service_name, cfg.tracing_sample_ratio, metrics=trace_metrics
        )
    app = make_app(
        tokens=tokens,
        registry=registry,
        body_bytes_max=cfg.body_bytes_max,
        body_timeout_s=cfg.http_body_timeout_s,
        outer_middlewares=tracing.middlewares(),
    )
    metrics = EdgeMetrics(registry)
    health = TaskHealth(
        metrics,
        cfg.limits.background_failures_unready,
        tasks=(
            "reconcile",
            "store-writer",
            "store-compaction",
            "sync",
            "sync-push",
            "sync-anti-entropy",
            "sync-accept",
            *(f"sync-dial-{p.id}" for p in cfg.peers if cfg.id < p.id),
        ),
    )
    # A fresh CRDT identity at every start (edge.crdt.identity): never a (client, clock) pair peers may hold.
    client_id = fresh_client_id(cfg.id, time.time())
    hub_ref: list[SyncHub] = []
    store_path = cfg.data_dir / "edge.db"
    store = DocumentStore(
        store_path,
        client_id,
        store_limits,
        on_durable=lambda updates: hub_ref[0].push(updates) if hub_ref else None,
        health=health,
        allow_migration=cfg.migrate_on_start,
    )
    state = EdgeState(cfg.id, client_id, cfg.limits.docs_live_max, store, metrics, clock)
    ledger_token = _outbound_token(cfg.ledger_token_file, cfg.ledger_token)
    peer_token = _outbound_token(cfg.peer_token_file, cfg.peer_token)
    credentials = credential_reloader(
        cfg, tokens, CredentialMetrics(registry), [s for s in (ledger_token, peer_token) if s is not None]
    )
    outbound_tls = cfg.tls.client_context()
    ledger = LedgerClient(
        cfg.ledger_endpoints,
        _present(ledger_token, cfg.ledger_token),
        attempt_timeout_s=cfg.ledger_attempt_timeout_s,
        deadline_s=cfg.ledger_deadline_s,
        limits=cfg.limits,
        metrics=metrics,
        tls=outbound_tls,
        tracing=tracing,
    )
    _export_capacity(registry, metrics, store_path, ledger)
    catalog = JackpotCatalog(ledger, cfg.limits.jackpot_lookup_interval_s)
    reconciler = Reconciler(state, ledger, cfg.limits, catalog=catalog, health=health)
    hub = SyncHub(
        cfg.id,
        cfg.peers,
        _present(peer_token, cfg.peer_token),
        state,
        cfg.limits,
        metrics,
        on_hint=reconciler.note_hints,
        catalog=catalog,
        health=health,
        session_state_bytes_max=cfg.session_state_bytes_max,
        tls=outbound_tls,
    )
    hub_ref.append(hub)
    credentials.on_reload.append(hub.revoke_removed)
    app[SERVICE] = EdgeService(cfg, state, ledger, reconciler, metrics, hint=hub.hint, catalog=catalog)
    app[HUB] = hub
    app[HEALTH] = health
    app[CREDENTIALS] = credentials
    serve_routes(
        app,
        ROUTES,
        title="Croupier edge",
        description="Regional edge: money forwarded to the core ledger, CRDT state served locally.",
    )

    def task_failed(name: str, error: BaseException) -> None:
        metrics.background_failures_total.labels(name).inc()
        log.error("edge_task_failed", task=name, error=repr(error), exc_info=error)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await state.open()
        metrics.store_schema_version.set(store.schema_plan.target if store.schema_plan is not None else 0)
        log.info("edge CRDT identity", edge=cfg.id, crdt_client_id=state.replica.client_id)
        reconciler.mark_dirty(state.book.keys())  # effects near a crash: confirm them first
        await ledger.start()
        await hub.start()
        credentials.start()
        tasks = [
            asyncio.create_task(supervise("reconciler", reconciler.run, task_failed), name="edge-reconciler"),
            asyncio.create_task(supervise("ledger_watch", ledger.watch, task_failed), name="edge-ledger-watch"),
        ]
        log.info(
            "edge_started",
            version=logs.version(),
            event_loop=event_loop.name(asyncio.get_running_loop()),
            ledger_urls=list(cfg.ledger_endpoints),
            peers=[p.id for p in cfg.peers],
            config=logs.config_summary(cfg),
        )
        try:
            yield
        finally:
            log.info("edge_stopping")
            await credentials.stop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await hub.close()
            await ledger.close()
            app[SERVICE].write_waiting_effects()  # (none should wait: each answer waited for its own)
            await store.close()
            await asyncio.to_thread(tracing.shutdown)  # a last export may wait on the collector
            log.info("edge_stopped")

    async def close_links(app: web.Application) -> None:
        await hub.close()  # before aiohttp waits for handlers: open websockets would hold it up

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_links)
    return app
