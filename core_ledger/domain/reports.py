"""Report sums: what each committed journal entry adds to the finance reports (pure).

Two derived tables of integer sums in minor units, maintained by ADDING deltas (see `State.add`,
`state.ADDITIVE`), never by scanning the journal:

- `report_play_days`, keyed (day, currency, game_id, client_id): the gaming figures of one game
  played through one game-server client on one UTC day (the day of the entry's `committed_at`).
  `game_id`/`client_id` are "" where an entry has none (a bonus claim names no game).
- `report_cash_days`, keyed (day, currency): money that enters or leaves the players' side through
  the cashier, and the house's costs outside play (adjustments, jackpot seeds).

What counts (the postings each figure mirrors, by transaction type):

- `bet`: player -> house `bets_minor`; house -> jackpot pools `jackpot_contributions_minor`.
- `win`: house -> player `wins_minor` (game: the round's).
- `rollback` that reversed a bet: house -> player `rollbacks_minor`; pool -> house (the contributions
  still in the pool) subtracted from `jackpot_contributions_minor` (game: the bet's).
- `round_refund`: house -> player `refunds_minor`, contributions given back as for a rollback
  (client: the round's; game: the round's).
- `jackpot_payout`: pool -> player `jackpot_payouts_minor` (game: the round's); the house's reseed of
  the pool is `jackpot_seeds_minor` of the day (a cost of the house, not of a game).
- `bonus_claim`: bonus -> player `bonus_cost_minor` (game "": a bonus is not played in one game).
- `deposit`/`withdrawal`: cashier <-> player `deposits_minor`/`withdrawals_minor`.
- `adjustment`: house -> player `adjustments_minor` (signed); `jackpot_create`: the seed.

GGR (gross gaming revenue) = bets - wins - rollbacks - refunds - jackpot contributions: what play
left with the house (a jackpot's share leaves the house when contributed: from then on it is owed to
a future winner, so its payout is not counted again). NGR = GGR - bonus cost. The house account's
balance is, to the unit, the sum of GGR minus jackpot seeds minus adjustments.

Rejected entries change no money and add nothing. Every sum stays within ±REPORT_SUM_ABS_MAX: a
transaction that would take one beyond is refused (`report_limit_exceeded`, `check_report_limits`).
"""

from __future__ import annotations

from typing import Final

from core_ledger.domain.accounts import is_player_account
from core_ledger.domain.commands import Command
from core_ledger.domain.outcomes import Outcome, Reject, RejectCode
from core_ledger.domain.records import Contribution, Entry, Posting, Transaction
from core_ledger.domain.state import ROUND_CLIENT, Key, ReportUnit, State, report_unit, round_address

PLAY_TABLE: Final = "report_play_days"
CASH_TABLE: Final = "report_cash_days"
NONE: Final = ""  # the key part of an entry without a game or a client

PLAY_SUMS: Final = (
    "bets_minor",
    "bet_count",
    "wins_minor",
    "win_count",
    "rollbacks_minor",
    "rollback_count",
    "refunds_minor",
    "refund_count",
    "jackpot_contributions_minor",
    "jackpot_payouts_minor",
    "jackpot_payout_count",
    "bonus_cost_minor",
    "bonus_claim_count",
)
CASH_SUMS: Final = (
    "deposits_minor",
    "deposit_count",
    "withdrawals_minor",
    "withdrawal_count",
    "adjustments_minor",
    "adjustment_count",
    "jackpot_seeds_minor",
)
SUMS_OF: Final = {PLAY_TABLE: PLAY_SUMS, CASH_TABLE: CASH_SUMS}

