"""`decide`: pure judgement of one command against the state, as a journal draft.

Returns a `Draft` (committed with postings, or rejected with a code and no postings) or a `Replay`,
or raises a non-binding `CroupierError` (validation, unknown player/round/bonus, key reuse) that is
not journaled and does not bind the id. `decide` never mutates the state; `evolve` does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.errors import Unprocessable

from core_ledger.domain import admin, money
from core_ledger.domain.commands import Command, Context, Draft, Reject, Replay, present
from core_ledger.domain.render import render
from core_ledger.domain.state import ENTRIES, Doc, State, idempotency_record

BALANCE_ABS_MAX = 2**62

DECIDERS: dict[str, Callable[[State, Command, Context], money.Decided]] = {
    "deposit": money.deposit,
    "withdrawal": money.withdrawal,
    "bet": money.bet,
    "win": money.win,
    "rollback": money.rollback,
    "jackpot_payout": money.jackpot_payout,
    "bonus_claim": money.bonus_claim,
    "player_create": admin.player_create,
    "freeze": admin.freeze,
    "unfreeze": admin.unfreeze,
    "adjustment": admin.adjustment,
    "jackpot_create": admin.jackpot_create,
    "bonus_grant": admin.bonus_grant,
    "unfence": admin.unfence,
}


def decide(view: State, cmd: Command, ctx: Context) -> Draft | Replay:
    if cmd.key is not None:
        record = idempotency_record(view.get("idem", cmd.key), view.get("bets", cmd.key))
        if record is not None:
            return replay_or_conflict(view, record, cmd)
    tx: dict[str, Any] = {
        "type": cmd.type, "id": cmd.key[1] if cmd.key else None,
        "client_id": cmd.key[0] if cmd.key else None, "via": cmd.via, "principal": cmd.principal,
        "committed_at": ctx.now_text, "request": cmd.request,
    }
    try:
        postings, result = DECIDERS[cmd.type](view, cmd, ctx)
        check_balance_limits(view, postings)
    except Reject as r:
        tx.update(outcome="rejected", code=r.code, detail=r.detail, result={})
        return Draft(tx)
    tx.update(outcome="committed", result=result)
    return Draft(tx, [p for p in postings if p["amount_minor"] != 0])


def check_balance_limits(view: State, postings: list[dict[str, Any]]) -> None:
    """Refuse (sticky) a transaction that would take any account, system ones included, beyond
    BALANCE_ABS_MAX: each amount is bounded, but nothing else bounds their sum, and a balance must
    stay far inside the 64-bit integers every store encodes."""
    deltas: dict[str, int] = {}
    for p in postings:
        deltas[p["account"]] = deltas.get(p["account"], 0) + p["amount_minor"]
    for account, delta in deltas.items():
        row = view.get("accounts", (account,))
        after = (row["balance_minor"] if row else 0) + delta
        if abs(after) > BALANCE_ABS_MAX:
            raise Reject("balance_limit_exceeded", f"account {account} would leave ±{BALANCE_ABS_MAX}")


def replay_or_conflict(view: State, record: Doc, cmd: Command) -> Replay:
    entry = present(view.get(ENTRIES, (record["sequence"],)), f"journal entry {record['sequence']} of an id")
    field = first_difference(entry["transaction"], cmd)
    if field is not None:
        raise Unprocessable(
            f"id {cmd.required_key[1]!r} was already used for a different request ({field} differs)",
            code="idempotency_key_reused", field=field)
    status, body = render(entry)
    return Replay(200 if status == 201 else status, {**body, "replayed": True})


def first_difference(stored: Doc, cmd: Command) -> str | None:
    """The first field (by name) in which a retry differs from the stored transaction."""
    if stored["type"] != cmd.type:
        return "type"
    old, new = stored["request"], cmd.request
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            return name
    return None


