"""The periodic checkpoint job of a serving primary: every `checkpoint_interval_s` it signs the
acknowledged head of the journal (core_ledger/checkpoints.py) and stores it (`add_checkpoint`).

Only what is acknowledged is signed: with a synchronous standby an entry committed but not yet
confirmed may be lost by a failover, and a checkpoint of it would then accuse the promoted
primary of rewriting history. A head already covered by a stored checkpoint is not signed again
(an idle ledger adds no rows) but still counts as covered: `ledger_checkpoint_last_success_timestamp_seconds`
says when the job last made sure the acknowledged head is under a signature, so the staleness
alert fires when checkpoints stop, not when traffic does. A standby or a fenced primary signs
nothing (the gauge is NaN there); failures are retried with backoff (`TaskHealth`, task
"checkpoint") and counted in `ledger_checkpoints_total{outcome="failed"}`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import orjson
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import CollectorRegistry, Counter, Gauge

from shared.errors import Conflict, Unavailable
from shared.tasks import OwnedTask

from core_ledger.checkpoints import key_id, public_pem, sign
from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.task_health import TaskHealth

log = structlog.get_logger("croupier.ledger.checkpoints")

CHECKPOINT_OUTCOMES = ("signed", "unchanged", "failed")
RETRY_S = 10.0  # after a failed checkpoint, doubling up to the interval


class CheckpointsNotConfigured(Conflict):
    code = "checkpoints_not_configured"


class CheckpointMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.last_success_timestamp_seconds = Gauge(
            "ledger_checkpoint_last_success_timestamp_seconds",
            "When the acknowledged journal head was last under a signed checkpoint (NaN: no key configured, "
            "or not a serving primary).",
            registry=registry,
        )
        self.last_success_timestamp_seconds.set(float("nan"))
        self.interval_seconds = Gauge(
            "ledger_checkpoint_interval_seconds",
            "Configured seconds between checkpoints (0: no key, none signed).",
            registry=registry,
        )
        self.last_sequence = Gauge(
            "ledger_checkpoint_last_sequence", "Journal sequence of the newest stored checkpoint.", registry=registry
        )
        self.checkpoints_total = Counter(
            "ledger_checkpoints_total",
            "Checkpoint runs by outcome (signed: a new one stored; unchanged: the head was already covered; failed).",
            ["outcome"],
            registry=registry,
        )
        for outcome in CHECKPOINT_OUTCOMES:
            self.checkpoints_total.labels(outcome)


class Checkpoints:
    def __init__(
        self,
        service: LedgerService,
        key: Ed25519PrivateKey | None,
        interval_s: float,
        metrics: LedgerMetrics,
        registry: CollectorRegistry,
        clock: Callable[[], datetime],
    ) -> None:
        self.service = service
        self.key = key
        self.interval_s = interval_s
        self.metrics = CheckpointMetrics(registry)
        self.metrics.interval_seconds.set(interval_s if key is not None else 0)
        self._clock = clock
        self._task = OwnedTask("ledger-checkpoints")
        retry = min(RETRY_S, interval_s)
        self.health = TaskHealth("checkpoint", metrics, base_delay_s=retry, max_delay_s=max(retry, interval_s))

    @property
    def key_id(self) -> str | None:
        return key_id(self.key.public_key()) if self.key is not None else None

    @property
    def public_key_pem(self) -> str | None:
        return public_pem(self.key.public_key()) if self.key is not None else None

    async def checkpoint(self, *, trigger: str) -> dict[str, Any] | None:
        """Sign the acknowledged head unless a stored checkpoint covers it; the newest checkpoint
        (None: nothing acknowledged yet). Raises Unavailable on a copy that may not sign."""
        if self.key is None:
            raise CheckpointsNotConfigured("no checkpoint_key_file is configured: see docs/OPERATIONS.md")
        service = self.service
        if service.role != "primary" or service.fenced:
            self.metrics.last_success_timestamp_seconds.set(float("nan"))
            raise Unavailable("only a serving primary signs checkpoints", code="not_primary")
        try:
            return await self._checkpoint(trigger)
        except Exception:
            self.metrics.checkpoints_total.labels("failed").inc()
            raise

    async def _checkpoint(self, trigger: str) -> dict[str, Any] | None:
        assert self.key is not None
        store = self.service.store
        sequence, epoch = self.service.confirmed_sequence, self.service.epoch
        latest = await store.latest_checkpoint()
        if latest is not None:
            self.metrics.last_sequence.set(latest["sequence"])
        if sequence == 0 or (latest is not None and latest["sequence"] >= sequence):
            self.metrics.checkpoints_total.labels("unchanged").inc()
            self.metrics.last_success_timestamp_seconds.set(time.time())
            return latest
        [(found, text)] = await store.journal(sequence - 1, 1)
        assert found == sequence, (found, sequence)
        entry_hash = orjson.loads(text)["hash"]
        signed = sign(self.key, sequence=sequence, hash_=entry_hash, epoch=epoch, time=self._clock().isoformat())
        added = await store.add_checkpoint(signed)
        self.metrics.checkpoints_total.labels("signed").inc()
        self.metrics.last_sequence.set(sequence)
        self.metrics.last_success_timestamp_seconds.set(time.time())
        log.info(
            "checkpoint_signed",
            trigger=trigger,
            sequence=sequence,
            hash=entry_hash,
            epoch=epoch,
            key_id=signed["key_id"],
            stored=added,
        )
        return signed

    def start(self) -> None:
        if self.key is not None:
            self._task.start(self._run())

    async def stop(self) -> None:
        await self._task.stop()

    async def _step(self) -> None:
        if self.service.role != "primary" or self.service.fenced:
            self.metrics.last_success_timestamp_seconds.set(float("nan"))
            return
        await self.checkpoint(trigger="schedule")

    async def _run(self) -> None:
        await self.health.repeat(self._step, self.interval_s, event="checkpoint_failed")