CASH_TYPES: Final = {
    "deposit": ("deposits_minor", "deposit_count"),
    "withdrawal": ("withdrawals_minor", "withdrawal_count"),
    "adjustment": ("adjustments_minor", "adjustment_count"),
}
Delta = tuple[str, Key, dict[str, int]]  # (table, key, the sums it adds)
# The bound of every report sum, as balances have theirs (`decide.BALANCE_ABS_MAX`, 2^62): half of
# it, so that a commit group's net change of a sum (at most twice the bound) is itself a 64-bit
# integer, and so are sums of a few rows read together (docs/decisions/report-sums-bounded.md).
REPORT_SUM_ABS_MAX: Final = 2**61
# The rows one report unit (a day's play through one client, or a day's cash) may hold before a bet
# that would open another is refused, like a sum beyond its bound. Game ids are the game servers'
# own, so without it one client could open rows without end, and the writer, which holds the units
# it judges, with them. An operator's catalogue played through one client in a day (games x
# currencies) is far below it.
REPORT_UNIT_ROWS_MAX: Final = 10_000


def day_of(committed_at: str) -> str:
    """The UTC day (YYYY-MM-DD) of a journal time (RFC 3339 UTC text, see `commands.rfc3339`)."""
    return committed_at[:10]


def ggr(sums: dict[str, int]) -> int:
    return (
        sums["bets_minor"]
        - sums["wins_minor"]
        - sums["rollbacks_minor"]
        - sums["refunds_minor"]
        - sums["jackpot_contributions_minor"]
    )


def ngr(sums: dict[str, int]) -> int:
    return ggr(sums) - sums["bonus_cost_minor"]


def _round_game(state: State, round_client_id: str | None, player_id: str, round_id: str) -> str:
    """The game of a round its entry's fold already read (so loaded in the writer's overlay)."""
    round_ = state.get(*round_address(round_client_id, player_id, round_id))
    return round_["game_id"] if round_ is not None else NONE


def _contributed(items: list[Contribution]) -> int:
    total = 0
    for c in items:
        total += c["amount_minor"]
    return total


def report_deltas(state: State, tx: Transaction, postings: list[Posting]) -> list[Delta]:
    """The report sums one transaction adds (none for a rejected one or a type without money).

    Reads only rows its own fold reads (its round, its bet), which are there before that fold
    runs as after: `decide` checks a draft's sums as `evolve` adds the sealed entry's."""
    if tx["outcome"] != Outcome.COMMITTED:
        return []
    r, result, kind = tx["request"], tx["result"], tx["type"]
    day, client = day_of(tx["committed_at"]), tx["client_id"] or NONE
    if kind == "bet":  # the hot path: one delta, built directly
        sums = {"bets_minor": r["amount_minor"], "bet_count": 1}
        if result["jackpot_contributions"]:
            sums["jackpot_contributions_minor"] = _contributed(result["jackpot_contributions"])
        return [(PLAY_TABLE, (day, r["currency"], r["game_id"], client), sums)]

    def play(currency: str, game: str | None, who: str, sums: dict[str, int]) -> list[Delta]:
        return [(PLAY_TABLE, (day, currency, game or NONE, who or NONE), sums)]

    def cash(currency: str, sums: dict[str, int]) -> list[Delta]:
        return [(CASH_TABLE, (day, currency), sums)]

    if kind == "win":
        game = _round_game(state, result.get(ROUND_CLIENT), r["player_id"], r["round_id"])
        return play(r["currency"], game, client, {"wins_minor": r["amount_minor"], "win_count": 1})
    if kind == "rollback":
        if not result.get("reversed"):
            return []
        bet = state.get("bets", (tx["client_id"], r["bet_id"]))
        sums = {"rollbacks_minor": result["amount_minor"], "rollback_count": 1}
        returned = _contributed(result["reversed_contributions"])
        if returned:
            sums["jackpot_contributions_minor"] = -returned
        return play(result["currency"], bet.get("game_id") if bet else None, client, sums)
    if kind == "round_refund":
        game = _round_game(state, r["round_client_id"], r["player_id"], r["round_id"])
        sums = {"refunds_minor": result["amount_minor"], "refund_count": 1}
        returned = sum(_contributed(b["reversed_contributions"]) for b in result["refunded_bets"])
        if returned:
            sums["jackpot_contributions_minor"] = -returned
        return play(result["currency"], game, r["round_client_id"] or NONE, sums)
    if kind == "jackpot_payout":
        game = _round_game(state, result.get(ROUND_CLIENT), r["player_id"], r["round_id"])
        out = play(
            result["currency"],
            game,
            client,
            {"jackpot_payouts_minor": result["amount_minor"], "jackpot_payout_count": 1},
        )
        return out + cash(result["currency"], {"jackpot_seeds_minor": result["seed_minor"]})
    if kind == "bonus_claim":
        return play(
            result["currency"], None, client, {"bonus_cost_minor": result["amount_minor"], "bonus_claim_count": 1}
        )
    if kind in CASH_TYPES:
        # What the player's account received (a withdrawal: gave), from the postings themselves. An
        # adjustment of 0 moves nothing, but is an operator's act all the same: it is counted.
        moved = [(p["currency"], p["amount_minor"]) for p in postings if is_player_account(p["account"])]
        currency = moved[0][0] if moved else r["currency"]
        amount, count = CASH_TYPES[kind]
        return cash(currency, {amount: sum(m for _, m in moved) * (-1 if kind == "withdrawal" else 1), count: 1})
    if kind == "jackpot_create":
        return cash(r["currency"], {"jackpot_seeds_minor": r["seed_minor"]})
    return []


