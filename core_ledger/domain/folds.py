"""What each committed transaction type changes in the derived rows besides balances (its `apply`).

Each function is the `apply` of one or more `TransactionSpec`s; `evolve` calls it after folding the
postings into the balances. Everything follows from the entry alone (its request and recorded
results), so replaying the journal into an empty state reproduces every derived table exactly.

A row is never changed in place: a fold puts a new version of it (a copy, with new containers
for the members it changes). The writer judges the next group while the previous one commits,
and a store may encode that commit's rows only then (SQLite does, in its own thread): the version
it was handed must stay as its group left it.
"""

from __future__ import annotations

from core_ledger.domain.accounts import player_account
from core_ledger.domain.commands import present, require
from core_ledger.domain.records import Contribution, Entry, GameRow, RoundNote, RoundRow, Wagering
from core_ledger.domain.state import ROUND_CLIENT, Key, State, round_address

DIRECT_SLOT = "direct"  # contributions slot of money that came without an edge


def edge_slot(via: str | None) -> str:
    return via or DIRECT_SLOT


def _indexed_status(round_: RoundRow) -> str:
    """The status a round's row of `round_openings` shows."""
    if round_["status"] == "open" and round_["bets_minor"] <= 0:
        return "refunded"  # every bet rolled back
    return round_["status"]


def _index_round(state: State, address: tuple[str, Key], round_: RoundRow, was: str | None) -> None:
    """Write the round's row of `round_openings` (the index of interrupted rounds) from its row,
    unless it shows what it showed before the entry (`was`: that status; None for a round the entry
    opens). Only the status can differ: the rest of the row is the round's, set when it opened."""
    _, key = address
    status = _indexed_status(round_)
    if status == was:  # most entries of a round (a bet after the first, a win that does not close it)
        return
    state.put(
        "round_openings",
        (round_["opened_sequence"],),
        {
            "player_id": key[0],
            "round_id": key[1],
            "client_id": key[2] if len(key) > 2 else None,
            "game_id": round_["game_id"],
            "currency": round_["currency"],
            "opened_at": round_.get("opened_at"),
            "status": status,
        },
    )


def _round_note(round_: RoundRow, entry: Entry, amount_minor: int) -> None:
    """Note the entry in a round's new version (a new list: the old version keeps its own)."""
    tx = entry["transaction"]
    note: RoundNote = {
        "id": present(tx["id"], "the id of an entry played in a round"),
        "type": tx["type"],
        "sequence": entry["sequence"],
        "amount_minor": amount_minor,
    }
    round_["transactions"] = [*round_["transactions"], note]


def bet(state: State, entry: Entry) -> None:
    tx, r, result = entry["transaction"], entry["transaction"]["request"], entry["transaction"]["result"]
    table, key = round_address(result.get(ROUND_CLIENT), r["player_id"], r["round_id"])  # none: before scoping
    stored = state.get(table, key)
    was = None if stored is None else _indexed_status(stored)
    round_: RoundRow = (
        stored.copy()
        if stored is not None
        else {
            "game_id": r["game_id"],
            "currency": r["currency"],
            "status": "open",
            "bets_minor": 0,
            "wins_minor": 0,
            "win_count": 0,
            "opened_sequence": entry["sequence"],
            "transactions": [],
            "opened_at": tx["committed_at"],
        }
    )
    round_["bets_minor"] += r["amount_minor"]
    _round_note(round_, entry, r["amount_minor"])
    state.put(table, key, round_)
    _index_round(state, (table, key), round_, was)
    bet = {
        "state": "committed",
        "player_id": r["player_id"],
        "currency": r["currency"],
        "amount_minor": r["amount_minor"],
        "round_id": r["round_id"],
        "game_id": r["game_id"],
        "via": tx["via"],
        "jackpot_contributions": result["jackpot_contributions"],
        "bonus_wagering": result["bonus_wagering"],
        "sequence": entry["sequence"],
    }
    if ROUND_CLIENT in result:  # a bet journaled before scoping keeps the row it had
        bet[ROUND_CLIENT] = result[ROUND_CLIENT]
    state.put("bets", (tx["client_id"], tx["id"]), bet)
    _count_edge(state, tx["via"], r["player_id"], result["jackpot_contributions"], result["bonus_wagering"], 1)


