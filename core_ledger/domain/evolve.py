"""`evolve`: fold one journal entry into the derived state. Live writes and rebuild share it.

Everything here follows from the entry alone (its postings and recorded results), so replaying the
journal into an empty state reproduces every derived table exactly. Balances are folded here from
the postings; what else a type changes is its spec's `apply` (see `folds`).
"""

from __future__ import annotations

from core_ledger.domain.accounts import is_player_account, player_account
from core_ledger.domain.commands import InvariantBroken
from core_ledger.domain.folds import DIRECT_SLOT, edge_slot
from core_ledger.domain.outcomes import Outcome
from core_ledger.domain.records import Entry
from core_ledger.domain.render import Answer, render
from core_ledger.domain.reports import add_report_sums
from core_ledger.domain.specs import spec_of
from core_ledger.domain.state import State
from core_ledger.domain.summaries import summarize

__all__ = ["DIRECT_SLOT", "Entry", "edge_slot", "evolve", "fold"]


def evolve(state: State, entry: Entry) -> Answer:
    """Apply the entry; returns its answer (which replays of its id give again)."""
    fold(state, entry)
    return render(entry)  # type: ignore[arg-type]  # render reads entries as JSON documents


def fold(state: State, entry: Entry) -> None:
    """Apply the entry, without building its answer: what a standby, a rebuild, a restore and a
    seeder do for every entry, where nobody reads the answer."""
    tx = entry["transaction"]
    if tx["outcome"] == Outcome.COMMITTED:
        _apply_postings(state, entry)
        spec_of(tx["type"]).apply(state, entry)
    summarize(state, entry)
    add_report_sums(state, entry)
    if tx["id"] is not None:
        # The journal holds the request and the answer; the record only points at the entry. A
        # committed bet's own `bets` row is its record (see `idempotency_record`).
        if tx["type"] != "bet" or tx["outcome"] != Outcome.COMMITTED:
            state.put("idem", (tx["client_id"], tx["id"]), {"type": tx["type"], "sequence": entry["sequence"]})
        state.remember(entry)
    ref = tx["request"].get("external_ref")
    if ref is not None:  # committed or rejected: the provider finds what became of its request
        state.put(
            "external_refs",
            (ref, entry["sequence"]),
            {
                "type": tx["type"],
                "id": tx["id"],
                "client_id": tx["client_id"],
                "via": tx["via"],
                "outcome": tx["outcome"],
                "player_id": tx["request"].get("player_id"),
            },
        )


def _apply_postings(state: State, entry: Entry) -> None:
    tx, sequence = entry["transaction"], entry["sequence"]
    deltas: dict[str, int] = {}
    for p in entry["postings"]:
        deltas[p["account"]] = deltas.get(p["account"], 0) + p["amount_minor"]
    for account, delta in deltas.items():
        row = state.get("accounts", (account,)) or {"balance_minor": 0, "version": 0}
        row = {"balance_minor": row["balance_minor"] + delta, "version": row["version"] + 1}
        state.put("accounts", (account,), row)
        if is_player_account(account):
            if row["balance_minor"] < 0:  # the message is built only on failure (the hot path)
                raise InvariantBroken(f"{account} would go negative at {sequence}")
            state.put(
                "history",
                (account, sequence),
                {"amount_minor": delta, "balance_minor": row["balance_minor"], "type": tx["type"], "id": tx["id"]},
            )
    balance = tx["result"].get("balance")
    if balance:
        folded = state.get("accounts", (player_account(balance["player_id"], balance["currency"]),))
        if folded is None or (folded["balance_minor"], folded["version"]) != (
            balance["balance_minor"],
            balance["version"],
        ):
            raise InvariantBroken(f"the balance folded at {sequence} ({folded}) is not the decided one ({balance})")