def add_report_sums(state: State, entry: Entry) -> None:
    """Fold one entry into the report tables (called by `evolve` for every entry)."""
    for table, key, sums in report_deltas(state, entry["transaction"], entry["postings"]):
        state.add(table, key, sums, SUMS_OF[table])


def report_units(cmd: Command, day: str) -> list[ReportUnit]:
    """The report units whose rows a command's transaction may add to on `day` (`report_deltas`):
    its client's play (a round refund: the round's client's) and the day's cash. Named by the
    command alone, whatever rows it finds."""
    units = [(PLAY_TABLE, day, (cmd.key[0] if cmd.key else None) or NONE), (CASH_TABLE, day, NONE)]
    if "round_client_id" in cmd.request:  # a settlement's rows are its round's client's
        units.append((PLAY_TABLE, day, cmd.request["round_client_id"] or NONE))
    return units


def check_report_limits(view: State, tx: Transaction, postings: list[Posting]) -> None:
    """Refuse (sticky) a committed draft that would take any report sum beyond REPORT_SUM_ABS_MAX,
    or a bet that would open a row in a unit that holds REPORT_UNIT_ROWS_MAX (only a bet brings a
    game in: a win, rollback or refund settles a stake already there, and is never refused for the
    rows), or any draft adding to a unit too large to read. Each amount is bounded, but nothing else
    bounds a day's sums: bets and wins of the largest amount repeated on one (day, currency, game,
    client) pass 2^63 in under ten thousand actions, where the stores' integers end. Reads the rows
    of the units the writer holds (`report_units`)."""
    for table, key, sums in report_deltas(view, tx, postings):
        unit = report_unit(table, key)
        if view.report_unit_unread(unit):
            raise Reject(
                RejectCode.REPORT_LIMIT_EXCEEDED,
                f"{table} holds more rows of day {unit[1]} (client {unit[2]!r}) than the ledger reads",
            )
        total = view.report_total(table, key)
        if total is None and tx["type"] == "bet" and view.report_rows(unit) >= REPORT_UNIT_ROWS_MAX:
            raise Reject(
                RejectCode.REPORT_LIMIT_EXCEEDED,
                f"{table} holds {REPORT_UNIT_ROWS_MAX} rows of day {unit[1]} (client {unit[2]!r}): no new game today",
            )
        for name, delta in sums.items():
            if abs((total.get(name, 0) if total else 0) + delta) > REPORT_SUM_ABS_MAX:
                raise Reject(
                    RejectCode.REPORT_LIMIT_EXCEEDED,
                    f"{name} of {table} {list(key)} would leave ±{REPORT_SUM_ABS_MAX}",
                )
