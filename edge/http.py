"""The edge's HTTP API (docs/API.md, section "Edge") and its app factory.

Handlers parse, call one service method, render. Everything the app owns (store, ledger client,
sync hub, reconciler) is opened and closed in one cleanup context, in dependency order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from shared import auth, logs
from shared.contract.answers import (
    BalancesAnswer,
    BonusProgress,
    EdgeJackpot,
    EdgeJackpots,
    EdgeReady,
    SessionAnswer,
    SessionSaved,
)
from shared.contract.headers import RETRY_AFTER
from shared.contract.operations import EDGE_FORWARD_CODES, MONEY_OPS, READ_CODES, REQUEST_CODES, WRITER_CODES
from shared.contract.requests import SessionStateIn
from shared.credentials import CredentialMetrics, CredentialReloader, FileSecret
from shared.routes import Route, path_id, serve_routes
from shared.runtime_metrics import file_bytes, register_runtime_collectors, sqlite_files
from shared.tasks import supervise
from shared.tracing import TraceMetrics, Tracing
from shared.tracing import setup as setup_tracing
from shared.web import annotate, json_response, make_app, principal, read_model

from edge.config import EdgeConfig, reload_tokens
from edge.crdt.identity import fresh_client_id
from edge.health import TaskHealth
from edge.jackpots import JackpotCatalog
from edge.ledger_client import LedgerClient
from edge.metrics import EdgeMetrics
from edge.persist import DocumentStore, StoreLimits
from edge.reconcile import Reconciler
from edge.service import EDGE_MONEY_OPS, EdgeService
from edge.state import EdgeState
from edge.sync import SyncHub

log = structlog.get_logger("croupier.edge")

EDGE_SET_FIELDS = frozenset({"via", "client_id"})  # set here from the edge's id and the caller's credential
# A read through to the ledger can also fail as the ledger does (unavailable here).
THROUGH_CODES = (*READ_CODES, "ledger_unavailable", "not_primary", "storage_unavailable")
LOCAL_CODES = (*READ_CODES, "storage_unavailable", "ledger_unavailable")

SERVICE = web.AppKey("edge_service", EdgeService)
HUB = web.AppKey("edge_sync", SyncHub)
HEALTH = web.AppKey("edge_health", TaskHealth)
CREDENTIALS = web.AppKey("edge_credentials", CredentialReloader)


def _money_route(op: str) -> Route:
    spec = MONEY_OPS[op]

    @auth.roles("game_server")
    async def handler(request: web.Request) -> web.Response:
        body = await read_model(request, spec.request)
        client_id = principal(request).name
        annotate(request, client_id=client_id, via=request.app[SERVICE].edge_id, id=body.id)
        status, answer = await request.app[SERVICE].money(op, body, client_id)
        return json_response(answer, status=status)

    return Route("POST", spec.path, handler, f"{op.replace('_', ' ').capitalize()}, forwarded to the ledger",
                 spec.request, answer=spec.answer, tag="money", replays=True, hidden_fields=EDGE_SET_FIELDS,
                 codes=(*REQUEST_CODES, *EDGE_FORWARD_CODES, *WRITER_CODES, *spec.decision_codes()))


@auth.roles("game_server")
async def balances(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].balances(path_id(request, "player_id")))


@auth.roles("game_server")
async def session(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].session(path_id(request, "player_id")))


@auth.roles("game_server")
async def put_session(request: web.Request) -> web.Response:
    body = await read_model(request, SessionStateIn)
    return json_response(await request.app[SERVICE].put_session(
        path_id(request, "player_id"), path_id(request, "game_id"), body.state))


@auth.roles("game_server")
async def jackpots(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].jackpots())


@auth.roles("game_server")
async def jackpot(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].jackpot(path_id(request, "jackpot_id")))


@auth.roles("game_server")
async def bonus_progress(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].bonus_progress(path_id(request, "player_id")))


@auth.roles("peer")
async def sync(request: web.Request) -> web.WebSocketResponse:
    return await request.app[HUB].accept(request, principal(request).name)


@auth.public
async def readyz(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    store_ok, ledger_ok = service.state.store.is_open, service.ledger.reachable()
    failing = request.app[HEALTH].failing()
    ready = store_ok and ledger_ok and not failing
    body = {"status": "ready" if ready else "unavailable", "store": store_ok, "ledger": ledger_ok,
            "peers_connected": sorted(request.app[HUB].links), "background_failing": failing}
    if not ready:
        return json_response(body, status=503, headers={RETRY_AFTER: "1"})
    return json_response(body)


ROUTES = [
    *(_money_route(op) for op in EDGE_MONEY_OPS),
    Route("GET", "/v1/players/{player_id}/balances", balances, "Balances, read through to the ledger",
          answer=BalancesAnswer, codes=THROUGH_CODES),
    Route("GET", "/v1/players/{player_id}/session", session, "Open rounds (ledger) and game states (CRDT)",
          answer=SessionAnswer, codes=LOCAL_CODES, tag="edge-state"),
    Route("PUT", "/v1/players/{player_id}/session/{game_id}", put_session, "Save a game state (last writer wins)",
          SessionStateIn, answer=SessionSaved, codes=(*REQUEST_CODES, "storage_unavailable"), tag="edge-state"),
    Route("GET", "/v1/jackpots", jackpots, "Jackpot displays known here", answer=EdgeJackpots,
          codes=LOCAL_CODES, tag="edge-state"),
    Route("GET", "/v1/jackpots/{jackpot_id}", jackpot, "One jackpot display, served locally", answer=EdgeJackpot,
          codes=LOCAL_CODES, tag="edge-state"),
    Route("GET", "/v1/players/{player_id}/bonus-progress", bonus_progress, "Bonus wagering progress, served locally",
          answer=BonusProgress, codes=LOCAL_CODES, tag="edge-state"),
    Route("GET", "/v1/sync", sync, "Websocket for peer edges (CRDT sync)", tag="replication",
          codes=("unauthenticated", "forbidden", "validation_error")),
    Route("GET", "/readyz", readyz, "Ready: store open, ledger reachable, no background task failing repeatedly",
          answer=EdgeReady, unready_status=503),
]


def _export_capacity(registry: CollectorRegistry, metrics: EdgeMetrics, store_path: Path,
                     ledger: LedgerClient) -> None:
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


def credential_reloader(cfg: EdgeConfig, tokens: auth.TokenStore, metrics: CredentialMetrics,
                        outbound: list[FileSecret]) -> CredentialReloader:
    """Reloads the accepted tokens (config file and tokens_file) and the outbound token files."""
    path = cfg.config_path
    return CredentialReloader(
        tokens, metrics, load_tokens=(lambda: reload_tokens(path, cfg.peers)) if path is not None else None,
        secrets=outbound, watched=[p for p in (path, cfg.tokens_file) if p is not None],
        interval_s=cfg.credentials_check_interval_s)


def create_app(cfg: EdgeConfig, *, registry: CollectorRegistry | None = None,
               clock: Callable[[], float] = time.time, store_limits: StoreLimits = StoreLimits(),
               tracing: Tracing | None = None) -> web.Application:
    """The edge application; `tracing` (tests) replaces the one the config describes."""
    registry = registry or CollectorRegistry()
    tokens = auth.TokenStore(cfg.tokens)
    trace_metrics = TraceMetrics(registry)
    if tracing is None:
        tracing = setup_tracing(cfg.tracing_otlp_endpoint, cfg.trace_service_name, cfg.tracing_sample_ratio,
                                metrics=trace_metrics)
    app = make_app(tokens=tokens, registry=registry, body_bytes_max=cfg.body_bytes_max,
                   outer_middlewares=tracing.middlewares())
    metrics = EdgeMetrics(registry)
    health = TaskHealth(metrics, cfg.limits.background_failures_unready,
                        tasks=("reconcile", "store-compaction", "sync", "sync-push", "sync-anti-entropy", "sync-accept",
                               *(f"sync-dial-{p.id}" for p in cfg.peers if cfg.id < p.id)))
    # A fresh CRDT identity at every start (edge.crdt.identity): never a (client, clock) pair peers may hold.
    client_id = fresh_client_id(cfg.id, time.time())
    hub_ref: list[SyncHub] = []
    store_path = cfg.data_dir / "edge.db"
    store = DocumentStore(store_path, client_id, store_limits,
                          on_durable=lambda updates: hub_ref[0].push(updates) if hub_ref else None, health=health,
                          allow_migration=cfg.migrate_on_start)
    state = EdgeState(cfg.id, client_id, cfg.limits.docs_live_max, store, metrics, clock)
    ledger_token = _outbound_token(cfg.ledger_token_file, cfg.ledger_token)
    peer_token = _outbound_token(cfg.peer_token_file, cfg.peer_token)
    credentials = credential_reloader(cfg, tokens, CredentialMetrics(registry),
                                      [s for s in (ledger_token, peer_token) if s is not None])
    outbound_tls = cfg.tls.client_context()
    ledger = LedgerClient(cfg.ledger_endpoints, _present(ledger_token, cfg.ledger_token),
                          attempt_timeout_s=cfg.ledger_attempt_timeout_s, deadline_s=cfg.ledger_deadline_s,
                          limits=cfg.limits, metrics=metrics, tls=outbound_tls, tracing=tracing)
    _export_capacity(registry, metrics, store_path, ledger)
    catalog = JackpotCatalog(ledger, cfg.limits.jackpot_lookup_interval_s)
    reconciler = Reconciler(state, ledger, cfg.limits, catalog=catalog, health=health)
    hub = SyncHub(cfg.id, cfg.peers, _present(peer_token, cfg.peer_token), state, cfg.limits, metrics,
                  on_hint=reconciler.mark_dirty, catalog=catalog, health=health,
                  session_state_bytes_max=cfg.session_state_bytes_max, tls=outbound_tls)
    hub_ref.append(hub)
    credentials.on_reload.append(hub.revoke_removed)
    app[SERVICE] = EdgeService(cfg, state, ledger, reconciler, metrics, hint=hub.hint, catalog=catalog)
    app[HUB] = hub
    app[HEALTH] = health
    app[CREDENTIALS] = credentials
    serve_routes(app, ROUTES, title="Croupier edge",
                 description="Regional edge: money forwarded to the core ledger, CRDT state served locally.")

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
        tasks = [asyncio.create_task(supervise("reconciler", reconciler.run, task_failed), name="edge-reconciler"),
                 asyncio.create_task(supervise("ledger_watch", ledger.watch, task_failed), name="edge-ledger-watch")]
        log.info("edge_started", version=logs.version(), ledger_urls=list(cfg.ledger_endpoints),
                 peers=[p.id for p in cfg.peers], config=logs.config_summary(cfg))
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
            await store.close()
            await asyncio.to_thread(tracing.shutdown)  # a last export may wait on the collector
            log.info("edge_stopped")

    async def close_links(app: web.Application) -> None:
        await hub.close()  # before aiohttp waits for handlers: open websockets would hold it up

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_links)
    return app

