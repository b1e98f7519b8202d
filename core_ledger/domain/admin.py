"""Rules of the admin writes (pure): players, freezes, adjustments, jackpots, bonus offers, unfencing."""

from __future__ import annotations

from core_ledger.domain.accounts import jackpot_account, player_account, system_account
from core_ledger.domain.commands import Command, Context, require
from core_ledger.domain.money import Decided, balance_after, need_funds, player, transfer, wallet
from core_ledger.domain.outcomes import Refusal, RefusalCode, Reject, RejectCode
from core_ledger.domain.state import State


def player_create(view: State, cmd: Command, ctx: Context) -> Decided:
    r = cmd.request
    # A re-sent creation is an idempotent replay (the key is the player id), so the player is new.
    require(view.get("players", (r["player_id"],)) is None, f"player {r['player_id']!r} is new")
    return [], {"player": {"player_id": r["player_id"], "currencies": r["currencies"], "frozen": False}}


def _set_frozen(view: State, cmd: Command, frozen: bool) -> Decided:
    row = player(view, cmd.request["player_id"])
    return [], {"player": {"player_id": cmd.request["player_id"], "currencies": row["currencies"], "frozen": frozen}}


def freeze(view: State, cmd: Command, ctx: Context) -> Decided:
    return _set_frozen(view, cmd, True)


def unfreeze(view: State, cmd: Command, ctx: Context) -> Decided:
    return _set_frozen(view, cmd, False)


def adjustment(view: State, cmd: Command, ctx: Context) -> Decided:
    r = cmd.request
    pid, cur, amount = r["player_id"], r["currency"], r["amount_minor"]
    account = wallet(view, pid, cur, check_frozen=False)  # admins correct frozen accounts too
    expected = r.get("expected_version")
    if expected is not None and expected != account["version"]:
        raise Reject(RejectCode.VERSION_CONFLICT, f"account version is {account['version']}, not {expected}")
    if amount < 0:
        need_funds(account, -amount)
    postings = transfer(system_account("house", cur), player_account(pid, cur), amount, cur)
    return postings, {"balance": balance_after(pid, cur, account, amount)}


def jackpot_create(view: State, cmd: Command, ctx: Context) -> Decided:
    r = cmd.request
    require(
        view.get("jackpots", (r["jackpot_id"],)) is None,  # same reasoning as player_create
        f"jackpot {r['jackpot_id']!r} is new",
    )
    cur, seed = r["currency"], r["seed_minor"]
    postings = transfer(system_account("house", cur), jackpot_account(r["jackpot_id"]), seed, cur)
    return postings, {
        "jackpot": {
            "jackpot_id": r["jackpot_id"],
            "currency": cur,
            "pool_minor": seed,
            "seed_minor": seed,
            "epoch": 1,
            "contribution_ppm": r["contribution_ppm"],
            "game_ids": r["game_ids"],
            "contributions_by_edge": {},
        }
    }


def bonus_grant(view: State, cmd: Command, ctx: Context) -> Decided:
    r = cmd.request
    pid = r["player_id"]
    player(view, pid)
    if view.get("bonuses", (pid, r["bonus_id"])) is not None:
        raise Refusal(RefusalCode.INVALID, f"bonus {r['bonus_id']!r} was already granted to {pid!r}", field="bonus_id")
    wallet(view, pid, r["currency"], check_frozen=False)
    return [], {
        "bonus": {
            "bonus_id": r["bonus_id"],
            "currency": r["currency"],
            "amount_minor": r["amount_minor"],
            "wagering_requirement_minor": r["wagering_requirement_minor"],
            "wagered_minor": 0,
            "wagered_by_edge": {},
            "status": "active",
            "expires_at": r["expires_at"],
        }
    }


def promote(view: State, cmd: Command, ctx: Context) -> Decided:
    """An operator promoted this copy: the first entry of its new epoch records who did, whether it
    was forced, what the copy held and knew was acknowledged, and what its peers announced (all in
    the request, checked by the promotion itself); no postings, nothing derived from it."""
    return [], {"epoch": cmd.request["epoch"]}


def unfence(view: State, cmd: Command, ctx: Context) -> Decided:
    """An operator lifts this copy's fence. The service checked that the copy is fenced and what its
    peers announce (both in the request: `fenced_by_epoch`, `peers`, `force`, `reason`); the entry
    is the record of that decision, with no postings and nothing derived from it."""
    return [], {"fence_lifted": cmd.request["fenced_by_epoch"]}
