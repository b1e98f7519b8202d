"""Replica apply: on a standby, verify journal rows tailed from the primary against the local head
and apply them with the fold the writer uses (`fold`: `evolve` without the answer), in one commit per page.

The standby tailer (core_ledger/standby_tailer.py) fetches the pages and decides what to do when
one does not verify; this module only checks and stores them. An apply that fails or is cut
(cancelled) may still have landed: the overlay is dropped and the head is read back from the store
before the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import structlog

from core_ledger.domain import ChainCheck, entry_command, entry_text, fold
from core_ledger.failover import Failover
from core_ledger.metrics import LedgerMetrics
from core_ledger.overlay import Overlay
from core_ledger.store import Head, JournalRow, Store

log = structlog.get_logger("croupier.ledger")


class ReplicationError(Exception):
    def __init__(self, detail: str, first_bad_sequence: int | None) -> None:
        super().__init__(detail)
        self.first_bad_sequence = first_bad_sequence


class ReplicaApply:
    def __init__(self, store: Store, overlay: Overlay, failover: Failover, metrics: LedgerMetrics) -> None:
        self.store = store
        self._overlay = overlay
        self._failover = failover
        self.metrics = metrics
        # Test-only fault point: seconds a standby apply pauses before its commit (chaos runs).
        self.apply_fault_delay: Callable[[], float] = lambda: 0.0
        self._head_stale = False  # an apply failed or was cut, reload the head before the next
        # The epoch of the last entry applied here (None until one is): the next page's may not be lower.
        self._last_epoch: int | None = None

    async def apply(self, rows: list[tuple[int, str]]) -> None:
        """Verify (sequence, text) journal rows against the local head and apply them with the
        same fold as the writer (`fold`), in one commit. Raises `ReplicationError` on a broken chain.
        A promotion waits for the whole apply; once promoted, this copy applies nothing (raises
        `InvariantBroken` before touching its overlay, which is then the writer's)."""
        async with self._failover.as_standby():
            await self._apply(rows)

    async def _apply(self, rows: list[tuple[int, str]]) -> None:
        overlay = self._overlay
        if self._head_stale:  # a previous apply failed or was cut: start from what is stored
            await self._reload_head()
        check = ChainCheck(
            head_sequence=overlay.head.sequence, head_hash=overlay.head.hash, head_epoch=self._last_epoch
        )
        if not check.feed(rows):
            raise ReplicationError(
                f"the primary's journal does not verify at {check.first_bad_sequence}", check.first_bad_sequence
            )
        entries = [orjson.loads(text) for _, text in rows]
        try:
            await overlay.load([entry_command(e) for e in entries])
            journal = []
            for entry in entries:
                fold(overlay.rows, entry)
                journal.append(JournalRow(entry["sequence"], entry["transaction"]["id"], entry_text(entry)))
            head = Head(entries[-1]["sequence"], entries[-1]["hash"], entries[-1]["epoch"])
            if (delay := self.apply_fault_delay()) > 0:  # test-only fault point: off unless configured
                await asyncio.sleep(delay)
            await self.store.commit(journal, overlay.take_dirty(), head)
        except BaseException:  # cancelled too: the commit may still land (or have landed)
            self._head_stale = True
            overlay.restart()  # the overlay may hold half-applied rows
            try:
                await self._reload_head()
            except Exception as e:  # noqa: BLE001  any failure: the next apply reloads first (`_head_stale`)
                # Logged here; counted with the apply's own error, raised on below, by the tailer
                # (ledger_replica_errors_total{reason="apply"}); a standby that stays stuck falls
                # behind, which CroupierReplicaLagging matches.
                log.error("ledger_head_reload_failed", error=repr(e), during="standby_apply")
            raise
        self._last_epoch = check.head_epoch
        overlay.rows.forget_entries(head.sequence)
        overlay.head = overlay.committed = head
        overlay.commits.advance(head.sequence)
        self._failover.observe_role()
        self.metrics.journal_head_sequence.set(head.sequence)

    async def _reload_head(self) -> None:
        """The head (and an empty overlay) from what the store holds."""
        stored = await self._overlay.reload()
        self._head_stale = False
        self.metrics.journal_head_sequence.set(stored.sequence)
