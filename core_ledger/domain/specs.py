"""One spec per transaction type: everything the ledger knows about a type, in one place.

A `TransactionSpec` names the type (the string the journal and the API use), its family, the rows
it reads beyond the common ones (`plan`, see `needs`), its rules (`decide`, see `money`/`admin`)
and what it changes in the derived rows when committed (`apply`, see `folds`). `SPECS` is the one
registry; `plan`, `decide` and `evolve` look types up there and nowhere else. Adding a type is
adding a spec (and its request model in shared.models).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from core_ledger.domain import admin, folds, money, needs, rounds
from core_ledger.domain.commands import Command, Context, InvariantBroken
from core_ledger.domain.money import Decided
from core_ledger.domain.needs import Need
from core_ledger.domain.records import Entry
from core_ledger.domain.state import State

Family = Literal["money", "admin"]
Planner = Callable[[State, Command, Need], None]
Decider = Callable[[State, Command, Context], Decided]
Applier = Callable[[State, Entry], None]


@dataclass(frozen=True)
class TransactionSpec:
    type: str  # the transaction type as journaled and answered ("bet", "player_create"...)
    family: Family  # money: game servers, edges and cashiers send it; admin: operators
    plan: Planner  # appends the rows `decide` and `apply` read beyond the common ones (`plan.rows_needed`)
    decide: Decider  # (postings, result), or raises `Reject` (journaled) / `Refusal` (not journaled)
    apply: Applier  # folds a committed entry into the derived rows (balances are folded by `evolve`)
    # Whether a `Reject` (its own, or a limit `decide` checks) is journaled and binds the id; if
    # not, `decide` raises it as a `Refusal` (a settlement's id names the round: see `rounds`).
    sticky: bool = True


SPEC_LIST: tuple[TransactionSpec, ...] = (
    TransactionSpec("deposit", "money", needs.cashier, money.deposit, folds.nothing),
    TransactionSpec("withdrawal", "money", needs.cashier, money.withdrawal, folds.nothing),
    TransactionSpec("bet", "money", needs.bet, money.bet, folds.bet),
    TransactionSpec("win", "money", needs.win, money.win, folds.win),
    TransactionSpec("rollback", "money", needs.rollback, money.rollback, folds.rollback),
    TransactionSpec("jackpot_payout", "money", needs.jackpot_payout, money.jackpot_payout, folds.jackpot_payout),
    TransactionSpec("bonus_claim", "money", needs.bonus_claim, money.bonus_claim, folds.bonus_claim),
    TransactionSpec("player_create", "admin", needs.player_create, admin.player_create, folds.player_create),
    TransactionSpec("freeze", "admin", needs.nothing, admin.freeze, folds.set_frozen),
    TransactionSpec("unfreeze", "admin", needs.nothing, admin.unfreeze, folds.set_frozen),
    TransactionSpec("adjustment", "admin", needs.adjustment, admin.adjustment, folds.nothing),
    TransactionSpec("jackpot_create", "admin", needs.jackpot_create, admin.jackpot_create, folds.jackpot_create),
    TransactionSpec("bonus_grant", "admin", needs.bonus_grant, admin.bonus_grant, folds.bonus_grant),
    TransactionSpec("unfence", "admin", needs.nothing, admin.unfence, folds.nothing),
    TransactionSpec("promote", "admin", needs.nothing, admin.promote, folds.nothing),
    TransactionSpec("round_refund", "admin", needs.round_settle, rounds.round_refund, folds.round_refund, sticky=False),
    TransactionSpec("round_close", "admin", needs.round_settle, rounds.round_close, folds.round_close, sticky=False),
)


def _registry(specs: tuple[TransactionSpec, ...]) -> dict[str, TransactionSpec]:
    by_type: dict[str, TransactionSpec] = {}
    for spec in specs:
        if spec.type in by_type:
            raise ValueError(f"two specs for transaction type {spec.type!r}")
        by_type[spec.type] = spec
    return by_type


# Read-only by convention (tests swap a spec to inject a faulty rule, with monkeypatch.setitem).
SPECS: dict[str, TransactionSpec] = _registry(SPEC_LIST)
TRANSACTION_TYPES = frozenset(SPECS)


def spec_of(transaction_type: str) -> TransactionSpec:
    """The spec of a type; a type without one is a bug (commands are built from known types, and
    the journal holds only types that were decided)."""
    spec = SPECS.get(transaction_type)
    if spec is None:
        raise InvariantBroken(f"no spec for transaction type {transaction_type!r}")
    return spec
