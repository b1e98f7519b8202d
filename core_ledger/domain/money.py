"""Rules of the money operations (pure): each returns (postings, result) or raises.

`Reject` is a sticky, journaled refusal; a `Refusal` is non-binding and not journaled (see `outcomes`).
The helpers here are shared with the admin rules.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from core_ledger.domain.accounts import jackpot_account, player_account, system_account
from core_ledger.domain.commands import Command, Context, present
from core_ledger.domain.outcomes import Refusal, RefusalCode, Reject, RejectCode
from core_ledger.domain.records import AccountRow, BetRow, PlayerRow, Posting, RoundRow
from core_ledger.domain.state import ENTRIES, ROUND_CLIENT, State, round_address

PPM = 1_000_000
Decided = tuple[list[Posting], dict[str, Any]]  # (postings, result)


# --- helpers ------------------------------------------------------------------------------------


def posting(account: str, amount_minor: int, currency: str) -> Posting:
    return {"account": account, "amount_minor": amount_minor, "currency": currency}


def transfer(source: str, target: str, amount_minor: int, currency: str) -> list[Posting]:
    return [posting(source, -amount_minor, currency), posting(target, amount_minor, currency)]


def player(view: State, player_id: str) -> PlayerRow:
    row = view.get("players", (player_id,))
    if row is None:
        raise Refusal(RefusalCode.NOT_FOUND, f"player {player_id!r} not found", field="player_id")
    return row


def wallet(view: State, player_id: str, currency: str, *, check_frozen: bool = True) -> AccountRow:
    """The player's account in `currency`; refuses (sticky) a missing currency or a frozen player."""
    row = player(view, player_id)
    if currency not in row["currencies"]:
        raise Reject(RejectCode.CURRENCY_MISMATCH, f"player {player_id!r} has no {currency} account")
    if check_frozen and row["frozen"]:
        raise Reject(RejectCode.ACCOUNT_FROZEN, f"player {player_id!r} is frozen")
    # a player's accounts exist from creation
    return present(view.get("accounts", (player_account(player_id, currency),)), f"account of {player_id!r}")


def balance_after(player_id: str, currency: str, account: AccountRow, delta_minor: int) -> dict[str, Any]:
    return {
        "player_id": player_id,
        "currency": currency,
        "balance_minor": account["balance_minor"] + delta_minor,
        "version": account["version"] + (1 if delta_minor else 0),
    }


def need_funds(account: AccountRow, amount_minor: int) -> None:
    if account["balance_minor"] < amount_minor:
        raise Reject(RejectCode.INSUFFICIENT_FUNDS, f"balance {account['balance_minor']} is below {amount_minor}")


def find_round(view: State, client_id: str, player_id: str, round_id: str) -> tuple[str | None, RoundRow | None]:
    """(scope, row) of the round a client plays: its own round; else a round journaled before
    rounds were scoped (scope None) in which this client has a bet; else (client_id, None): a
    bet opens it. Another client's round of the same id is never this client's."""
    own = view.get(*round_address(client_id, player_id, round_id))
    if own is not None:
        return client_id, own
    unscoped = view.get(*round_address(None, player_id, round_id))
    if unscoped is not None and has_bet_in(view, client_id, player_id, round_id, unscoped):
        return None, unscoped
    return client_id, None


def has_bet_in(view: State, client_id: str, player_id: str, round_id: str, round_: RoundRow) -> bool:
    for t in round_["transactions"]:
        if t["type"] == "bet":
            bet = view.get("bets", (client_id, t["id"]))
            if (
                bet is not None
                and bet["state"] != "marker"
                and bet["player_id"] == player_id
                and bet["round_id"] == round_id
            ):
                return True
    return False


def expired(expires_at: str, ctx: Context) -> bool:
    return datetime.fromisoformat(expires_at) <= ctx.now


# --- money ops ----------------------------------------------------------------------------------


def deposit(view: State, cmd: Command, ctx: Context) -> Decided:
    r = cmd.request
    account = wallet(view, r["player_id"], r["currency"])
    postings = transfer(
        system_account("cashier", r["currency"]),
        player_account(r["player_id"], r["currency"]),
        r["amount_minor"],
        r["currency"],
    )
    return postings, {"balance": balance_after(r["player_id"], r["currency"], account, r["amount_minor"])}