def _count_edge(
    state: State,
    via: str | None,
    player_id: str,
    contributions: list[Contribution],
    wagering: list[Wagering],
    sign: int,
) -> None:
    """Add (or with sign -1 take back) a bet's per-edge jackpot and wagering credits."""
    slot = edge_slot(via)
    for c in contributions:
        jackpot = present(state.get("jackpots", (c["jackpot_id"],)), f"jackpot {c['jackpot_id']!r}").copy()
        by_edge = jackpot["contributions_by_edge"]
        jackpot["contributions_by_edge"] = {**by_edge, slot: by_edge.get(slot, 0) + sign * c["amount_minor"]}
        state.put("jackpots", (c["jackpot_id"],), jackpot)
    for w in wagering:
        bonus = present(state.get("bonuses", (player_id, w["bonus_id"])), f"bonus {w['bonus_id']!r}").copy()
        bonus["wagered_minor"] += sign * w["amount_minor"]
        by_edge = bonus["wagered_by_edge"]
        bonus["wagered_by_edge"] = {**by_edge, slot: by_edge.get(slot, 0) + sign * w["amount_minor"]}
        state.put("bonuses", (player_id, w["bonus_id"]), bonus)


def win(state: State, entry: Entry) -> None:
    r, result = entry["transaction"]["request"], entry["transaction"]["result"]
    table, key = round_address(result.get(ROUND_CLIENT), r["player_id"], r["round_id"])
    round_ = present(state.get(table, key), f"round {key}").copy()
    was = _indexed_status(round_)
    round_["wins_minor"] += r["amount_minor"]
    round_["win_count"] += 1
    if r["close_round"]:
        round_["status"] = "closed"
    _round_note(round_, entry, r["amount_minor"])
    state.put(table, key, round_)
    _index_round(state, (table, key), round_, was)


def rollback(state: State, entry: Entry) -> None:
    tx, r, result = entry["transaction"], entry["transaction"]["request"], entry["transaction"]["result"]
    bet_key = (tx["client_id"], r["bet_id"])
    bet = state.get("bets", bet_key)
    if not result["bet_found"]:
        if bet is None:
            state.put(
                "bets",
                bet_key,
                {
                    "state": "marker",
                    "player_id": r["player_id"],
                    "round_id": r.get("round_id"),
                    "sequence": entry["sequence"],
                },
            )
        return
    if not result["reversed"]:
        return
    bet = present(bet, f"bet {bet_key}").copy()
    require(bet["state"] == "committed", f"the reversed bet {bet_key} is committed")
    bet["state"] = "rolled_back"
    state.put("bets", bet_key, bet)
    round_id = present(bet["round_id"], f"the round of bet {bet_key}")
    table, key = round_address(bet.get(ROUND_CLIENT), bet["player_id"], round_id)
    round_ = present(state.get(table, key), f"round {key}").copy()
    was = _indexed_status(round_)
    round_["bets_minor"] -= bet["amount_minor"]
    _round_note(round_, entry, bet["amount_minor"])
    state.put(table, key, round_)
    _index_round(state, (table, key), round_, was)
    _count_edge(state, bet["via"], bet["player_id"], result["reversed_contributions"], bet["bonus_wagering"], -1)


def round_refund(state: State, entry: Entry) -> None:
    """Every bet the refund gave back is rolled back; the round is "refunded" (no later bet or win)."""
    r, result = entry["transaction"]["request"], entry["transaction"]["result"]
    scope = r["round_client_id"]
    table, key = round_address(scope, r["player_id"], r["round_id"])
    round_ = present(state.get(table, key), f"round {key}").copy()
    was = _indexed_status(round_)
    for refunded in result["refunded_bets"]:
        bet_key = (scope, refunded["bet_id"])
        bet = present(state.get("bets", bet_key), f"bet {bet_key}").copy()
        require(bet["state"] == "committed", f"the refunded bet {bet_key} is committed")
        bet["state"] = "rolled_back"
        state.put("bets", bet_key, bet)
        round_["bets_minor"] -= bet["amount_minor"]
        _count_edge(state, bet["via"], r["player_id"], refunded["reversed_contributions"], bet["bonus_wagering"], -1)
    require(round_["bets_minor"] == 0, f"a refunded round {key} holds no bets")
    round_["status"] = "refunded"
    _round_note(round_, entry, result["amount_minor"])
    state.put(table, key, round_)
    _index_round(state, (table, key), round_, was)


