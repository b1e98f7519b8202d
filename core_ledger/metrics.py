"""The ledger's Prometheus metrics (names are a contract: dashboards and alerts use them)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.metrics import LATENCY_BUCKETS_S

from core_ledger.domain.outcomes import RejectCode

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
# How an X-Ledger-Epoch above this primary's was judged (core_ledger/fencing.py); alerts match these.
EPOCH_CLAIM_OUTCOMES = ("proven", "refuted", "unverifiable", "role_not_allowed")
# Refusals by a limit no real play reaches (`ledger_conflicts_total`); CroupierLedgerLimitRefusals matches these.
LIMIT_REASONS = (RejectCode.BALANCE_LIMIT_EXCEEDED.value, RejectCode.REPORT_LIMIT_EXCEEDED.value)


BACKUP_OUTCOMES = ("ok", "failed")  # of ledger_backups_total and ledger_restores_total


class BackupMetrics:
    """Backups taken by a serving ledger (admin route and schedule)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.last_success_timestamp_seconds = Gauge(
            "ledger_backup_last_success_timestamp_seconds",
            "When the newest verified backup in backup_dir was taken (NaN: no backup_dir configured).",
            registry=registry,
        )
        self.last_success_timestamp_seconds.set(float("nan"))
        self.backups_total = Counter(
            "ledger_backups_total",
            "Backups attempted (admin route and schedule), by outcome.",
            ["outcome"],
            registry=registry,
        )
        for outcome in BACKUP_OUTCOMES:
            self.backups_total.labels(outcome)
        self.restore = RestoreMetrics(registry)


