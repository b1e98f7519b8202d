"""The ledger's composition root: builds the store, the service, the standby tailer, the background
tasks (auditor, backups, liabilities sampler, peer fencing, credential reloads) and the aiohttp app
that serves the handlers of core_ledger/http.py and core_ledger/admin_http.py; starts and stops them
with the app, in order. The epoch claim check (a caller's `X-Ledger-Epoch` is judged by
core_ledger/fencing.py before the request is served; run by the shared middleware) and the epoch
every answer carries are wired here too."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from shared import auth, event_loop, logs
from shared.config import ConfigError
from shared.contract import headers
from shared.credentials import CredentialMetrics, CredentialReloader
from shared.routes import serve_routes
from shared.runtime_metrics import file_bytes, free_bytes, register_runtime_collectors, sqlite_files
from shared.tracing import TraceMetrics, Tracing
from shared.tracing import setup as setup_tracing
from shared.web import ANSWER_HEADERS_KEY, HTTP_METRICS_KEY, make_app

from core_ledger import admin_http, audit_http, events_http, queries_http, reports_http
from core_ledger.app_keys import (
    AUDITOR,
    BACKUPS,
    CONFIG,
    CREDENTIALS,
    FENCING,
    LEASE,
    LIABILITIES,
    READS,
    SERVICE,
    STALE_ROUNDS,
    STANDBY,
    SUBMIT,
)
from core_ledger.audit import Auditor
from core_ledger.audit_walk import ChildWalk
from core_ledger.backup_jobs import Backups
from core_ledger.config import LedgerConfig, reload_tokens
from core_ledger.domain import Command
from core_ledger.failover import EPOCH_HEADER
from core_ledger.fencing import Fencing, claimed_epoch
from core_ledger.fronts import Fronts
from core_ledger.http import LEDGER_HEADERS, ROUTES
from core_ledger.lease_keeper import LeaseKeeper
from core_ledger.liabilities import LiabilitiesSampler
from core_ledger.metrics import LedgerMetrics
from core_ledger.postgres_watch import PostgresWatch
from core_ledger.queries import LedgerQueries
from core_ledger.reads import LedgerReads
from core_ledger.reports import LedgerReports
from core_ledger.rounds_job import StaleRounds
from core_ledger.service import LedgerService
from core_ledger.standby_tailer import StandbyMetrics, StandbySettings, StandbyTailer
from core_ledger.store import SqliteStore, Store
from core_ledger.wal_checkpoints import WalCheckpointer
from core_ledger.writer import Result, WriterLimits

log = structlog.get_logger("croupier.ledger.app")

IDLE_IN_TRANSACTION_MIN_S = 2.0  # a pair's copy: the shortest server-side bound of an open, silent transaction


def utc_now() -> datetime:
    return datetime.now(UTC)


def store_for(config: LedgerConfig) -> Store:
    """The configured backend (asyncpg, an optional dependency, is imported only when it is used)."""
    if config.backend == "postgres":
        from core_ledger.store.postgres import PostgresLimits, PostgresStore

        limits = PostgresLimits(pool_size_max=config.postgres_pool_size_max)
        return PostgresStore(
            config.postgres_dsn, limits, schema=config.postgres_schema, allow_migration=config.migrate_on_start
        )
    return SqliteStore(
        config.db_path,
        allow_migration=config.migrate_on_start,
        held_groups_max=config.derived_flush_groups,
        held_rows_max=config.derived_flush_rows,
    )


def create_app(
    config: LedgerConfig,
    *,
    store: Store | None = None,
    clock: Callable[[], datetime] = utc_now,
    registry: CollectorRegistry | None = None,
    standby: StandbySettings | None = None,
    tracing: Tracing | None = None,
) -> web.Application:
    """The ledger application; its service (and standby tailer) start and stop with the app. `tracing`
    (tests) replaces the one the config describes."""
    registry = registry or CollectorRegistry()
    store = store or store_for(config)
    tokens = auth.TokenStore(config.tokens)
    trace_metrics = TraceMetrics(registry)
    if tracing is None:
        tracing = setup_tracing(
            config.tracing_otlp_endpoint,
            config.tracing_service_name,
            config.tracing_sample_ratio,
            metrics=trace_metrics,
        )
    app = make_app(
        tokens=tokens,
        registry=registry,
        body_bytes_max=config.body_bytes_max,
        body_timeout_s=config.http_body_timeout_s,
        outer_middlewares=tracing.middlewares(),
        caller_check=_epoch_claim,
    )
    credentials = credential_reloader(config, tokens, CredentialMetrics(registry), standby)
    limits = WriterLimits(
        group_commit=config.group_commit,
        commit_batch_max=config.commit_batch_max,
        queue_depth_max=config.queue_depth_max,
        synchronous_standby=config.synchronous_standby,
        standby_ack_timeout_s=config.standby_ack_timeout_s,
    )
    metrics = LedgerMetrics(registry)
    app[SERVICE] = LedgerService(
        store, limits, clock=clock, metrics=metrics, standby=standby is not None, passive=config.writer_lease
    )
    app[SUBMIT] = _submitter(app[SERVICE])
    if config.writer_lease:
        app[LEASE] = writer_lease_keeper(config, store, app[SERVICE], metrics, standby)
    if config.fault_apply_delay_file is not None:
        log.warning("ledger_fault_point_enabled", fault="apply_delay", file=str(config.fault_apply_delay_file))
        app[SERVICE].apply_fault_delay = partial(_fault_delay, config.fault_apply_delay_file)
    metrics.fault_point_enabled.set(1 if config.fault_apply_delay_file is not None else 0)
    metrics.fronts_configured.set(config.fronts)
    _export_capacity(registry, metrics, config, app[SERVICE])
    if standby is not None:
        app[STANDBY] = StandbyTailer(app[SERVICE], standby, StandbyMetrics(registry), clock)
    app[READS] = LedgerReads(store, clock=clock)
    app[queries_http.QUERIES] = LedgerQueries(store, clock=clock)
    app[reports_http.REPORTS] = LedgerReports(store)
    app[AUDITOR] = Auditor(app[SERVICE], app[READS], metrics, clock, child_walk=ChildWalk.of(store))
    app[LIABILITIES] = LiabilitiesSampler(store, metrics, config.liabilities_interval_s)
    app[STALE_ROUNDS] = StaleRounds(
        app[SERVICE],
        app[READS],
        metrics,
        after_s=config.stale_round_after_s,
        policy=config.stale_round_policy,
        interval_s=config.stale_round_check_interval_s,
        clock=clock,
    )
    postgres_watch = PostgresWatch.for_store(store, metrics)  # None unless the store is PostgreSQL
    wal_checkpoints = WalCheckpointer.for_store(store, metrics, config.wal_checkpoint_interval_s)  # SQLite only
    app[CONFIG] = config
    app[CREDENTIALS] = credentials
    app[BACKUPS] = Backups(store, config, metrics, clock)
    app[FENCING] = Fencing(
        app[SERVICE],
        metrics,
        peers=config.peers,
        timeout_s=config.peer_check_timeout_s,
        interval_s=config.peer_check_interval_s,
        recheck_s=config.epoch_claim_recheck_s,
        tls=config.tls.client_context(),
    )
    fronts = None
    if config.fronts:
        fronts = Fronts(
            config.fronts,
            front_argv(config),
            app[SERVICE],
            app[FENCING],
            tokens,
            app[HTTP_METRICS_KEY],
            trace_metrics,
            metrics,
            config.batch_actions_max,
        )
    audit_http.install(app, app[SERVICE], config, metrics, registry, clock)
    events_http.install(app, app[SERVICE], config, metrics, registry)
    serve_routes(
        app,
        [
            *ROUTES,
            *admin_http.ROUTES,
            *audit_http.ROUTES,
            *events_http.ROUTES,
            *queries_http.ROUTES,
            *reports_http.ROUTES,
        ],
        title="Croupier core ledger",
        answer_headers=LEDGER_HEADERS,
        description="Serializable double-entry money ledger with a hash-chained journal.",
    )
    app[ANSWER_HEADERS_KEY].append(_announce_epoch)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await app[SERVICE].start()
        await app[FENCING].start()  # peers first: a primary that lost a failover never takes a write
        tasks = [
            t
            for t in (
                app.get(STANDBY),
                app[AUDITOR],
                app[BACKUPS],
                app[LIABILITIES],
                app[STALE_ROUNDS],
                app[audit_http.CHECKPOINTS],
                app[events_http.CONSUMERS],
                app[events_http.WEBHOOKS],
                postgres_watch,
                wal_checkpoints,
                app.get(LEASE),
                fronts,
            )
            if t is not None
        ]
        for task in tasks:
            task.start()
        credentials.start()
        service = app[SERVICE]
        log.info(
            "ledger_started",
            version=logs.version(),
            event_loop=event_loop.name(asyncio.get_running_loop()),
            role=service.role,
            epoch=service.epoch,
            fenced=service.fenced,
            head_sequence=service.head.sequence,
            pipeline_depth=service.writer.pipeline_depth,
            standby_of=standby.primary_url if standby is not None else None,
            config=logs.config_summary(config),
        )
        try:
            yield
        finally:
            log.info("ledger_stopping", head_sequence=service.head.sequence)
            await credentials.stop()
            await app[FENCING].stop()
            for task in tasks:
                await task.stop()
            await app[SERVICE].stop()
            await asyncio.to_thread(tracing.shutdown)  # a last export may wait on the collector
            log.info("ledger_stopped", head_sequence=service.head.sequence)

    app.cleanup_ctx.append(lifecycle)
    return app


def _submitter(service: LedgerService) -> Callable[[web.Request, list[Command]], Awaitable[list[Result]]]:
    """This process's money routes submit to its own service (a front's, over its channel)."""

    def submit(request: web.Request, commands: list[Command]) -> Awaitable[list[Result]]:
        return service.submit(commands)

    return submit


def front_argv(config: LedgerConfig) -> list[str]:
    """The command of one front process (`--channel-fd` follows): the same file and overrides."""
    if config.config_path is None:
        raise ConfigError("ledger.fronts needs a ledger started from a config file (the fronts read it too)")
    return [
        sys.executable,
        "-m",
        "croupier",
        "ledger",
        "front",
        "--config",
        str(config.config_path),
        "--host",
        config.host,
        "--port",
        str(config.port),
        "--data-dir",
        str(config.data_dir),
    ]


def writer_lease_keeper(
    config: LedgerConfig, store: Store, service: LedgerService, metrics: LedgerMetrics, standby: StandbySettings | None
) -> LeaseKeeper:
    """One copy of an active/passive pair: the store's commits prove the lease, the keeper takes it."""
    from core_ledger.store.postgres import PostgresStore, WriterLease

    if standby is not None:
        raise ConfigError(
            "ledger.writer_lease: a copy of an active/passive pair is not a journal-tailing standby "
            "(both copies share one PostgreSQL)"
        )
    if not isinstance(store, PostgresStore):
        raise ConfigError('ledger.writer_lease needs backend = "postgres"')
    store.lease = WriterLease(config.postgres_dsn, store.schema, store.limits, ttl_s=config.writer_lease_ttl_s)
    # A commit left open by this copy, cut off from the database, holds the head row's lock: the
    # server ends it about when it ends the lease's session, so the other copy's take-over is not stuck.
    store.session_settings["idle_in_transaction_session_timeout"] = str(
        round(max(config.writer_lease_ttl_s, IDLE_IN_TRANSACTION_MIN_S) * 1000)
    )
    return LeaseKeeper(store.lease, service.failover, metrics, ttl_s=config.writer_lease_ttl_s)