def withdrawal(view: State, cmd: Command, ctx: Context) -> Decided:
    r = cmd.request
    account = wallet(view, r["player_id"], r["currency"])
    need_funds(account, r["amount_minor"])
    postings = transfer(
        player_account(r["player_id"], r["currency"]),
        system_account("cashier", r["currency"]),
        r["amount_minor"],
        r["currency"],
    )
    return postings, {"balance": balance_after(r["player_id"], r["currency"], account, -r["amount_minor"])}


def bet(view: State, cmd: Command, ctx: Context) -> Decided:
    r = cmd.request
    pid, cur, amount = r["player_id"], r["currency"], r["amount_minor"]
    marker = view.get("bets", cmd.required_key)
    if marker is not None and marker["state"] == "marker":
        raise Reject(RejectCode.BET_ROLLED_BACK, f"bet {r['id']!r} was rolled back before it arrived")
    account = wallet(view, pid, cur)
    scope, round_ = find_round(view, cmd.required_key[0], pid, r["round_id"])
    if round_ is not None:
        if round_["game_id"] != r["game_id"]:
            raise Refusal(
                RefusalCode.INVALID, f"round {r['round_id']!r} belongs to game {round_['game_id']!r}", field="game_id"
            )
        if round_["currency"] != cur:
            raise Refusal(
                RefusalCode.INVALID, f"round {r['round_id']!r} is played in {round_['currency']}", field="currency"
            )
        if round_["status"] == "closed":
            raise Reject(RejectCode.ROUND_CLOSED, f"round {r['round_id']!r} is closed")
        if round_["status"] == "refunded":  # settled by a `round_refund`: a resumed game server is told so
            raise Reject(RejectCode.ROUND_REFUNDED, f"round {r['round_id']!r} was refunded")
    need_funds(account, amount)
    postings = transfer(player_account(pid, cur), system_account("house", cur), amount, cur)
    contributions = []
    for jackpot_id in jackpots_of_game(view, r["game_id"]):
        jackpot = present(view.get("jackpots", (jackpot_id,)), f"jackpot {jackpot_id!r}")
        share = amount * jackpot["contribution_ppm"] // PPM
        if jackpot["currency"] == cur and share > 0:
            postings += transfer(system_account("house", cur), jackpot_account(jackpot_id), share, cur)
            contributions.append({"jackpot_id": jackpot_id, "amount_minor": share, "epoch": jackpot["epoch"]})
    wagering = [{"bonus_id": b, "amount_minor": amount} for b in active_bonuses(view, pid, cur)]
    return postings, {
        "balance": balance_after(pid, cur, account, -amount),
        "jackpot_contributions": contributions,
        "bonus_wagering": wagering,
        ROUND_CLIENT: scope,
    }


def jackpots_of_game(view: State, game_id: str) -> list[str]:
    game = view.get("games", (game_id,))
    return [] if game is None else game["jackpot_ids"]


def active_bonuses(view: State, player_id: str, currency: str) -> list[str]:
    row = view.get("players", (player_id,))
    out = []
    for bonus_id in row["bonus_ids"] if row else []:
        bonus = present(view.get("bonuses", (player_id, bonus_id)), f"bonus {bonus_id!r}")
        if bonus["status"] == "active" and bonus["currency"] == currency:
            out.append(bonus_id)
    return out


def win(view: State, cmd: Command, ctx: Context) -> Decided:
    r = cmd.request
    pid, cur, amount = r["player_id"], r["currency"], r["amount_minor"]
    player(view, pid)
    scope, round_ = find_round(view, cmd.required_key[0], pid, r["round_id"])
    if round_ is None:
        raise Refusal(RefusalCode.NOT_FOUND, f"round {r['round_id']!r} has no bet of player {pid!r}", field="round_id")
    if round_["currency"] != cur:
        raise Refusal(
            RefusalCode.INVALID, f"round {r['round_id']!r} is played in {round_['currency']}", field="currency"
        )
    if r.get("bet_id") is not None:
        settled_bet(view, cmd.required_key[0], pid, r["round_id"], r["bet_id"])
    account = wallet(view, pid, cur)
    if round_["status"] == "closed":
        raise Reject(RejectCode.ROUND_CLOSED, f"round {r['round_id']!r} is closed")
    refuse_refunded(round_, r["round_id"])
    postings = transfer(system_account("house", cur), player_account(pid, cur), amount, cur)
    return postings, {"balance": balance_after(pid, cur, account, amount), ROUND_CLIENT: scope}


