"""Exactly-once CRDT effects of committed ledger transactions, and reconciliation (pure).

An effect (a jackpot contribution, a bonus wagering delta) of a committed transaction is applied
iff the transaction went through this edge (`via`), its `sequence` was not applied yet for that
key, and the sequence is above the key's reconciliation watermark.

Reconciliation reads the ledger's truth for this edge's slot as of ledger sequence `as_of` and
sets the slot to truth + the effects already applied with sequence > `as_of` (the truth does not
contain them yet), then raises the watermark to `as_of`: an answer still in flight with a
sequence <= `as_of` is already inside the truth and must not be applied again. Effects at or
below the watermark are forgotten, which bounds the book.

Sequences are places in one ledger copy's history, and after a failover two copies may hold
different entries at one sequence (a diverged tail the new primary never had). So effects and
watermarks are ordered by `position(epoch, sequence)`, the epoch being that of the copy that
journaled the entry or answered the read: a copy's history contains every entry of a lower
epoch up to where it took over, and epochs are never reused, so an effect at or below a truth's
position is inside that truth (or, from a diverged tail, in no history that counts any more), and
a truth read from an older copy never lowers what a newer one said.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge.crdt.slots import BonusSlot, JackpotSlot

SEQUENCE_BITS = 40  # a trillion journal entries per epoch


def position(epoch: int, sequence: int) -> int:
    """(epoch, sequence) as one integer ordered like the pair (kept where sequences were)."""
    if not 0 <= sequence < 1 << SEQUENCE_BITS or epoch < 0:
        raise ValueError(f"not a journal position: epoch {epoch}, sequence {sequence}")
    return epoch << SEQUENCE_BITS | sequence


@dataclass(frozen=True)
class Effect:
    key: str  # document name
    sequence: int  # the entry's `position(epoch, sequence)`
    delta: dict[str, Any]  # jackpot: {"epoch", "amount_minor"[, "seed_minor"]}; bonus: {bonus_id: amount_minor}


class EffectBook:
    """Applied effects above each key's watermark, and the watermarks."""

    def __init__(self) -> None:
        self._applied: dict[str, dict[int, dict[str, Any]]] = {}
        self._watermark: dict[str, int] = {}

    def load(self, effects: list[Effect], watermarks: dict[str, int]) -> None:
        self._watermark.update(watermarks)
        for e in effects:
            if e.sequence > self._watermark.get(e.key, 0):
                self._applied.setdefault(e.key, {})[e.sequence] = e.delta

    def should_apply(self, key: str, sequence: int) -> bool:
        return sequence > self._watermark.get(key, 0) and sequence not in self._applied.get(key, {})

    def record(self, effect: Effect) -> None:
        assert self.should_apply(effect.key, effect.sequence), effect
        self._applied.setdefault(effect.key, {})[effect.sequence] = effect.delta

    def watermark(self, key: str) -> int:
        return self._watermark.get(key, 0)

    def after(self, key: str, as_of: int) -> list[tuple[int, dict[str, Any]]]:
        return sorted((s, d) for s, d in self._applied.get(key, {}).items() if s > as_of)

    def raise_watermark(self, key: str, as_of: int) -> bool:
        """Forget effects the ledger's truth now contains; False if `as_of` is older than the mark."""
        if as_of < self._watermark.get(key, 0):
            return False
        self._watermark[key] = as_of
        kept = {s: d for s, d in self._applied.get(key, {}).items() if s > as_of}
        if kept:
            self._applied[key] = kept
        else:
            self._applied.pop(key, None)
        return True

    def keys(self) -> list[str]:
        return sorted(set(self._applied) | set(self._watermark))


@dataclass(frozen=True)
class JackpotTruth:
    epoch: int
    seed_minor: int
    currency: str
    mine_minor: int  # contributions_by_edge[this edge] in `epoch`
    pool_minor: int
    as_of: int


def reconcile_jackpot(truth: JackpotTruth, pending: list[tuple[int, dict[str, Any]]], ts: float) -> JackpotSlot:
    """This edge's slot = ledger truth for it + its effects the truth does not contain yet."""
    p, n = (truth.mine_minor, 0) if truth.mine_minor >= 0 else (0, -truth.mine_minor)
    slot = JackpotSlot(truth.epoch, p, n, truth.seed_minor, truth.currency, ts)
    for _, delta in pending:
        slot = slot.add(int(delta["epoch"]), int(delta["amount_minor"]), ts, delta.get("seed_minor"))
    return slot


def reconcile_bonus(mine_by_bonus: dict[str, int], pending: list[tuple[int, dict[str, Any]]], ts: float) -> BonusSlot:
    slot = BonusSlot({}, ts).add(mine_by_bonus, ts)
    for _, delta in pending:
        slot = slot.add({b: int(a) for b, a in delta.items()}, ts)
    return slot
