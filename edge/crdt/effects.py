"""Exactly-once CRDT effects of committed ledger transactions, and reconciliation (pure).

What the edge does with each transaction type is one table, `EFFECTS_BY_TYPE` (see the end of this
module): the CRDT effects, the documents to reconcile when applying them failed, and the jackpot
epochs the ledger's answer reports (admission uses them).

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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from shared.contract.answers import BonusWagering, JackpotContribution, Transaction

from edge.crdt.slots import BONUS, JACKPOT, BonusSlot, JackpotSlot, doc_name

T = TypeVar("T")

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


# --- the CRDT effects of each transaction type ---------------------------------------------------


@dataclass(frozen=True)
class SlotEffect:
    """A delta for this edge's own slot of one document (applied once, by its position)."""

    doc: str  # document name
    delta: dict[str, int]  # as `Effect.delta`
    currency: str | None = None  # a jackpot's currency when the answer says it (a payout)


@dataclass(frozen=True)
class EdgeEffects:
    """What a committed transaction that went through this edge changes in the CRDT documents:
    deltas for this edge's slots, and documents whose credits sit in another edge's slot (that edge
    is asked to reconcile them: `reconcile_at`; or, when nobody knows which edge holds them, every
    edge including this one: `reconcile_everywhere`)."""

    slots: tuple[SlotEffect, ...] = ()
    reconcile: tuple[str, ...] = ()
    reconcile_at: str | None = None
    reconcile_everywhere: bool = False


NO_EFFECTS = EdgeEffects()
EffectRule = Callable[[Transaction, str], EdgeEffects]  # (the ledger's typed transaction, this edge's id)


def _present(value: T | None, name: str) -> T:
    """A member the contract makes optional but this transaction type always carries."""
    if value is None:
        raise ValueError(f"the ledger's answer has no {name}")
    return value


def _credits(
    player_id: str, contributions: Sequence[JackpotContribution], wagering: Sequence[BonusWagering], sign: int
) -> tuple[SlotEffect, ...]:
    """A bet's jackpot contributions and bonus wagering (sign 1), or their reversal (sign -1)."""
    slots = [
        SlotEffect(doc_name(JACKPOT, c.jackpot_id), {"epoch": c.epoch, "amount_minor": sign * c.amount_minor})
        for c in contributions
    ]
    deltas = {w.bonus_id: sign * w.amount_minor for w in wagering}
    if deltas:
        slots.append(SlotEffect(doc_name(BONUS, player_id), deltas))
    return tuple(slots)


def bet_effects(tx: Transaction, edge_id: str) -> EdgeEffects:
    return EdgeEffects(
        _credits(_present(tx.player_id, "player_id"), tx.jackpot_contributions, tx.bonus_wagering, sign=1)
    )


def rollback_effects(tx: Transaction, edge_id: str) -> EdgeEffects:
    """The ledger takes a reversed bet's credits back from the slot of the edge the bet came
    through (`bet_via` in the answer): here if that is us, else that edge is asked to reconcile;
    a bet forwarded without an edge: whoever holds credits, the sweeps repair them."""
    if not tx.reversed:
        return NO_EFFECTS
    player_id = _present(tx.player_id, "player_id")
    names = [doc_name(JACKPOT, c.jackpot_id) for c in tx.reversed_contributions]
    if tx.bonus_wagering:
        names.append(doc_name(BONUS, player_id))
    if tx.bet_via is None:
        return EdgeEffects(reconcile=tuple(names), reconcile_everywhere=True)
    if tx.bet_via == edge_id:
        return EdgeEffects(_credits(player_id, tx.reversed_contributions, tx.bonus_wagering, sign=-1))
    return EdgeEffects(reconcile=tuple(names), reconcile_at=tx.bet_via)


def jackpot_payout_effects(tx: Transaction, edge_id: str) -> EdgeEffects:
    """The pool starts a new epoch from its seed (this edge's slot moves to it)."""
    delta = {"epoch": tx.epoch, "amount_minor": 0, "seed_minor": _present(tx.seed_minor, "seed_minor")}
    return EdgeEffects(
        (
            SlotEffect(
                doc_name(JACKPOT, _present(tx.jackpot_id, "jackpot_id")), delta, _present(tx.currency, "currency")
            ),
        )
    )