def _export_capacity(
    registry: CollectorRegistry, metrics: LedgerMetrics, config: LedgerConfig, service: LedgerService
) -> None:
    """Process, build, queue and disk gauges, read at scrape time."""
    register_runtime_collectors(registry, "ledger")
    metrics.write_queue_depth.set_function(lambda: service.queue_depth)
    metrics.data_dir_free_bytes.set_function(free_bytes(config.data_dir))
    if config.backend == "sqlite":
        for name, path in sqlite_files(config.db_path).items():
            metrics.db_bytes.labels(name).set_function(partial(file_bytes, path))


def credential_reloader(
    config: LedgerConfig, tokens: auth.TokenStore, metrics: CredentialMetrics, standby: StandbySettings | None
) -> CredentialReloader:
    """Reloads the accepted tokens (the config file's and its tokens_file's) and the replica token."""
    path = config.config_path
    return CredentialReloader(
        tokens,
        metrics,
        load_tokens=partial(reload_tokens, path) if path is not None else None,
        secrets=[standby.replica_token_file] if standby is not None and standby.replica_token_file else [],
        watched=[p for p in (path, config.tokens_file) if p is not None],
        interval_s=config.credentials_check_interval_s,
    )


def _fault_delay(path: Path) -> float:
    """The test-only apply delay: the number in `path`, 0 while the file is absent or unreadable."""
    try:
        return max(0.0, min(float(path.read_text()), 60.0))
    except (OSError, ValueError):
        return 0.0


def _epoch_claim(request: web.Request, who: auth.Principal) -> Awaitable[None] | None:
    """An authenticated caller's `X-Ledger-Epoch` (the highest epoch it saw) is a claim, judged by
    core_ledger/fencing.py before the request is served: only a peer's proof fences this primary,
    and only edge and replica credentials are heard. Anonymous callers' headers are ignored (the
    shared middleware runs this for authenticated requests only). Without the header: no work."""
    epoch = claimed_epoch(request.headers.get(EPOCH_HEADER))
    return None if epoch is None else request.app[FENCING].claim(epoch, who)


def _announce_epoch(request: web.Request, response: web.StreamResponse) -> None:
    service = request.app[SERVICE]
    response.headers[EPOCH_HEADER] = str(service.epoch)
    response.headers[headers.LEDGER_ROLE] = "fenced" if service.fenced else service.role
