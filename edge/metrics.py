"""The edge's Prometheus metrics (names are a contract: see docs/DESIGN.md), on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.errors import CLASS_BY_CODE, CroupierError
from shared.metrics import LATENCY_BUCKETS_S

from edge.ledger_problems import BATCH_REFUSALS

# Sync lag spans loopback milliseconds up to minutes of partition catch-up.
# Label values of the failure counters, created at 0 when the edge starts: an alert on
# `increase(...)` sees the first failure only if the series existed before it.
MONEY_OPERATIONS = ("bet", "win", "rollback", "jackpot_payout", "bonus_claim")
BACKGROUND_TASKS = ("reconciler", "ledger_watch", "ledger_client", "sync")

SYNC_LAG_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# `code` of edge_money_errors_total: the stable codes of shared/errors.py; anything else is `other`
# (a label never takes a value from outside, so the series stay bounded).
ERROR_CODES = frozenset(CLASS_BY_CODE) | {CroupierError.code}


def error_code_label(code: object) -> str:
    return code if isinstance(code, str) and code in ERROR_CODES else "other"


class EdgeMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sync_lag_seconds = Histogram(
            "edge_sync_lag_seconds",
            "Origin write time to applied here, per origin edge (live and catch-up).",
            ["peer"],
            buckets=SYNC_LAG_BUCKETS_S,
            registry=registry,
        )
        self.sync_anti_entropy_docs = Histogram(
            "edge_sync_anti_entropy_docs",
            "Documents one anti-entropy round advertised to the peer (changed since "
            "its last round, plus a sweep page).",
            ["peer"],
            buckets=(0, 1, 10, 100, 1000, 10_000, 65_536, 100_000, 1_000_000),
            registry=registry,
        )
        self.sync_peer_up = Gauge(
            "edge_sync_peer_up", "1 while the sync websocket to the peer is open.", ["peer"], registry=registry
        )
        self.sync_last_success = Gauge(
            "edge_sync_last_success_timestamp_seconds",
            "Last completed state-vector exchange with the peer.",
            ["peer"],
            registry=registry,
        )
        self.sync_stalled_links_total = Counter(
            "edge_sync_stalled_links_total",
            "Sync links cut because the peer stopped reading (a send did not leave within two heartbeats).",
            ["peer"],
            registry=registry,
        )
        self.sync_live_updates_dropped_total = Counter(
            "edge_sync_live_updates_dropped_total",
            "This edge's own updates not pushed live to the peer because its send queue was full "
            "(sync_queue_max); its next anti-entropy round delivers them.",
            ["peer"],
            registry=registry,
        )
        self.sync_pending_updates = Gauge(
            "edge_sync_pending_updates",
            "Documents whose state differed from the peer's at the last state-vector exchange, plus live "
            "updates queued for it.",
            ["peer"],
            registry=registry,
        )
        self.ledger_request_duration_seconds = Histogram(
            "edge_ledger_request_duration_seconds",
            "Ledger calls by operation and outcome.",
            ["operation", "outcome"],
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.money_requests_total = Counter(
            "edge_money_requests_total",
            "Money requests answered, by operation and HTTP status.",
            ["operation", "status"],
            registry=registry,
        )
        self.crdt_updates_total = Counter(
            "edge_crdt_updates_total",
            "CRDT updates applied, by document kind and origin (local or remote).",
            ["doc", "origin"],
            registry=registry,
        )
        self.display_drift_minor = Gauge(
            "edge_display_drift_minor",
            "Display minus ledger truth at the last reconciliation, by kind.",
            ["kind"],
            registry=registry,
        )
        self.ledger_batch_size = Histogram(
            "edge_ledger_batch_size",
            "Money actions per POST /v1/batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=registry,
        )
        self.ledger_batches_refused_total = Counter(
            "edge_ledger_batches_refused_total",
            "Money batches the ledger refused as a whole, by status (400, 413, 422: versions apart or a "
            "bug; 500: the ledger's own bug); each is split until the action at fault is alone.",
            ["status"],
            registry=registry,
        )
        self.effect_failures_total = Counter(
            "edge_effect_failures_total",
            "CRDT effects of committed money answers that could not be applied "
            "(the answer stands; reconciliation repairs the display), by operation.",
            ["operation"],
            registry=registry,
        )
        self.ledger_answers_malformed_total = Counter(
            "edge_ledger_answers_malformed_total",
            "Ledger answers that do not match the wire contract "
            "(shared/contract/answers.py), by operation (batch: a money batch, retried; a read: answered 500).",
            ["operation"],
            registry=registry,
        )
        self.background_failures_total = Counter(
            "edge_background_failures_total",
            "Failures of background tasks (reconciler and ledger_watch, restarted; ledger_client; sync).",
            ["task"],
            registry=registry,
        )
        self.background_task_failing = Gauge(
            "edge_background_task_failing",
            "1 while a background task has failed several rounds in a row (/readyz is then red).",
            ["task"],
            registry=registry,
        )
        self.sync_rejected_updates_total = Counter(
            "edge_sync_rejected_updates_total",
            "Peer updates refused whole before they were applied, by peer link and reason "
            "(reasons unverified_*: deferred until the ledger confirms a fact; the rest: invalid or over quota).",
            ["peer", "reason"],
            registry=registry,
        )
        self.sync_answers_held_back_total = Counter(
            "edge_sync_answers_held_back_total",
            "Answers to a peer's anti-entropy not sent because the local store did not commit what they "
            "carry in time (asked for again in the next round), by peer link.",
            ["peer"],
            registry=registry,
        )
        self.sync_refused_links_total = Counter(
            "edge_sync_refused_links_total",
            "Sync websockets refused at the hello, by reason (claimed_other_edge, unknown_peer, malformed_hello).",
            ["reason"],
            registry=registry,
        )
        self.crdt_invalid_slots_total = Counter(
            "edge_crdt_invalid_slots_total",
            "Slot values skipped by a read because they do not decode, by document kind.",
            ["doc"],
            registry=registry,
        )
        self.store_schema_version = Gauge(
            "edge_store_schema_version", "Schema version of the opened local store (edge.db).", registry=registry
        )
        self.money_errors_total = Counter(
            "edge_money_errors_total",
            "Money requests answered with an error, by operation and stable error code (codes outside "
            "shared/errors.py count as `other`).",
            ["operation", "code"],
            registry=registry,
        )
        self.ledger_breaker_open = Gauge(
            "edge_ledger_breaker_open",
            "1 while the circuit breaker of a ledger URL is open, by its position in ledger_urls (0: first).",
            ["url_index"],
            registry=registry,
        )
        self.db_bytes = Gauge(
            "edge_db_bytes", "Size of the edge's SQLite store files, by file (db, wal).", ["file"], registry=registry
        )
        for operation in MONEY_OPERATIONS:
            self.effect_failures_total.labels(operation)
            self.money_errors_total.labels(operation, "other")
        for task in BACKGROUND_TASKS:
            self.background_failures_total.labels(task)
        for status in sorted(BATCH_REFUSALS):  # a first refusal is an increase
            self.ledger_batches_refused_total.labels(str(status))