def no_effects(tx: Transaction, edge_id: str) -> EdgeEffects:
    """Wins and bonus claims change balances only: the ledger's, not a CRDT document."""
    return NO_EFFECTS


# --- the documents a transaction type touches (reconciled when applying its effects failed) -----

DocumentsRule = Callable[[Transaction], list[str]]


def _credited_documents(
    player_id: str | None, contributions: Sequence[JackpotContribution], wagering: Sequence[BonusWagering]
) -> list[str]:
    names = [doc_name(JACKPOT, c.jackpot_id) for c in contributions]
    if wagering and player_id is not None:
        names.append(doc_name(BONUS, player_id))
    return names


def bet_documents(tx: Transaction) -> list[str]:
    return _credited_documents(tx.player_id, tx.jackpot_contributions, tx.bonus_wagering)


def rollback_documents(tx: Transaction) -> list[str]:
    return _credited_documents(tx.player_id, tx.reversed_contributions, tx.bonus_wagering)


def jackpot_payout_documents(tx: Transaction) -> list[str]:
    return [doc_name(JACKPOT, tx.jackpot_id)] if tx.jackpot_id is not None else []


def no_documents(tx: Transaction) -> list[str]:
    return []


# --- the jackpot epochs a transaction type's answer reports (edge.jackpots, admission) -----------

EpochsRule = Callable[[Transaction], list[tuple[str, int]]]  # (jackpot id, epoch)


def bet_epochs(tx: Transaction) -> list[tuple[str, int]]:
    return [(c.jackpot_id, c.epoch) for c in tx.jackpot_contributions]


def rollback_epochs(tx: Transaction) -> list[tuple[str, int]]:
    return [(c.jackpot_id, c.epoch) for c in tx.reversed_contributions]


def jackpot_payout_epochs(tx: Transaction) -> list[tuple[str, int]]:
    """A committed payout started the jackpot's new epoch (a rejected one reports nothing new)."""
    if tx.outcome == "committed" and tx.jackpot_id is not None:
        return [(tx.jackpot_id, tx.epoch)]
    return []


def no_epochs(tx: Transaction) -> list[tuple[str, int]]:
    return []


@dataclass(frozen=True)
class TypeEffects:
    """What the edge does with a committed transaction of one type."""

    effects: EffectRule  # its CRDT effects, when it went through this edge
    documents: DocumentsRule  # the documents those effects touch (reconciled when applying them failed)
    epochs: EpochsRule  # the jackpot epochs its answer reports


NONE = TypeEffects(no_effects, no_documents, no_epochs)

# Transaction type -> what the edge does with it. Every money operation an edge forwards has a row.
EFFECTS_BY_TYPE: dict[str, TypeEffects] = {
    "bet": TypeEffects(bet_effects, bet_documents, bet_epochs),
    "win": NONE,
    "rollback": TypeEffects(rollback_effects, rollback_documents, rollback_epochs),
    "jackpot_payout": TypeEffects(jackpot_payout_effects, jackpot_payout_documents, jackpot_payout_epochs),
    "bonus_claim": NONE,
}


def effects_of(transaction_type: str, tx: Transaction, edge_id: str) -> EdgeEffects:
    """The effects of a committed transaction that went through `edge_id` (none for a type
    without a row: the ledger may know types this edge does not forward)."""
    return EFFECTS_BY_TYPE.get(transaction_type, NONE).effects(tx, edge_id)


def effect_documents(transaction_type: str, tx: Transaction) -> list[str]:
    """The documents a committed transaction's effects touch, sorted, each once."""
    return sorted(set(EFFECTS_BY_TYPE.get(transaction_type, NONE).documents(tx)))


def reported_epochs(transaction_type: str, tx: Transaction) -> list[tuple[str, int]]:
    """(jackpot id, epoch) for each jackpot the ledger's answer to this transaction says exists."""
    return EFFECTS_BY_TYPE.get(transaction_type, NONE).epochs(tx)