def settled_bet(view: State, client_id: str, player_id: str, round_id: str, bet_id: str) -> BetRow:
    """The bet a win names: this client's bet of the player in the round (else not binding)."""
    bet = view.get("bets", (client_id, bet_id))
    if bet is None or bet["state"] == "marker":
        raise Refusal(RefusalCode.NOT_FOUND, f"bet {bet_id!r} not found", field="bet_id")
    if bet["player_id"] != player_id or bet["round_id"] != round_id:
        raise Refusal(
            RefusalCode.INVALID,
            f"bet {bet_id!r} is not a bet of player {player_id!r} in round {round_id!r}",
            field="bet_id",
        )
    return bet


def refuse_refunded(round_: RoundRow, round_id: str) -> None:
    """Nothing is paid out of a round whose every bet was rolled back (bets are positive, so a
    round with bets and a zero net stake was refunded in full)."""
    if round_["bets_minor"] <= 0:
        raise Reject(RejectCode.ROUND_REFUNDED, f"every bet of round {round_id!r} was rolled back")


def refuse_claimed_wagering(
    view: State, player_id: str, bet_id: str, bet: BetRow, taken: dict[str, int] | None = None
) -> None:
    """A bet's wagering that a claimed bonus needs cannot be rolled back: the bonus was paid for
    it. (The rollback is allowed while the claimed bonus keeps its requirement without the bet.)
    `taken`: wagering the same transaction already takes back, by bonus (a round refund gives
    several bets back at once), added to here."""
    taken = {} if taken is None else taken
    for w in bet["bonus_wagering"]:
        bonus_id = w["bonus_id"]
        bonus = present(view.get("bonuses", (player_id, bonus_id)), f"bonus {bonus_id!r} of bet {bet_id!r}")
        left = bonus["wagered_minor"] - taken.get(bonus_id, 0) - w["amount_minor"]
        if bonus["status"] == "claimed" and left < bonus["wagering_requirement_minor"]:
            raise Reject(
                RejectCode.WAGERING_ALREADY_CLAIMED, f"bonus {bonus_id!r} was claimed with this bet's wagering"
            )
        taken[bonus_id] = taken.get(bonus_id, 0) + w["amount_minor"]


def rollback(view: State, cmd: Command, ctx: Context) -> Decided:
    r = cmd.request
    pid = r["player_id"]
    client_id = cmd.required_key[0]
    found = view.get("bets", (client_id, r["bet_id"]))
    bet: BetRow
    if found is None:
        rejected = view.get("idem", (client_id, r["bet_id"]))
        if rejected is None or rejected["type"] != "bet":
            player(view, pid)  # unknown bet: a marker refuses it if it arrives later
            return [], {"bet_found": False, "reversed": False, "balance": None}
        entry = present(view.get(ENTRIES, (rejected["sequence"],)), f"journal entry {rejected['sequence']}")
        # a refused bet has no row: its request says what the rules below need
        bet = cast(BetRow, {**entry["transaction"]["request"], "state": "rejected"})
    else:
        bet = found
    if bet["player_id"] != pid:
        raise Refusal(RefusalCode.INVALID, f"bet {r['bet_id']!r} belongs to another player", field="player_id")
    if r.get("round_id") is not None and bet.get("round_id") != r["round_id"]:
        raise Refusal(RefusalCode.INVALID, f"bet {r['bet_id']!r} is in another round", field="round_id")
    if bet["state"] == "marker":
        return [], {"bet_found": False, "reversed": False, "balance": None}
    cur = bet["currency"]
    if bet["state"] != "committed":  # already rolled back, or never charged: nothing to reverse
        # Nothing moves, so neither a freeze nor a currency refuses it (a bet refused for a
        # currency the player has no account in has no balance to show).
        player(view, pid)
        held = view.get("accounts", (player_account(pid, cur),))
        balance = balance_after(pid, cur, held, 0) if held is not None else None
        return [], {"bet_found": True, "reversed": False, "balance": balance}
    account = wallet(view, pid, cur)
    round_id = present(bet["round_id"], f"the round of bet {r['bet_id']!r}")
    round_ = present(view.get(*round_address(bet.get(ROUND_CLIENT), pid, round_id)), f"round {round_id!r}")
    if round_["status"] == "closed" or round_["win_count"] > 0:
        raise Reject(RejectCode.ROUND_CLOSED, f"round {bet['round_id']!r} has a win or is closed")
    refuse_claimed_wagering(view, pid, r["bet_id"], bet)
    amount = bet["amount_minor"]
    postings = transfer(system_account("house", cur), player_account(pid, cur), amount, cur)
    reversed_contributions = []
    for c in bet["jackpot_contributions"]:
        jackpot = present(view.get("jackpots", (c["jackpot_id"],)), f"jackpot {c['jackpot_id']!r}")
        # After a payout the contribution left with the pool: the house bears the refund alone.
        if jackpot["epoch"] == c["epoch"]:
            postings += transfer(jackpot_account(c["jackpot_id"]), system_account("house", cur), c["amount_minor"], cur)
            reversed_contributions.append(c)
    return postings, {
        "bet_found": True,
        "reversed": True,
        "round_id": bet["round_id"],
        "currency": cur,
        "amount_minor": amount,
        "bet_via": bet["via"],
        "reversed_contributions": reversed_contributions,
        "bonus_wagering": bet["bonus_wagering"],
        "balance": balance_after(pid, cur, account, amount),
    }


