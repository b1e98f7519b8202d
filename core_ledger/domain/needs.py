"""Which rows each transaction type reads beyond those every command reads (its plan).

Each function here is the `plan` of one or more `TransactionSpec`s: given what is loaded so far, it
appends the rows the type's `decide` and `apply` will read. Rows found in one pass (a game's
jackpots, a bet being rolled back, a player's bonuses) name further rows for the next pass, so a
function only `peek`s (never `get`s) and names nothing from a row that is not loaded yet.
"""

from __future__ import annotations

from core_ledger.domain.accounts import SystemKind, jackpot_account, player_account, system_account
from core_ledger.domain.commands import Command, present
from core_ledger.domain.state import ENTRIES, ROUND_CLIENT, Key, State, idempotency_record, round_address

Need = list[tuple[str, Key]]


def idem_rows(view: State, key: Key, need: Need) -> None:
    need += [("idem", key), ("bets", key)]
    record = idempotency_record(view.peek("idem", key), view.peek("bets", key))
    if record is not None:
        need.append((ENTRIES, (record["sequence"],)))


def _wallet_of(pid: str, currency: str, kind: SystemKind, need: Need) -> None:
    need.append(("accounts", (player_account(pid, currency),)))
    need.append(("accounts", (system_account(kind, currency),)))


def _jackpots(view: State, jackpot_ids: list[str], need: Need) -> None:
    for jackpot_id in jackpot_ids:
        need.append(("jackpots", (jackpot_id,)))
        need.append(("accounts", (jackpot_account(jackpot_id),)))


def _bonuses(view: State, pid: str, need: Need) -> None:
    player = view.peek("players", (pid,))
    for bonus_id in player["bonus_ids"] if player else []:
        need.append(("bonuses", (pid, bonus_id)))


def _round(view: State, cmd: Command, need: Need) -> None:
    """The client's own round, and a round of the same id from before scoping with the client's
    bets in it (see `money.find_round`)."""
    r = cmd.request
    need.append(round_address(cmd.required_key[0], r["player_id"], r["round_id"]))
    unscoped = round_address(None, r["player_id"], r["round_id"])
    need.append(unscoped)
    round_ = view.peek(*unscoped)
    for t in round_["transactions"] if round_ else []:
        if t["type"] == "bet":
            need.append(("bets", (cmd.required_key[0], t["id"])))


def cashier(view: State, cmd: Command, need: Need) -> None:
    need.append(("accounts", (system_account("cashier", cmd.request["currency"]),)))


def bet(view: State, cmd: Command, need: Need) -> None:
    r = cmd.request
    need += [
        ("bets", cmd.required_key),
        ("games", (r["game_id"],)),
        ("accounts", (system_account("house", r["currency"]),)),
    ]
    _round(view, cmd, need)
    game = view.peek("games", (r["game_id"],))
    _jackpots(view, game["jackpot_ids"] if game else [], need)
    _bonuses(view, r["player_id"], need)


def win(view: State, cmd: Command, need: Need) -> None:
    need.append(("accounts", (system_account("house", cmd.request["currency"]),)))
    _round(view, cmd, need)
    if cmd.request.get("bet_id") is not None:  # the bet it names
        need.append(("bets", (cmd.required_key[0], cmd.request["bet_id"])))


def rollback(view: State, cmd: Command, need: Need) -> None:
    r = cmd.request
    bet_key = (cmd.required_key[0], r["bet_id"])
    need.append(("bets", bet_key))
    idem_rows(view, bet_key, need)
    bet = view.peek("bets", bet_key)
    if bet is not None and bet["state"] != "marker":
        _wallet_of(bet["player_id"], bet["currency"], "house", need)
        round_id = present(bet["round_id"], f"the round of bet {bet_key}")
        need.append(round_address(bet.get(ROUND_CLIENT), bet["player_id"], round_id))
        _jackpots(view, [c["jackpot_id"] for c in bet["jackpot_contributions"]], need)
        for w in bet["bonus_wagering"]:
            need.append(("bonuses", (bet["player_id"], w["bonus_id"])))
    rejected = view.peek("idem", bet_key)
    entry = view.peek(ENTRIES, (rejected["sequence"],)) if rejected is not None else None
    if entry is not None and entry["transaction"]["type"] == "bet":
        req = entry["transaction"]["request"]
        need.append(("accounts", (player_account(req["player_id"], req["currency"]),)))


def jackpot_payout(view: State, cmd: Command, need: Need) -> None:
    r = cmd.request
    _jackpots(view, [r["jackpot_id"]], need)
    jackpot = view.peek("jackpots", (r["jackpot_id"],))
    _round(view, cmd, need)
    if jackpot is not None:
        _wallet_of(r["player_id"], jackpot["currency"], "house", need)
        return
    # A jackpot created earlier in the same group is not there when the group is planned: its
    # currency is one of the player's (a payout in another is refused), so all of them are named.
    player = view.peek("players", (r["player_id"],))
    for currency in player["currencies"] if player else []:
        _wallet_of(r["player_id"], currency, "house", need)


def bonus_claim(view: State, cmd: Command, need: Need) -> None:
    r = cmd.request
    need.append(("bonuses", (r["player_id"], r["bonus_id"])))
    bonus = view.peek("bonuses", (r["player_id"], r["bonus_id"]))
    if bonus is not None:
        _wallet_of(r["player_id"], bonus["currency"], "bonus", need)


def adjustment(view: State, cmd: Command, need: Need) -> None:
    need.append(("accounts", (system_account("house", cmd.request["currency"]),)))


def player_create(view: State, cmd: Command, need: Need) -> None:
    pid = cmd.request["player_id"]
    need += [("accounts", (player_account(pid, c),)) for c in cmd.request["currencies"]]


def jackpot_create(view: State, cmd: Command, need: Need) -> None:
    r = cmd.request
    _jackpots(view, [r["jackpot_id"]], need)
    need.append(("accounts", (system_account("house", r["currency"]),)))
    need += [("games", (g,)) for g in r["game_ids"]]


def bonus_grant(view: State, cmd: Command, need: Need) -> None:
    need.append(("bonuses", (cmd.request["player_id"], cmd.request["bonus_id"])))
    # Not read by the grant itself: a claim judged after it in the same group (or page, on a
    # standby) is planned before the grant is applied, when the bonus row it plans from does not
    # exist yet, so it cannot name the account it pays from; the grant names it for it.
    need.append(("accounts", (system_account("bonus", cmd.request["currency"]),)))


def round_settle(view: State, cmd: Command, need: Need) -> None:
    """A round being refunded or closed: its row, then its bets, then what they touched."""
    r = cmd.request
    address = round_address(r["round_client_id"], r["player_id"], r["round_id"])
    need.append(address)
    round_ = view.peek(*address)
    if round_ is None:
        return
    _wallet_of(r["player_id"], round_["currency"], "house", need)
    if r["round_client_id"] is None:
        return  # not refunded (see `rounds`)
    for note in round_["transactions"]:
        if note["type"] == "bet":
            need.append(("bets", (r["round_client_id"], note["id"])))
            bet = view.peek("bets", (r["round_client_id"], note["id"]))
            if bet is not None and bet["state"] != "marker":
                _jackpots(view, [c["jackpot_id"] for c in bet["jackpot_contributions"]], need)
                need += [("bonuses", (r["player_id"], w["bonus_id"])) for w in bet["bonus_wagering"]]


def nothing(view: State, cmd: Command, need: Need) -> None:
    """The common rows (idempotency, the player, the account in the request's currency) are all."""
