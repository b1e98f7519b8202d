"""Which rows a command needs, so the writer can load a whole batch in a few queries.

`rows_needed` looks at what is already loaded: rows found in the first pass (a game's jackpots, a
bet being rolled back, a player's bonuses) name further rows for the next pass.
"""

from __future__ import annotations

from core_ledger.domain.commands import Command
from core_ledger.domain.state import (
    ENTRIES,
    ROUND_CLIENT,
    Key,
    State,
    idempotency_record,
    jackpot_account,
    player_account,
    round_address,
    system_account,
)

Need = list[tuple[str, Key]]
PASSES_MAX = 4  # idem/player/game/bet/round rows → entries/bonuses/jackpots/bets → accounts: 3 deep
# The only tables `rows_needed` reads (peeks), and it names further rows only from rows that exist:
# a command must be planned again only when a row of these tables was just found for it. (A fresh
# bet finds no idem row and no bet row: it is planned once.)
PLANNED_FROM = frozenset({"idem", "players", "games", "bets", ENTRIES, "jackpots", "bonuses", "rounds"})


def rows_needed(view: State, cmd: Command) -> Need:
    r = cmd.request
    need: Need = []
    if cmd.key is not None:
        _idem(view, cmd.key, need)
    pid = r.get("player_id")
    if pid is not None:
        need.append(("players", (pid,)))
        if "currency" in r:
            need.append(("accounts", (player_account(pid, r["currency"]),)))
    extra = _EXTRA.get(cmd.type)
    if extra is not None:
        extra(view, cmd, need)
    return need


def _idem(view: State, key: Key, need: Need) -> None:
    need += [("idem", key), ("bets", key)]
    record = idempotency_record(view.peek("idem", key), view.peek("bets", key))
    if record is not None:
        need.append((ENTRIES, (record["sequence"],)))


def _wallet_of(pid: str, currency: str, kind: str, need: Need) -> None:
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


def _cashier(view: State, cmd: Command, need: Need) -> None:
    need.append(("accounts", (system_account("cashier", cmd.request["currency"]),)))


def _bet(view: State, cmd: Command, need: Need) -> None:
    r = cmd.request
    need += [("bets", cmd.required_key), ("games", (r["game_id"],)),
             ("accounts", (system_account("house", r["currency"]),))]
    _round(view, cmd, need)
    game = view.peek("games", (r["game_id"],))
    _jackpots(view, game["jackpot_ids"] if game else [], need)
    _bonuses(view, r["player_id"], need)


def _win(view: State, cmd: Command, need: Need) -> None:
    need.append(("accounts", (system_account("house", cmd.request["currency"]),)))
    _round(view, cmd, need)


def _rollback(view: State, cmd: Command, need: Need) -> None:
    r = cmd.request
    bet_key = (cmd.required_key[0], r["bet_id"])
    need.append(("bets", bet_key))
    _idem(view, bet_key, need)
    bet = view.peek("bets", bet_key) or {}
    if bet.get("state") not in (None, "marker"):
        _wallet_of(bet["player_id"], bet["currency"], "house", need)
        need.append(round_address(bet.get(ROUND_CLIENT), bet["player_id"], bet["round_id"]))
        _jackpots(view, [c["jackpot_id"] for c in bet["jackpot_contributions"]], need)
        for w in bet["bonus_wagering"]:
            need.append(("bonuses", (bet["player_id"], w["bonus_id"])))
    rejected = view.peek("idem", bet_key)
    entry = view.peek(ENTRIES, (rejected["sequence"],)) if rejected is not None else None
    if entry is not None and entry["transaction"]["type"] == "bet":
        req = entry["transaction"]["request"]
        need.append(("accounts", (player_account(req["player_id"], req["currency"]),)))


def _jackpot_payout(view: State, cmd: Command, need: Need) -> None:
    r = cmd.request
    need.append(("jackpots", (r["jackpot_id"],)))
    jackpot = view.peek("jackpots", (r["jackpot_id"],))
    _round(view, cmd, need)
    if jackpot is not None:
        _wallet_of(r["player_id"], jackpot["currency"], "house", need)
        _jackpots(view, [r["jackpot_id"]], need)


def _bonus_claim(view: State, cmd: Command, need: Need) -> None:
    r = cmd.request
    need.append(("bonuses", (r["player_id"], r["bonus_id"])))
    bonus = view.peek("bonuses", (r["player_id"], r["bonus_id"]))
    if bonus is not None:
        _wallet_of(r["player_id"], bonus["currency"], "bonus", need)


def _adjustment(view: State, cmd: Command, need: Need) -> None:
    need.append(("accounts", (system_account("house", cmd.request["currency"]),)))


def _player_create(view: State, cmd: Command, need: Need) -> None:
    pid = cmd.request["player_id"]
    need += [("accounts", (player_account(pid, c),)) for c in cmd.request["currencies"]]


def _jackpot_create(view: State, cmd: Command, need: Need) -> None:
    r = cmd.request
    _jackpots(view, [r["jackpot_id"]], need)
    need.append(("accounts", (system_account("house", r["currency"]),)))
    need += [("games", (g,)) for g in r["game_ids"]]


def _bonus_grant(view: State, cmd: Command, need: Need) -> None:
    need.append(("bonuses", (cmd.request["player_id"], cmd.request["bonus_id"])))


_EXTRA = {
    "deposit": _cashier, "withdrawal": _cashier, "bet": _bet, "win": _win, "rollback": _rollback,
    "jackpot_payout": _jackpot_payout, "bonus_claim": _bonus_claim, "adjustment": _adjustment,
    "player_create": _player_create, "jackpot_create": _jackpot_create, "bonus_grant": _bonus_grant,
}
