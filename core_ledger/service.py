"""The ledger service: the one object the HTTP layer, the standby tailer, fencing and the audits
call. It builds a ledger copy's parts and delegates to them; it decides nothing itself.

- core_ledger/writer.py: the writer task (group commit, pipelining, fail-stop), the only code
  that journals a command;
- core_ledger/failover.py: role, epoch fence, standby acknowledgements, promotion;
- core_ledger/replica_apply.py: a standby applying journal pages tailed from its primary;
- core_ledger/overlay.py: the rows and heads those share (only one of them mutates it: the writer
  on a primary, the replica apply on a standby).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import Any

from shared.errors import CroupierError

from core_ledger.domain import Command
from core_ledger.failover import Acks, Failover
from core_ledger.metrics import LedgerMetrics
from core_ledger.overlay import Overlay
from core_ledger.replica_apply import ReplicaApply
from core_ledger.store import Head, Store
from core_ledger.task_health import TaskHealth
from core_ledger.watermark import Watermark
from core_ledger.writer import LedgerWriter, Result, WriterLimits


class LedgerService:
    def __init__(
        self,
        store: Store,
        limits: WriterLimits,
        *,
        clock: Callable[[], datetime],
        metrics: LedgerMetrics,
        standby: bool = False,
        passive: bool = False,
    ) -> None:
        self.store = store
        self.limits = limits
        self.metrics = metrics
        self._overlay = Overlay(store)
        metrics.derived_rows_held.set_function(store.derived_rows_held)
        metrics.derived_rows_bound.set_function(store.derived_rows_bound)
        self.failover = Failover(
            store,
            self._overlay,
            metrics,
            standby=standby,
            synchronous_standby=limits.synchronous_standby,
            passive=passive,
        )
        self.writer = LedgerWriter(store, limits, self._overlay, self.failover, clock=clock, metrics=metrics)
        self.replica = ReplicaApply(store, self._overlay, self.failover, metrics)
        self._learning: asyncio.Task[None] | None = None  # fills the writer's key filter after start
        self._learning_health = TaskHealth("key_filter", metrics, base_delay_s=1.0, max_delay_s=60.0)

    @property
    def head(self) -> Head:
        """Of the last durably committed entry (what readers see)."""
        return self._overlay.committed

    @property
    def commits(self) -> Watermark:
        """The committed head sequence (journal long polls wait on it)."""
        return self._overlay.commits

    @property
    def queue_depth(self) -> int:
        return self.writer.queue_depth

    @property
    def role(self) -> str:
        return self.failover.role

    @property
    def epoch(self) -> int:
        return self.failover.epoch

    @property
    def fenced(self) -> bool:
        return self.failover.fenced

    @property
    def fenced_by(self) -> int:
        return self.failover.fenced_by

    @property
    def acks(self) -> Acks:
        return self.failover.acks

    @property
    def acknowledged_sequence(self) -> int:
        return self.failover.acknowledged_sequence

    @property
    def confirmed_sequence(self) -> int:
        return self.failover.confirmed_sequence

    @property
    def halted(self) -> str | None:
        return self.writer.halted

    @property
    def ready(self) -> bool:
        return self.writer.ready

    @property
    def apply_fault_delay(self) -> Callable[[], float]:
        """Test-only fault point: seconds a standby apply pauses before its commit (chaos runs)."""
        return self.replica.apply_fault_delay

    @apply_fault_delay.setter
    def apply_fault_delay(self, delay: Callable[[], float]) -> None:
        self.replica.apply_fault_delay = delay

    async def start(self) -> None:
        await self.store.open()
        plan = self.store.schema_plan
        self.metrics.store_schema_version.set(plan.target if plan is not None else 0)
        await self._overlay.reload()
        learning = self.limits.key_filter and self.failover.role != "passive"  # another copy writes its store
        if learning and await self._overlay.begin_learning():  # before the first write
            self.metrics.key_filter_filled.set(0)
            self._learning = asyncio.create_task(self._learn_keys(), name="ledger-key-filter")
        await self.failover.start()
        self.writer.start()

    async def keys_learned(self) -> bool:
        """Wait until the writer's key filter is filled; False when there is none (a backend that
        cannot list its keys, a passive copy, the filter turned off)."""
        if self._learning is not None:
            await asyncio.shield(self._learning)
        return self._overlay.absent is not None

    async def _learn_keys(self) -> None:
        """Fill the writer's key filter while the ledger serves (until then every key is looked up
        in the store); a failure is logged, counted (`ledger_task_failing{task="key_filter"}`) and
        tried again with backoff."""
        await self._learning_health.until_done(self._overlay.learn_keys, event="ledger_key_filter_fill_failed")
        self.metrics.key_filter_filled.set(1)

    async def stop(self) -> None:
        """Refuse new work, let the writer finish everything queued, close the store."""
        if self._learning is not None:
            self._learning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._learning
            self._learning = None
        await self.writer.stop()
        await self.store.close()

    def submit(self, commands: list[Command], *, lifting_fence: bool = False) -> Coroutine[Any, Any, list[Result]]:
        """The writer's own `submit` (awaited by the caller: no second coroutine per request)."""
        return self.writer.submit(commands, lifting_fence=lifting_fence)

    def enqueue(self, commands: list[Command]) -> asyncio.Future[list[Result]]:
        """The writer's own `enqueue`: refusals raised now, else the future of the results."""
        return self.writer.enqueue(commands)

    async def fence(self, epoch: int, evidence: dict[str, Any]) -> bool:
        return await self.failover.fence(epoch, evidence)

    async def heard_of_epoch(self, epoch: int) -> None:
        await self.failover.heard_of_epoch(epoch)

    async def unfence(self, command: Command, lifted: int) -> Result:
        """Journal `command` (an `unfence`: who, why, the evidence), then clear the durable fence of
        epoch `lifted`. A higher fence that arrived meanwhile stays in force."""
        [result] = await self.writer.submit([command], lifting_fence=True)
        if isinstance(result, CroupierError):
            return result
        await self.failover.lift_fence(lifted, command.principal, command.request.get("force"))
        return result

    async def acknowledge(self, name: str, sequence: int, claimed_hash: str, now: float) -> None:
        await self.failover.acknowledge(name, sequence, claimed_hash, now)

    async def apply_replicated(self, rows: list[tuple[int, str]]) -> None:
        await self.replica.apply(rows)

    async def promote(self, above: int = 0) -> Head:
        return await self.failover.promote(above)
