"""The shapes of what the domain writes: postings, transactions, journal entries, and derived rows.

They are JSON documents (the journal is canonical JSON, the stores keep rows as JSON), typed here so
the rules say what they read. A `TypedDict` is a plain dict at run time: nothing changes on disk or
on the wire. Rows and entries read back from storage are trusted to have these shapes (the journal
is hash-chained, the rows are folded from it).
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict, get_args, get_origin, get_type_hints, is_typeddict


class Posting(TypedDict):
    account: str  # see `accounts`
    amount_minor: int
    currency: str


class Transaction(TypedDict):
    type: str  # a `TransactionSpec.type`
    id: str | None
    client_id: str | None
    via: str | None
    principal: str
    committed_at: str
    request: dict[str, Any]  # the request fields as sent (JSON), without via/client_id
    outcome: NotRequired[str]  # an `Outcome`; set once decided
    result: NotRequired[dict[str, Any]]  # what the rules decided (committed) or {} (rejected)
    code: NotRequired[str]  # rejected only: a `RejectCode`
    detail: NotRequired[str]  # rejected only


class Entry(TypedDict):
    """One journal entry: a sealed transaction with its postings, on the hash chain."""

    format: NotRequired[int]  # absent in entries written before formats existed (format 1)
    sequence: int
    epoch: int
    transaction: Transaction
    postings: list[Posting]
    prev_hash: str
    hash: NotRequired[str]  # absent only while it is being computed


# --- derived rows (one per table of `state.TABLES`) ----------------------------------------------


class AccountRow(TypedDict):
    balance_minor: int
    version: int


class PlayerRow(TypedDict):
    currencies: list[str]
    frozen: bool
    bonus_ids: list[str]


class RoundNote(TypedDict):
    id: str
    type: str
    sequence: int
    amount_minor: int


class RoundRow(TypedDict):
    game_id: str
    currency: str
    status: str  # "open" | "closed" | "refunded" (by a `round_refund`)
    bets_minor: int
    wins_minor: int
    win_count: int
    opened_sequence: int
    transactions: list[RoundNote]
    opened_at: NotRequired[str]  # when its first bet was committed (absent in rows folded before it was kept)


class RoundOpeningRow(TypedDict):
    """A round by the sequence of the bet that opened it (`round_openings`): the index of
    interrupted rounds. `status` is "open" while it holds bets and is neither closed nor refunded."""

    player_id: str
    round_id: str
    client_id: str | None  # the client the round is scoped to (None: journaled before scoping)
    game_id: str
    currency: str
    opened_at: str | None
    status: str


class Contribution(TypedDict):
    jackpot_id: str
    amount_minor: int
    epoch: int


class Wagering(TypedDict):
    bonus_id: str
    amount_minor: int


class BetRow(TypedDict):
    """A bet (state "committed" or "rolled_back"), or a rollback's "marker" for a bet not seen yet
    (then only player_id, round_id and sequence are set)."""

    state: str
    player_id: str
    round_id: str | None
    sequence: int
    currency: NotRequired[str]
    amount_minor: NotRequired[int]
    game_id: NotRequired[str]
    via: NotRequired[str | None]
    jackpot_contributions: NotRequired[list[Contribution]]
    bonus_wagering: NotRequired[list[Wagering]]
    round_client_id: NotRequired[str | None]  # `state.ROUND_CLIENT`; absent before rounds were scoped


class IdemRow(TypedDict):
    type: str
    sequence: int


class JackpotRow(TypedDict):
    currency: str
    seed_minor: int
    contribution_ppm: int
    game_ids: list[str]
    epoch: int
    contributions_by_edge: dict[str, int]


class GameRow(TypedDict):
    jackpot_ids: list[str]


class BonusRow(TypedDict):
    id: str
    currency: str
    amount_minor: int
    wagering_requirement_minor: int
    expires_at: str
    granted_sequence: int
    wagered_minor: int
    wagered_by_edge: dict[str, int]
    status: str  # "active" | "claimed"
    claimed_sequence: NotRequired[int]


class HistoryRow(TypedDict):
    amount_minor: int
    balance_minor: int
    type: str
    id: str | None


def _member_kinds(row: type) -> tuple[tuple[str, ...], frozenset[str], frozenset[str]]:
    """A row type's members in declared order, those a row may lack (`NotRequired`), and those that
    hold a list or an object. (Read from the evaluated hints: with postponed annotations a
    TypedDict's own `__optional_keys__` cannot see `NotRequired`.)"""
    hints = get_type_hints(row, include_extras=True)
    optional = frozenset(m for m, hint in hints.items() if get_origin(hint) is NotRequired)
    bare = {m: get_args(hint)[0] if m in optional else hint for m, hint in hints.items()}
    nested = frozenset(m for m, hint in bare.items() if get_origin(hint) in (list, dict) or is_typeddict(hint))
    return tuple(hints), optional, nested


def _all_members(row: type) -> tuple[str, ...]:
    """The members of a row type whose rows always hold every one of them, each a single value, in
    declared order (a store may keep such rows as one column per member: no member's absence to
    tell from null)."""
    members, optional, nested = _member_kinds(row)
    if optional or nested:
        raise TypeError(f"{row.__name__} has optional or nested members {sorted(optional | nested)}")
    return members


ACCOUNT_MEMBERS = _all_members(AccountRow)
HISTORY_MEMBERS = _all_members(HistoryRow)
ROUND_OPENING_MEMBERS = _all_members(RoundOpeningRow)
# Rounds (`rounds`, `client_rounds`): `opened_at` is absent from rows folded before it was kept (and
# never null when present); `transactions` holds a list.
ROUND_MEMBERS, ROUND_OPTIONAL, ROUND_NESTED = _member_kinds(RoundRow)
# Bets: members a row may lack (a rollback's marker holds four), two of them nullable when present.
BET_MEMBERS, BET_OPTIONAL, BET_NESTED = _member_kinds(BetRow)
