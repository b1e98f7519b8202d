"""Rules of settling an interrupted round (pure): `round_refund` gives the round's bets back,
`round_close` closes it as played. Both are admin transactions that name the round (player, round
id, and the game-server client it is scoped to); the stale-round job and an operator send them.

A round with a win cannot be refunded (its result is known: close it); a closed or refunded round
cannot be settled again. A round journaled before rounds were scoped by client is not refunded
(its bets cannot be told apart by client): it can only be closed.

A settlement's id names the round, not a moment of it, so its refusals bind nothing (not
journaled, the id stays free: their specs are not `sticky`, and `decide` raises every `Reject` of
theirs as a `Refusal`): a round refused a refund while it held no stake (its bets rolled back
meanwhile) can be refunded with the same id once a later bet is placed in it.
"""

from __future__ import annotations

from typing import Any

from core_ledger.domain.accounts import jackpot_account, player_account, system_account
from core_ledger.domain.commands import ADMIN_SCOPE, Command, Context, present
from core_ledger.domain.money import Decided, balance_after, player, refuse_claimed_wagering, transfer
from core_ledger.domain.outcomes import Refusal, RefusalCode, Reject, RejectCode
from core_ledger.domain.records import BetRow, RoundRow
from core_ledger.domain.state import ROUND_CLIENT, State, round_address

REFUNDED = "refunded"  # the status of a round whose bets a `round_refund` gave back


def the_round(view: State, cmd: Command) -> RoundRow:
    r = cmd.request
    player(view, r["player_id"])
    round_ = view.get(*round_address(r["round_client_id"], r["player_id"], r["round_id"]))
    if round_ is None:
        raise Refusal(
            RefusalCode.NOT_FOUND, f"round {r['round_id']!r} of player {r['player_id']!r} not found", field="round_id"
        )
    if round_["status"] == "closed":
        raise Reject(RejectCode.ROUND_CLOSED, f"round {r['round_id']!r} is closed")
    if round_["status"] == REFUNDED or round_["bets_minor"] <= 0:
        raise Reject(RejectCode.ROUND_REFUNDED, f"round {r['round_id']!r} was refunded")
    return round_


def committed_bets(view: State, client_id: str, round_: RoundRow) -> list[tuple[str, BetRow]]:
    """(bet id, row) of the round's bets that still hold money, in journal order."""
    out = []
    for note in round_["transactions"]:
        if note["type"] == "bet":
            bet = present(view.get("bets", (client_id, note["id"])), f"bet {note['id']!r} of a round")
            if bet["state"] == "committed":
                out.append((note["id"], bet))
    return out


def round_refund(view: State, cmd: Command, ctx: Context) -> Decided:
    r = cmd.request
    pid, scope = r["player_id"], r["round_client_id"]
    round_ = the_round(view, cmd)
    if scope is None:
        raise Refusal(
            RefusalCode.INVALID,
            f"round {r['round_id']!r} was journaled before rounds were scoped by client: close it instead",
            field="policy",
        )
    if round_["win_count"] > 0:
        raise Reject(RejectCode.ROUND_CLOSED, f"round {r['round_id']!r} has a win: close it instead")
    cur = round_["currency"]
    account = present(view.get("accounts", (player_account(pid, cur),)), f"account of {pid!r}")
    postings, refunded, total = [], [], 0
    taken: dict[str, int] = {}  # wagering given back by the bets before, by bonus
    for bet_id, bet in committed_bets(view, scope, round_):
        refuse_claimed_wagering(view, pid, bet_id, bet, taken)
        amount = bet["amount_minor"]
        total += amount
        postings += transfer(system_account("house", cur), player_account(pid, cur), amount, cur)
        reversed_contributions = []
        for c in bet["jackpot_contributions"]:
            jackpot = present(view.get("jackpots", (c["jackpot_id"],)), f"jackpot {c['jackpot_id']!r}")
            if jackpot["epoch"] == c["epoch"]:  # after a payout the house bears the refund alone (as a rollback)
                postings += transfer(
                    jackpot_account(c["jackpot_id"]), system_account("house", cur), c["amount_minor"], cur
                )
                reversed_contributions.append(c)
        refunded.append(
            {
                "bet_id": bet_id,
                "amount_minor": amount,
                "bet_via": bet["via"],
                "reversed_contributions": reversed_contributions,
                "bonus_wagering": bet["bonus_wagering"],
            }
        )
    result: dict[str, Any] = {
        "currency": cur,
        "amount_minor": total,
        "refunded_bets": refunded,
        "balance": balance_after(pid, cur, account, total),
        ROUND_CLIENT: scope,
    }
    return postings, result


def round_close(view: State, cmd: Command, ctx: Context) -> Decided:
    round_ = the_round(view, cmd)
    return [], {"currency": round_["currency"], "amount_minor": 0, ROUND_CLIENT: cmd.request["round_client_id"]}


POLICY_TYPES = {"refund": "round_refund", "close": "round_close"}


def settlement(
    policy: str, player_id: str, round_id: str, round_client_id: str | None, reason: str, principal: str
) -> Command:
    """The command settling a round by `policy` ("refund" | "close"). Its idempotency key names the
    type and the round, whoever sends it: the job and an operator settling the same round the same
    way get one entry; a refund refused (a round with a win) leaves the round free to be closed."""
    tx_type = POLICY_TYPES[policy]
    return Command(
        tx_type,
        {"player_id": player_id, "round_id": round_id, "round_client_id": round_client_id, "reason": reason},
        principal,
        (ADMIN_SCOPE, settlement_key(tx_type, player_id, round_id, round_client_id)),
    )


def settlement_key(tx_type: str, player_id: str, round_id: str, round_client_id: str | None) -> str:
    """The idempotency id of settling one round. Ids may hold ":", so parts joined by ":" alone
    could name two rounds ("gs:x" + "p" and "gs" + "x:p"): then each part is prefixed by its
    length. Keys of ids without ":" keep the form they always had."""
    scope = "-" if round_client_id is None else round_client_id
    parts = (scope, player_id, round_id)
    if not any(":" in part for part in parts):
        return ":".join((tx_type, *parts))
    return ":".join((tx_type, *(f"{len(part)}.{part}" for part in parts)))