class RestoreMetrics:
    """Restores run by `croupier ledger restore` (its --metrics-textfile); always 0 in a server."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.restores_total = Counter(
            "ledger_restores_total",
            "Restores attempted, by outcome (failed: refused or broken off).",
            ["outcome"],
            registry=registry,
        )
        for outcome in BACKUP_OUTCOMES:
            self.restores_total.labels(outcome)


class LedgerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.backup = BackupMetrics(registry)
        self.transactions_total = Counter(
            "ledger_transactions_total",
            "Journaled transactions by type and outcome.",
            ["type", "outcome"],
            registry=registry,
        )
        self.commit_duration_seconds = Histogram(
            "ledger_commit_duration_seconds",
            "Time to write and durably commit one batch.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.wal_checkpoint_duration_seconds = Histogram(
            "ledger_wal_checkpoint_duration_seconds",
            "Time to copy the SQLite WAL into the database file, per background checkpoint "
            "(core_ledger/wal_checkpoints.py).",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.wal_checkpoint_writer_seconds = Histogram(
            "ledger_wal_checkpoint_writer_seconds",
            "Time the writer spends between two commits copying the last WAL frames of a background "
            "checkpoint, so that the WAL starts over (SQLite; commits wait for it).",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.commit_batch_size = Histogram(
            "ledger_commit_batch_size",
            "Requests judged per commit (group commit).",
            buckets=BATCH_SIZE_BUCKETS,
            registry=registry,
        )
        self.idempotent_replays_total = Counter(
            "ledger_idempotent_replays_total", "Requests answered as exact replays.", registry=registry
        )
        self.conflicts_total = Counter(
            "ledger_conflicts_total",
            "Refusals by reason (sticky rejections and key reuse).",
            ["reason"],
            registry=registry,
        )
        for reason in LIMIT_REASONS:  # an alert watches them: each series exists before its first refusal
            self.conflicts_total.labels(reason)
        self.journal_head_sequence = Gauge(
            "ledger_journal_head_sequence", "Sequence of the last committed journal entry.", registry=registry
        )
        self.commit_failures_total = Counter(
            "ledger_commit_failures_total", "Batches that failed to commit (answered 503).", registry=registry
        )
        self.audit_chain_ok = Gauge(
            "ledger_audit_chain_ok", "1 if the last hash-chain verification passed, 0 if it failed.", registry=registry
        )
        self.audit_last_verified_timestamp_seconds = Gauge(
            "ledger_audit_last_verified_timestamp_seconds",
            "When the last hash-chain verification finished.",
            registry=registry,
        )
        # Unknown until the first verification finishes (NaN does not fire `== 0` alerts).
        self.audit_chain_ok.set(float("nan"))
        self.audit_last_verified_timestamp_seconds.set(float("nan"))
        self.key_filter_filled = Gauge(
            "ledger_key_filter_filled",
            "1 once the writer's key filter is filled (fresh keys skip the store lookup), 0 while it fills "
            "after a start; NaN: no filter (turned off, a writer-lease copy, a store that cannot list its keys).",
            registry=registry,
        )
        self.key_filter_filled.set(float("nan"))
        self.derived_rows_held = Gauge(
            "ledger_derived_rows_held",
            "Derived rows (balances, rounds, history) of committed groups held in memory behind the durable "
            "journal, to be written by a later commit (SQLite; 0 on other backends).",
            registry=registry,
        )
        self.derived_rows_bound = Gauge(
            "ledger_derived_rows_bound",
            "Derived rows held at most before a commit writes them: `derived_flush_rows`, or fewer when the last "
            "writes of held rows were slow (SQLite; 0 on other backends).",
            registry=registry,
        )
        self.epoch = Gauge("ledger_epoch", "This ledger's epoch (promotion raises it).", registry=registry)
        self.fenced = Gauge(
            "ledger_fenced", "1 once a higher epoch fenced this primary: it refuses every write.", registry=registry
        )
        self.halted = Gauge(
            "ledger_halted",
            "1 once a broken money invariant stopped the writer: it refuses every write "
            "(500 ledger_halted) until restarted.",
            registry=registry,
        )
        self.invariant_failures_total = Counter(
            "ledger_invariant_failures_total",
            "Broken money invariants met by the writer (each halts it).",
            registry=registry,
        )
        self.standby_acked_sequence = Gauge(
            "ledger_standby_acked_sequence",
            "Highest journal sequence a standby has confirmed applying.",
            registry=registry,
        )
        self.standby_ack_wait_seconds = Histogram(
            "ledger_standby_ack_wait_seconds",
            "Synchronous standby: commit to standby confirmation, per group.",
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.task_failures_total = Counter(
            "ledger_task_failures_total",
            "Failures of a background task (standby tailer, auditor), each retried.",
            ["task"],
            registry=registry,
        )
        self.task_failing = Gauge(
            "ledger_task_failing",
            "1 while a background task keeps failing (/readyz is red meanwhile).",
            ["task"],
            registry=registry,
        )
        self.fronts_up = Gauge(
            "ledger_fronts_up",
            "Front processes serving this ledger's address now (core_ledger/fronts.py).",
            registry=registry,
        )
        self.fronts_configured = Gauge(
            "ledger_fronts_configured",
            "Front processes this ledger is configured to run (`fronts`; 0: it serves its address itself).",
            registry=registry,
        )
        self.standby_divergences_total = Counter(
            "ledger_standby_divergences_total",
            "Standby polls refused (409 replica_diverged): the standby's claimed position is not on this chain.",
            registry=registry,
        )
        self.standby_ack_timeouts_total = Counter(
            "ledger_standby_ack_timeouts_total",
            "Synchronous standby: groups answered 503 because no standby confirmed them in time.",
            registry=registry,
        )
        self.epoch_claims_total = Counter(
            "ledger_epoch_claims_total",
            "X-Ledger-Epoch claims above this primary's epoch, by outcome: proven by a peer (fenced), refuted "
            "or unverifiable (no peer proves it: nothing stored), role_not_allowed (ignored; any epoch).",
            ["outcome"],
            registry=registry,
        )
        for outcome in EPOCH_CLAIM_OUTCOMES:
            self.epoch_claims_total.labels(outcome)
        self.peers_unreadable = Gauge(
            "ledger_peers_unreadable",
            "Configured peer ledgers the last peer check could not read (a promotion there goes unseen).",
            registry=registry,
        )
        self.peers_primary_at_own_epoch = Gauge(
            "ledger_peers_primary_at_own_epoch",
            "Peer ledgers the last peer check read as primary, unfenced, at this primary's own epoch "
            "(two primaries no fence can tell apart: a forced promotion, or standbys that could not read each other).",
            registry=registry,
        )
        self.peer_check_failures_total = Counter(
            "ledger_peer_check_failures_total",
            "Peer epoch checks that failed unexpectedly (e.g. the fence could not be stored).",
            registry=registry,
        )
        self.unfences_total = Counter(
            "ledger_unfences_total",
            "Fences lifted by an operator (journaled), by whether it was forced.",
            ["forced"],
            registry=registry,
        )
        for forced in ("true", "false"):
            self.unfences_total.labels(forced)
        self.fault_point_enabled = Gauge(
            "ledger_fault_point_enabled",
            "1 while a test-only fault point (fault_apply_delay_file) is configured: never in production.",
            registry=registry,
        )
        self.store_schema_version = Gauge(
            "ledger_store_schema_version",
            "Schema version of the opened store (0: a store without versions, such as the in-memory one).",
            registry=registry,
        )
        # Capacity and liabilities (read at scrape time, or sampled on a timer: core_ledger/liabilities.py).
        self.write_queue_depth = Gauge(
            "ledger_write_queue_depth",
            "Commands waiting for the writer (503 once queue_depth_max is reached).",
            registry=registry,
        )
        self.db_bytes = Gauge(
            "ledger_db_bytes",
            "Size of the SQLite database files, by file (db, wal); absent on PostgreSQL.",
            ["file"],
            registry=registry,
        )
        self.data_dir_free_bytes = Gauge(
            "ledger_data_dir_free_bytes", "Free bytes on the file system of the ledger's data_dir.", registry=registry
        )
        # PostgreSQL replication as the ledger sees it from the server it writes to (sampled by
        # core_ledger/postgres_watch.py; 0 and never changing on SQLite).
        self.postgres_synchronous_expected = Gauge(
            "ledger_postgres_synchronous_expected",
            "1 when the PostgreSQL server the ledger writes to has synchronous_standby_names set (Patroni's "
            "synchronous mode): a commit is acknowledged only once a synchronous replica has it.",
            registry=registry,
        )
        self.postgres_synchronous_replicas = Gauge(
            "ledger_postgres_synchronous_replicas",
            "Replicas in sync (or quorum) state, as the PostgreSQL server the ledger writes to reports them.",
            registry=registry,
        )
        self.postgres_replicas = Gauge(
            "ledger_postgres_replicas",
            "Replicas streaming from the PostgreSQL server the ledger writes to.",
            registry=registry,
        )
        self.postgres_replication_lag_bytes = Gauge(
            "ledger_postgres_replication_lag_bytes",
            "The largest replay lag of a PostgreSQL replica behind the server the ledger writes to, in WAL bytes.",
            registry=registry,
        )
        self.postgres_replication_lag_seconds = Gauge(
            "ledger_postgres_replication_lag_seconds",
            "The largest replay lag of a PostgreSQL replica behind the server the ledger writes to, in seconds.",
            registry=registry,
        )
        self.postgres_timeline = Gauge(
            "ledger_postgres_timeline",
            "PostgreSQL timeline of the server the ledger writes to (a promotion starts a new one).",
            registry=registry,
        )
        self.postgres_leader_changes_total = Counter(
            "ledger_postgres_leader_changes",
            "Times the ledger found itself writing to another PostgreSQL server, or a new timeline (a failover "
            "or switchover), since it started.",
            registry=registry,
        )
        # The active/passive pair's writer lease (core_ledger/lease_keeper.py).
        self.writer_lease_enabled = Gauge(
            "ledger_writer_lease_enabled",
            "1 when this ledger copy is one of an active/passive pair "
            "(`writer_lease = true`): it writes only while it holds the writer lease.",
            registry=registry,
        )
        self.writer_lease_held = Gauge(
            "ledger_writer_lease_held",
            "1 while this ledger copy holds the writer lease and takes writes "
            "(the active one of the pair); 0 while it waits (passive).",
            registry=registry,
        )
        self.writer_lease_takeovers_total = Counter(
            "ledger_writer_lease_takeovers",
            "Times this ledger copy took the writer lease and became the active one (the first start included).",
            registry=registry,
        )
        self.writer_lease_losses_total = Counter(
            "ledger_writer_lease_losses",
            "Times this active ledger copy lost the writer lease (its session "
            "ended or a heartbeat failed) and stopped writing.",
            registry=registry,
        )
        self.liabilities_minor = Gauge(
            "ledger_liabilities_minor",
            "What the operator owes, in minor units, by kind (player_balances, jackpot_pools, bonus_granted) "
            "and currency, sampled every 30 seconds.",
            ["kind", "currency"],
            registry=registry,
        )
        self.stale_rounds = Gauge(
            "ledger_stale_rounds",
            "Open rounds older than stale_round_after_s at the last check (counted up to 10000; 0 while the "
            "check is off).",
            registry=registry,
        )
        self.stale_rounds_settled_total = Counter(
            "ledger_stale_rounds_settled_total",
            "Stale rounds the stale_round_policy settled, by transaction type (round_refund, round_close) and "
            "outcome (committed, rejected).",
            ["type", "outcome"],
            registry=registry,
        )