def jackpot_payout(view: State, cmd: Command, ctx: Context) -> Decided:
    r = cmd.request
    jackpot = view.get("jackpots", (r["jackpot_id"],))
    if jackpot is None:
        raise Refusal(RefusalCode.NOT_FOUND, f"jackpot {r['jackpot_id']!r} not found", field="jackpot_id")
    cur, pid = jackpot["currency"], r["player_id"]
    account = wallet(view, pid, cur)
    scope, round_ = find_round(view, cmd.required_key[0], pid, r["round_id"])
    if round_ is None:
        raise Refusal(RefusalCode.NOT_FOUND, f"round {r['round_id']!r} has no bet of player {pid!r}", field="round_id")
    refuse_refunded(round_, r["round_id"])
    # A system account exists from its first posting: a pool seeded with 0 that no bet contributed
    # to yet has none, and pays out 0.
    pool = view.get("accounts", (jackpot_account(r["jackpot_id"]),))
    amount, seed = (pool["balance_minor"] if pool is not None else 0), jackpot["seed_minor"]
    postings = transfer(jackpot_account(r["jackpot_id"]), player_account(pid, cur), amount, cur)
    postings += transfer(system_account("house", cur), jackpot_account(r["jackpot_id"]), seed, cur)
    return postings, {
        "amount_minor": amount,
        "currency": cur,
        "seed_minor": seed,
        "paid_epoch": jackpot["epoch"],
        "epoch": jackpot["epoch"] + 1,
        "balance": balance_after(pid, cur, account, amount),
        ROUND_CLIENT: scope,
    }


def bonus_claim(view: State, cmd: Command, ctx: Context) -> Decided:
    r = cmd.request
    pid = r["player_id"]
    player(view, pid)
    bonus = view.get("bonuses", (pid, r["bonus_id"]))
    if bonus is None:
        raise Refusal(RefusalCode.NOT_FOUND, f"bonus {r['bonus_id']!r} of player {pid!r} not found", field="bonus_id")
    cur = bonus["currency"]
    account = wallet(view, pid, cur)
    if bonus["status"] == "claimed":
        raise Reject(RejectCode.ALREADY_CLAIMED, f"bonus {r['bonus_id']!r} was already claimed")
    if expired(bonus["expires_at"], ctx):
        raise Reject(RejectCode.BONUS_EXPIRED, f"bonus {r['bonus_id']!r} expired at {bonus['expires_at']}")
    if bonus["wagered_minor"] < bonus["wagering_requirement_minor"]:
        raise Reject(
            RejectCode.WAGERING_NOT_MET, f"wagered {bonus['wagered_minor']} of {bonus['wagering_requirement_minor']}"
        )
    amount = bonus["amount_minor"]
    postings = transfer(system_account("bonus", cur), player_account(pid, cur), amount, cur)
    return postings, {"currency": cur, "amount_minor": amount, "balance": balance_after(pid, cur, account, amount)}
