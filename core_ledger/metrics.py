"""The ledger's Prometheus metrics (names are a contract: dashboards and alerts use them)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.metrics import LATENCY_BUCKETS_S

BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class LedgerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.transactions_total = Counter(
            "ledger_transactions_total", "Journaled transactions by type and outcome.",
            ["type", "outcome"], registry=registry)
        self.commit_duration_seconds = Histogram(
            "ledger_commit_duration_seconds", "Time to write and durably commit one batch.",
            buckets=LATENCY_BUCKETS_S, registry=registry)
        self.commit_batch_size = Histogram(
            "ledger_commit_batch_size", "Requests judged per commit (group commit).",
            buckets=BATCH_SIZE_BUCKETS, registry=registry)
        self.idempotent_replays_total = Counter(
            "ledger_idempotent_replays_total", "Requests answered as exact replays.", registry=registry)
        self.conflicts_total = Counter(
            "ledger_conflicts_total", "Refusals by reason (sticky rejections and key reuse).",
            ["reason"], registry=registry)
        self.journal_head_sequence = Gauge(
            "ledger_journal_head_sequence", "Sequence of the last committed journal entry.", registry=registry)
        self.writer_failures_total = Counter(
            "ledger_writer_failures_total", "Batches that failed to commit (answered 503).", registry=registry)