def round_close(state: State, entry: Entry) -> None:
    r = entry["transaction"]["request"]
    table, key = round_address(r["round_client_id"], r["player_id"], r["round_id"])
    round_ = present(state.get(table, key), f"round {key}").copy()
    was = _indexed_status(round_)
    round_["status"] = "closed"
    _round_note(round_, entry, 0)
    state.put(table, key, round_)
    _index_round(state, (table, key), round_, was)


def jackpot_payout(state: State, entry: Entry) -> None:
    r, result = entry["transaction"]["request"], entry["transaction"]["result"]
    jackpot = present(state.get("jackpots", (r["jackpot_id"],)), f"jackpot {r['jackpot_id']!r}").copy()
    jackpot["epoch"] = result["epoch"]
    jackpot["contributions_by_edge"] = {}
    state.put("jackpots", (r["jackpot_id"],), jackpot)


def bonus_claim(state: State, entry: Entry) -> None:
    r = entry["transaction"]["request"]
    bonus = present(state.get("bonuses", (r["player_id"], r["bonus_id"])), f"bonus {r['bonus_id']!r}").copy()
    bonus["status"] = "claimed"
    bonus["claimed_sequence"] = entry["sequence"]
    state.put("bonuses", (r["player_id"], r["bonus_id"]), bonus)


def player_create(state: State, entry: Entry) -> None:
    r = entry["transaction"]["request"]
    state.put("players", (r["player_id"],), {"currencies": r["currencies"], "frozen": False, "bonus_ids": []})
    for currency in r["currencies"]:
        account = (player_account(r["player_id"], currency),)
        if state.get("accounts", account) is None:
            state.put("accounts", account, {"balance_minor": 0, "version": 0})


def set_frozen(state: State, entry: Entry) -> None:
    r = entry["transaction"]["request"]
    player = present(state.get("players", (r["player_id"],)), f"player {r['player_id']!r}").copy()
    player["frozen"] = entry["transaction"]["type"] == "freeze"
    state.put("players", (r["player_id"],), player)


def jackpot_create(state: State, entry: Entry) -> None:
    r = entry["transaction"]["request"]
    state.put(
        "jackpots",
        (r["jackpot_id"],),
        {
            "currency": r["currency"],
            "seed_minor": r["seed_minor"],
            "contribution_ppm": r["contribution_ppm"],
            "game_ids": r["game_ids"],
            "epoch": 1,
            "contributions_by_edge": {},
        },
    )
    for game_id in r["game_ids"]:
        stored = state.get("games", (game_id,))
        game: GameRow = stored.copy() if stored is not None else {"jackpot_ids": []}
        if r["jackpot_id"] not in game["jackpot_ids"]:
            game["jackpot_ids"] = [*game["jackpot_ids"], r["jackpot_id"]]
        state.put("games", (game_id,), game)


def bonus_grant(state: State, entry: Entry) -> None:
    r = entry["transaction"]["request"]
    state.put(
        "bonuses",
        (r["player_id"], r["bonus_id"]),
        {
            "id": r["id"],
            "currency": r["currency"],
            "amount_minor": r["amount_minor"],
            "wagering_requirement_minor": r["wagering_requirement_minor"],
            "expires_at": r["expires_at"],
            "granted_sequence": entry["sequence"],
            "wagered_minor": 0,
            "wagered_by_edge": {},
            "status": "active",
        },
    )
    player = present(state.get("players", (r["player_id"],)), f"player {r['player_id']!r}").copy()
    player["bonus_ids"] = [*player["bonus_ids"], r["bonus_id"]]
    state.put("players", (r["player_id"],), player)


def nothing(state: State, entry: Entry) -> None:
    """Deposits, withdrawals and adjustments change only balances (done from the postings); an
    unfence or a promotion changes no derived row (the fence and the epoch are the store's, not the
    state's: the entry records who changed them, and why)."""
