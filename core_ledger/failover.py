"""Failover state of one ledger copy: its role, its epoch's fence, the standbys' acknowledgements,
and promotion. The writer asks it whether it may write (`role`, `fenced`); nothing here talks to
the network. Deciding *whether* a fence is proven (claims, peer surveys, the operator's unfence
command) is core_ledger/fencing.py's job: it calls `fence` only on verified evidence.

A primary fenced by a higher epoch (`fence`) answers every write 503 `not_primary`, even one whose
commit was under way, until an operator lifts the fence (`lift_fence`, after the writer journaled
the `unfence`). A standby keeps the highest epoch its primary announced (`heard_of_epoch`), so a
promotion (`promote`) goes above every epoch it heard of.

Active/passive pair on one PostgreSQL (core_ledger/lease_keeper.py): a copy configured with the
writer lease starts `passive` (it takes no write) and becomes `primary` through `take_over` once it
holds the lease (the head read back from the store, the epoch raised durably, as a promotion);
losing the lease makes it `passive` again at once (`step_down`).

Acknowledgements: the journal endpoint advances nothing itself. Each standby's poll
`after_sequence=N&after_hash=H` acknowledges N once H is the primary's own hash at N
(`acknowledge`), which advances `acks` (answers of a synchronous primary wait on `acks.best`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from shared.contract import headers
from shared.errors import Conflict, Unavailable

from core_ledger.domain import GENESIS_HASH, InvariantBroken
from core_ledger.domain.journal import EPOCH_MAX
from core_ledger.metrics import LedgerMetrics
from core_ledger.overlay import Overlay
from core_ledger.store import Head, StorageError, Store
from core_ledger.store.base import UNFINISHED_RESTORE_FENCE
from core_ledger.watermark import Watermark

log = structlog.get_logger("croupier.ledger")

EPOCH_HEADER = headers.LEDGER_EPOCH  # on every ledger answer; edges send back the highest they saw
STANDBYS_MAX = 64  # acknowledgements remembered (one per replica credential in practice)


@dataclass
class StandbyAck:
    acked_sequence: int
    seen_at: float  # loop time of its last poll


class Acks:
    """Per standby (credential name): the sequence it has durably applied, from its polls."""

    def __init__(self) -> None:
        self.best = Watermark()
        self.by_name: dict[str, StandbyAck] = {}

    def record(self, name: str, sequence: int, now: float) -> None:
        if name not in self.by_name and len(self.by_name) >= STANDBYS_MAX:
            oldest = min(self.by_name, key=lambda n: self.by_name[n].seen_at)
            del self.by_name[oldest]
        previous = self.by_name.get(name)
        self.by_name[name] = StandbyAck(max(sequence, previous.acked_sequence if previous else 0), now)
        self.best.advance(sequence)

    def report(self, head_sequence: int, now: float) -> list[dict[str, object]]:
        return [
            {
                "name": name,
                "acked_sequence": a.acked_sequence,
                "lag_sequences": max(0, head_sequence - a.acked_sequence),
                "last_poll_age_s": round(now - a.seen_at, 3),
            }
            for name, a in sorted(self.by_name.items())
        ]


class Failover:
    def __init__(
        self,
        store: Store,
        overlay: Overlay,
        metrics: LedgerMetrics,
        *,
        standby: bool,
        synchronous_standby: bool,
        passive: bool = False,
    ) -> None:
        self.store = store
        self._overlay = overlay
        self.metrics = metrics
        self.role = "standby" if standby else "passive" if passive else "primary"
        self._synchronous_standby = synchronous_standby
        self.fenced_by = 0  # the higher epoch that fenced this primary (0: not fenced)
        self._acked_floor = 0  # entries acknowledged before this process (or this copy) was primary
        self._confirmed_floor = 0  # entries this copy held when promoted: they survived a failover
        self.acks = Acks()  # what standbys have applied (synchronous answers wait on it)
        self._promoting = asyncio.Lock()

    async def start(self) -> None:
        """After the overlay's heads were read from the store: the durable fence, and the floor."""
        # What this copy holds at start may all have been answered before (by it, before a restart):
        # it counts as acknowledged, so no standby that holds less is ever promoted over it.
        self._acked_floor = self._overlay.head.sequence
        self.fenced_by = await self.store.fenced_by()
        if self.fenced_by == UNFINISHED_RESTORE_FENCE:
            raise StorageError(
                "this store is a restore that stopped midway (its journal ends early): "
                "drop it and restore again into an empty store"
            )
        self.observe_role()

    @property
    def epoch(self) -> int:
        return self._overlay.head.epoch

    @property
    def acknowledged_sequence(self) -> int:
        """The highest sequence whose answer may have gone out as a success (what a standby must
        hold to be promoted): with a synchronous standby, what some standby confirmed, and all this
        copy held when it started or was promoted (answered before, maybe); else every commit."""
        if self._synchronous_standby:
            return max(self._acked_floor, self.confirmed_sequence)
        return self._overlay.committed.sequence

    @property
    def confirmed_sequence(self) -> int:
        """What events and checkpoints may serve: with a synchronous standby, what some standby
        confirmed since this copy started (never more than committed), and what it held when it was
        promoted (that survived a failover), so no failover that drops an unconfirmed tail
        contradicts them; else every commit. Unlike `acknowledged_sequence`, never what a primary
        held when it started: that tail may be one a standby never got."""
        committed = self._overlay.committed
        if self._synchronous_standby:
            return max(self._confirmed_floor, min(self.acks.best.value, committed.sequence))
        return committed.sequence

    @property
    def fenced(self) -> bool:
        """A fence holds against a primary of a lower epoch only: once this copy is promoted above
        it (promotion raises the epoch past every fence it heard of), the fence is history. On a
        standby the stored fence is only the highest epoch it heard of (see `heard_of_epoch`)."""
        return self.role == "primary" and self.fenced_by > self._overlay.head.epoch

    def refusal(self) -> Unavailable:
        return Unavailable(
            f"this ledger was fenced by epoch {self.fenced_by}: write to the current primary", code="not_primary"
        )

    async def fence(self, epoch: int, evidence: dict[str, Any]) -> bool:
        """Verified evidence (a configured peer announced it) that a ledger of `epoch` exists: if
        that is above ours, this primary is fenced at once (in memory, before any other answer) and
        durably (it survives a restart). True when this call fenced it. Never call this with an
        epoch a caller merely claimed."""
        own_epoch = self._overlay.head.epoch
        if self.role != "primary" or epoch <= own_epoch:
            return False
        fenced_now = epoch > self.fenced_by
        if fenced_now:
            self.fenced_by = epoch
            self.observe_role()
            log.warning("ledger_fenced", own_epoch=own_epoch, fenced_by_epoch=epoch, evidence=evidence)
        await self.store.fence(self.fenced_by)  # again on every proof: a failed store write is retried
        return fenced_now

    async def heard_of_epoch(self, epoch: int) -> None:
        """Standby: its primary announced `epoch`. Kept durably (as the store's fence record) so a
        later promotion goes above it even when no entry of that epoch reached this copy yet: a
        primary promoted to epoch E that has journaled nothing since, then fails, must never see
        this copy promoted to E as well (two copies writing under one epoch)."""
        if self.role != "standby" or epoch <= max(self._overlay.head.epoch, self.fenced_by):
            return
        await self.store.fence(epoch)
        self.fenced_by = epoch
        log.info("ledger_heard_of_epoch", epoch=epoch, own_epoch=self._overlay.head.epoch)

    async def lift_fence(self, lifted: int, principal: str, forced: Any) -> None:
        """After the writer journaled the `unfence`: clear the durable fence of epoch `lifted`. A
        higher fence that arrived meanwhile stays in force."""
        remaining = await self.store.unfence(lifted)
        if self.fenced_by <= lifted:
            self.fenced_by = remaining
        self.observe_role()
        log.warning(
            "ledger_unfenced",
            lifted_epoch=lifted,
            still_fenced_by=self.fenced_by or None,
            principal=principal,
            forced=forced,
        )

    async def acknowledge(self, name: str, sequence: int, claimed_hash: str, now: float) -> None:
        """A standby polled after `sequence`, proving with `claimed_hash` (its entry's hash there)
        that it holds this ledger's chain up to it: only then has it durably applied everything up
        to `sequence`. A hash that differs, or a sequence this ledger never stored, means its copy
        diverged: `Conflict` `replica_diverged`, nothing recorded."""
        own = await self._hash_at(sequence)
        if own != claimed_hash:
            self.metrics.standby_divergences_total.inc()
            log.error(
                "standby_diverged",
                standby=name,
                sequence=sequence,
                head_sequence=self._overlay.committed.sequence,
                held_here=own is not None,
            )
            raise Conflict(
                f"the standby's entry {sequence} is not this ledger's "
                f"({'another hash' if own is not None else 'no such entry here'}): "
                "its copy diverged and must be rebuilt from this primary",
                code="replica_diverged",
                sequence=sequence,
            )
        self.acks.record(name, sequence, now)
        self.metrics.standby_acked_sequence.set(self.acks.best.value)

    async def _hash_at(self, sequence: int) -> str | None:
        """The hash of this ledger's stored entry at `sequence` (the genesis hash at 0); None if absent."""
        if sequence == 0:
            return GENESIS_HASH
        committed = self._overlay.committed
        if sequence == committed.sequence:
            return committed.hash
        rows = await self.store.journal(sequence - 1, 1)
        if not rows or rows[0][0] != sequence:
            return None
        return str(orjson.loads(rows[0][1])["hash"])

    @contextlib.asynccontextmanager
    async def as_standby(self) -> AsyncIterator[None]:
        """Held while a standby stores another ledger's journal: a promotion waits for it to end,
        and once promoted the copy stores no other ledger's page (its head would fall back to the
        old epoch)."""
        async with self._promoting:
            if self.role != "standby":
                raise InvariantBroken("only a standby applies another ledger's journal")
            yield

    async def promote(self, above: int = 0) -> Head:
        """Standby → primary: raise the epoch (stored durably) so every later entry carries it,
        above `above` too (the highest epoch the peers announced). The caller has stopped the
        tailer, so nothing else mutates the store. The head is read back from the store first:
        the new primary extends exactly what is stored."""
        overlay = self._overlay
        async with self._promoting:  # two promote calls at once raise the epoch once
            if self.role == "standby":
                stored = await overlay.reload()
                self.metrics.journal_head_sequence.set(stored.sequence)
                # Above every epoch this copy has heard of, so no two primaries ever share one.
                epoch = max(overlay.head.epoch, self.fenced_by, above) + 1
                if epoch > EPOCH_MAX:  # no entry of it would verify, no edge would read it
                    raise Conflict(
                        f"no epoch is left above {epoch - 1}, the highest this copy or a peer announced: "
                        "a peer announcing it is lying or broken; take it out of `peers` and promote again",
                        code="epoch_exhausted",
                    )
                head = Head(overlay.head.sequence, overlay.head.hash, epoch)
                await self.store.commit([], {}, head)
                overlay.head = overlay.committed = head
                self._acked_floor = head.sequence  # the old primary may have acknowledged all it gave us
                self._confirmed_floor = head.sequence  # and this copy, now the primary, holds it
                self.role = "primary"
                self.observe_role()
                log.warning("ledger_promoted", epoch=head.epoch, head_sequence=head.sequence)
        return overlay.head

    async def take_over(self) -> Head:
        """Passive → primary, once this copy holds the writer lease: read the head back from the
        store (the other copy wrote it), raise the epoch above every one stored or heard of, durably
        (that commit itself proves the lease), and only then take writes."""
        overlay = self._overlay
        async with self._promoting:
            if self.role != "passive":
                return overlay.head
            stored = await overlay.reload()
            self.fenced_by = max(self.fenced_by, await self.store.fenced_by())
            head = Head(stored.sequence, stored.hash, max(stored.epoch, self.fenced_by) + 1)
            await self.store.commit([], {}, head)
            overlay.head = overlay.committed = head
            overlay.commits.advance(head.sequence)
            self.metrics.journal_head_sequence.set(head.sequence)
            self._acked_floor = head.sequence  # the other copy may have acknowledged all of it
            self._confirmed_floor = head.sequence  # in the store both copies share
            self.role = "primary"
            self.observe_role()
            log.warning("ledger_took_over", epoch=head.epoch, head_sequence=head.sequence)
        return overlay.head

    def step_down(self, reason: str) -> None:
        """Primary → passive at once (the lease is lost or in doubt): every later write is refused
        503 `not_primary`; a commit under way is still checked against the lease in its transaction."""
        if self.role != "primary":
            return
        self.role = "passive"
        self.observe_role()
        log.warning(
            "ledger_stepped_down",
            epoch=self._overlay.head.epoch,
            head_sequence=self._overlay.committed.sequence,
            reason=reason,
        )

    def observe_role(self) -> None:
        self.metrics.epoch.set(self._overlay.head.epoch)
        self.metrics.fenced.set(1 if self.fenced else 0)
