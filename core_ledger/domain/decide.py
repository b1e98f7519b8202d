"""`decide`: pure judgement of one command against the state, as a journal draft.

Returns a `Draft` (committed with postings, or rejected with a `RejectCode` and no postings) or a
`Replay`, or raises a non-binding `Refusal` (validation, unknown player/round/bonus, key reuse) that
is not journaled and does not bind the id. The rules of each type are its spec's `decide`.
`decide` never mutates the state; `evolve` does.
"""

from __future__ import annotations

from typing import Any, cast

from core_ledger.domain.commands import Command, Context, Draft, Replay, present
from core_ledger.domain.outcomes import Outcome, Refusal, RefusalCode, Reject, RejectCode
from core_ledger.domain.records import IdemRow, Posting, Transaction
from core_ledger.domain.render import render
from core_ledger.domain.reports import check_report_limits
from core_ledger.domain.specs import spec_of
from core_ledger.domain.state import ENTRIES, State, idempotency_record

BALANCE_ABS_MAX = 2**62


def decide(view: State, cmd: Command, ctx: Context) -> Draft | Replay:
    if cmd.key is not None:
        record = idempotency_record(view.get("idem", cmd.key), view.get("bets", cmd.key))
        if record is not None:
            return replay_or_conflict(view, record, cmd)
    spec = spec_of(cmd.type)
    tx: Transaction = {
        "type": cmd.type,
        "id": cmd.key[1] if cmd.key else None,
        "client_id": cmd.key[0] if cmd.key else None,
        "via": cmd.via,
        "principal": cmd.principal,
        "committed_at": ctx.now_text,
        "request": cmd.request,
    }
    try:
        postings, result = spec.decide(view, cmd, ctx)
        check_balance_limits(view, postings)
        tx["outcome"], tx["result"] = Outcome.COMMITTED.value, result
        postings = [p for p in postings if p["amount_minor"] != 0]
        check_report_limits(view, tx, postings)
    except Reject as r:
        if not spec.sticky:  # binds nothing: not journaled (see `rounds`)
            raise Refusal(r.code, r.detail) from None
        tx["outcome"], tx["code"], tx["detail"], tx["result"] = Outcome.REJECTED.value, r.code.value, r.detail, {}
        return Draft(tx)
    return Draft(tx, postings)


def check_balance_limits(view: State, postings: list[Posting]) -> None:
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
            raise Reject(RejectCode.BALANCE_LIMIT_EXCEEDED, f"account {account} would leave ±{BALANCE_ABS_MAX}")


def replay_or_conflict(view: State, record: IdemRow, cmd: Command) -> Replay:
    entry = present(view.get(ENTRIES, (record["sequence"],)), f"journal entry {record['sequence']} of an id")
    field = first_difference(entry["transaction"], cmd)
    if field is not None:
        raise Refusal(
            RefusalCode.IDEMPOTENCY_KEY_REUSED,
            f"id {cmd.required_key[1]!r} was already used for a different request ({field} differs)",
            field=field,
        )
    return Replay(render(cast(dict[str, Any], entry)))  # render reads entries as JSON documents


def first_difference(stored: Transaction, cmd: Command) -> str | None:
    """The first field (by name) in which a retry differs from the stored transaction."""
    if stored["type"] != cmd.type:
        return "type"
    old, new = stored["request"], cmd.request
    for name in sorted(set(old) | set(new)):
        if old.get(name) != new.get(name):
            return name
    return None
