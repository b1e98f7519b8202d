"""The metric names dashboards and alerts rely on (the "Metrics" contract of docs/DESIGN.md, which
includes the audit, commit-failure and failover metrics the alert rules need). Names, types and
label names here are what the services export.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: str  # "counter" | "gauge" | "histogram"
    labels: tuple[str, ...] = ()

    def sample_names(self) -> tuple[str, ...]:
        """The series names this metric shows in the Prometheus text exposition."""
        if self.kind == "histogram":
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


EDGE_METRICS = (
    MetricSpec("edge_sync_lag_seconds", "histogram", ("peer",)),
    MetricSpec("edge_sync_peer_up", "gauge", ("peer",)),
    MetricSpec("edge_sync_anti_entropy_docs", "histogram", ("peer",)),
    MetricSpec("edge_sync_last_success_timestamp_seconds", "gauge", ("peer",)),
    MetricSpec("edge_sync_pending_updates", "gauge", ("peer",)),
    MetricSpec("edge_sync_stalled_links_total", "counter", ("peer",)),
    MetricSpec("edge_sync_live_updates_dropped_total", "counter", ("peer",)),
    MetricSpec("edge_ledger_request_duration_seconds", "histogram", ("operation", "outcome")),
    MetricSpec("edge_money_requests_total", "counter", ("operation", "status")),
    MetricSpec("edge_crdt_updates_total", "counter", ("doc", "origin")),
    MetricSpec("edge_display_drift_minor", "gauge", ("kind",)),
    # A committed answer's CRDT effect that failed to apply (the answer stands; reconciliation repairs).
    MetricSpec("edge_effect_failures_total", "counter", ("operation",)),
    # A ledger answer that does not match the wire contract (versions apart, or a bug on one side).
    MetricSpec("edge_ledger_answers_malformed_total", "counter", ("operation",)),
    # A money batch the ledger refused whole as a bad request (split until the action at fault is alone).
    MetricSpec("edge_ledger_batches_refused_total", "counter", ("status",)),
    # Hostile or broken peers, and background tasks that keep failing.
    MetricSpec("edge_sync_rejected_updates_total", "counter", ("peer", "reason")),
    MetricSpec("edge_sync_refused_links_total", "counter", ("reason",)),
    # Anti-entropy answers a slow local store held back (asked for again next round).
    MetricSpec("edge_sync_answers_held_back_total", "counter", ("peer",)),
    MetricSpec("edge_crdt_invalid_slots_total", "counter", ("doc",)),
    MetricSpec("edge_background_failures_total", "counter", ("task",)),
    MetricSpec("edge_background_task_failing", "gauge", ("task",)),
    # Schema version of the local store: copies of one service on different versions (an upgrade half done).
    MetricSpec("edge_store_schema_version", "gauge"),
    # Errors of money requests by stable code (edge_money_requests_total keeps its labels), the breaker
    # of each ledger URL by its position in ledger_urls (never the URL), and the store's files.
    MetricSpec("edge_money_errors_total", "counter", ("operation", "code")),
    MetricSpec("edge_ledger_breaker_open", "gauge", ("url_index",)),
    MetricSpec("edge_db_bytes", "gauge", ("file",)),
)

LEDGER_METRICS = (
    MetricSpec("ledger_transactions_total", "counter", ("type", "outcome")),
    MetricSpec("ledger_commit_duration_seconds", "histogram"),
    MetricSpec("ledger_wal_checkpoint_duration_seconds", "histogram"),
    MetricSpec("ledger_wal_checkpoint_writer_seconds", "histogram"),
    MetricSpec("ledger_commit_batch_size", "histogram"),
    MetricSpec("ledger_idempotent_replays_total", "counter"),
    MetricSpec("ledger_conflicts_total", "counter", ("reason",)),
    MetricSpec("ledger_journal_head_sequence", "gauge"),
    # Dashboards annotate promotions from its changes (and fences from ledger_fenced's).
    MetricSpec("ledger_epoch", "gauge"),
    # Exported by standbys only; a primary without standbys has no such series.
    MetricSpec("ledger_replica_lag_sequences", "gauge"),
    MetricSpec("ledger_replica_lag_seconds", "gauge"),
    # Needed by the "ledger write failures" and "audit chain broken" alerts.
    MetricSpec("ledger_commit_failures_total", "counter"),
    MetricSpec("ledger_audit_chain_ok", "gauge"),
    MetricSpec("ledger_audit_last_verified_timestamp_seconds", "gauge"),
    # Failover: a fenced copy refuses writes; a synchronous primary counts standby confirmations that timed out.
    MetricSpec("ledger_fenced", "gauge"),
    MetricSpec("ledger_standby_ack_timeouts_total", "counter"),
    # Replication safety: a primary refusing a standby's unproven position; a standby's tailer stopped for
    # good (reason: chain | diverged); background tasks (task: standby | audit) failing and retrying.
    MetricSpec("ledger_standby_divergences_total", "counter"),
    MetricSpec("ledger_replica_halted", "gauge", ("reason",)),
    MetricSpec("ledger_task_failures_total", "counter", ("task",)),
    MetricSpec("ledger_task_failing", "gauge", ("task",)),
    # Front processes serving the ledger's address (`fronts`), against how many are configured.
    MetricSpec("ledger_fronts_up", "gauge"),
    MetricSpec("ledger_fronts_configured", "gauge"),
    # Fencing at the trust boundary: epoch claims by outcome, failed peer checks, fences lifted by an operator.
    MetricSpec("ledger_epoch_claims_total", "counter", ("outcome",)),
    MetricSpec("ledger_peer_check_failures_total", "counter"),
    MetricSpec("ledger_peers_unreadable", "gauge"),
    MetricSpec("ledger_peers_primary_at_own_epoch", "gauge"),
    MetricSpec("ledger_unfences_total", "counter", ("forced",)),
    # Fail-stop: a broken money invariant halts the writer (500 ledger_halted) until a restart.
    MetricSpec("ledger_halted", "gauge"),
    MetricSpec("ledger_invariant_failures_total", "counter"),
    # A test-only fault point (the chaos run's slow standby apply) configured: must never be in production.
    MetricSpec("ledger_fault_point_enabled", "gauge"),
    # Backups (core_ledger/backup_jobs.py) and restores (`croupier ledger restore --metrics-textfile`).
    MetricSpec("ledger_backup_last_success_timestamp_seconds", "gauge"),
    MetricSpec("ledger_backups_total", "counter", ("outcome",)),
    MetricSpec("ledger_restores_total", "counter", ("outcome",)),
    # Schema version of the opened store: copies on different versions (an upgrade half done).
    MetricSpec("ledger_store_schema_version", "gauge"),
    # Anchored audit (core_ledger/checkpoint_jobs.py): signed checkpoints of the journal head.
    MetricSpec("ledger_checkpoint_last_success_timestamp_seconds", "gauge"),
    MetricSpec("ledger_checkpoint_interval_seconds", "gauge"),
    MetricSpec("ledger_checkpoint_last_sequence", "gauge"),
    MetricSpec("ledger_checkpoints_total", "counter", ("outcome",)),
    # The event stream (core_ledger/consumers.py): per named consumer, bounded by event_consumers_max.
    MetricSpec("ledger_event_consumer_lag_entries", "gauge", ("consumer",)),
    # Webhook delivery of the event stream (core_ledger/webhooks.py).
    MetricSpec("ledger_webhook_deliveries_total", "counter", ("outcome",)),
    MetricSpec("ledger_webhook_dead_letters", "gauge", ("consumer",)),
    # Capacity: the writer's queue, the SQLite files (file: db | wal) and the free space of data_dir;
    # liabilities by kind (player_balances | jackpot_pools | bonus_granted) and currency.
    MetricSpec("ledger_write_queue_depth", "gauge"),
    MetricSpec("ledger_db_bytes", "gauge", ("file",)),
    MetricSpec("ledger_data_dir_free_bytes", "gauge"),
    MetricSpec("ledger_liabilities_minor", "gauge", ("kind", "currency")),
    # Interrupted rounds (core_ledger/rounds_job.py): open rounds older than stale_round_after_s, and
    # what the stale_round_policy settled (type: round_refund | round_close; outcome: committed | rejected).
    MetricSpec("ledger_stale_rounds", "gauge"),
    MetricSpec("ledger_stale_rounds_settled_total", "counter", ("type", "outcome")),
    # PostgreSQL replication as the ledger sees it from the server it writes to (core_ledger/postgres_watch.py;
    # 0 on SQLite): synchronous state, replica lag, timeline, leader changes.
    MetricSpec("ledger_postgres_synchronous_expected", "gauge"),
    MetricSpec("ledger_postgres_synchronous_replicas", "gauge"),
    MetricSpec("ledger_postgres_replicas", "gauge"),
    MetricSpec("ledger_postgres_replication_lag_bytes", "gauge"),
    MetricSpec("ledger_postgres_replication_lag_seconds", "gauge"),
    MetricSpec("ledger_postgres_timeline", "gauge"),
    MetricSpec("ledger_postgres_leader_changes_total", "counter"),
    # The active/passive pair's writer lease (core_ledger/lease_keeper.py; 0 unless writer_lease is on).
    MetricSpec("ledger_writer_lease_enabled", "gauge"),
    MetricSpec("ledger_writer_lease_held", "gauge"),
    MetricSpec("ledger_writer_lease_takeovers_total", "counter"),
    MetricSpec("ledger_writer_lease_losses_total", "counter"),
)

COMMON_METRICS = (
    MetricSpec("http_request_duration_seconds", "histogram", ("route", "method", "status")),
    # Client connections (shared/http_serving.py): open now, and refused at http_connections_max.
    MetricSpec("http_connections_open", "gauge"),
    MetricSpec("http_connections_refused_total", "counter"),
    # Every process (shared/runtime_metrics.py): its build, and prometheus_client's process, platform
    # and GC collectors (the USE panels: CPU, memory, file descriptors).
    MetricSpec("croupier_build_info", "gauge", ("version", "service")),
    MetricSpec("process_cpu_seconds_total", "counter"),
    MetricSpec("process_resident_memory_bytes", "gauge"),
    MetricSpec("process_virtual_memory_bytes", "gauge"),
    MetricSpec("process_open_fds", "gauge"),
    MetricSpec("process_max_fds", "gauge"),
    MetricSpec("process_start_time_seconds", "gauge"),
    MetricSpec("python_info", "gauge", ("implementation", "major", "minor", "patchlevel", "version")),
    MetricSpec("python_gc_collections_total", "counter", ("generation",)),
    # Token files reloaded without a restart (shared/credentials.py): by result (ok | error), and
    # 1 while the last reload failed and the old credentials stay in use.
    MetricSpec("credential_reloads_total", "counter", ("result",)),
    MetricSpec("credential_reload_failing", "gauge"),
    # Spans handed to the OTLP exporter (shared/tracing.py), by result (ok | failed: lost); 0 while tracing is off.
    MetricSpec("trace_spans_exported_total", "counter", ("result",)),
)

ALL_METRICS = EDGE_METRICS + LEDGER_METRICS + COMMON_METRICS

# Series Prometheus itself attaches to every scrape target.
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

# Label values the rules match on; the services must use exactly these (tests/monitoring/
# test_emitted_labels.py drives the real code and checks every matcher of the rules and dashboards).
# `outcome` of edge_ledger_request_duration_seconds, as edge/ledger_client.py emits it:
EDGE_LEDGER_OUTCOMES = ("ok", "rejected", "not_primary", "busy", "error", "timeout")
# ...and those that mean the edge got no usable answer (connect error, 5xx, malformed answer, timeout,
# a new connection refused by a ledger at its connection limit):
EDGE_LEDGER_OUTCOMES_UNANSWERED = ("busy", "error", "timeout")


def exported_sample_names() -> frozenset[str]:
    return frozenset(n for m in ALL_METRICS for n in m.sample_names())
