"""The transaction index: one small row per journal entry (`tx_summaries`, keyed by sequence) that
operator queries filter on — type, outcome, player, game, round, currency, client, edge, time.

A separate fold from the types' `apply` (see `folds`): `evolve` calls it for EVERY entry, refused
ones included, after the entry's own changes. Everything follows from the entry and the rows the
type's fold already read (a win's round, a reversed bet), so a rebuild reproduces it exactly.
"""

from __future__ import annotations

from typing import Any

from core_ledger.domain.outcomes import Outcome
from core_ledger.domain.records import Entry
from core_ledger.domain.state import ROUND_CLIENT, State, round_address

TABLE = "tx_summaries"


def _played(state: State, entry: Entry) -> tuple[str | None, str | None]:
    """The (game id, round id) a committed win or reversing rollback played in, from the row its
    fold read (so already loaded in the writer's overlay)."""
    tx, r, result = entry["transaction"], entry["transaction"]["request"], entry["transaction"]["result"]
    if tx["type"] == "win":
        table, key = round_address(result.get(ROUND_CLIENT), r["player_id"], r["round_id"])
        round_ = state.get(table, key)
        return (round_["game_id"] if round_ else None), r["round_id"]
    if tx["type"] == "rollback" and result.get("reversed"):
        bet = state.get("bets", (tx["client_id"], r["bet_id"]))
        return (bet.get("game_id") if bet else None), (bet.get("round_id") if bet else r.get("round_id"))
    return r.get("game_id"), r.get("round_id")


def summarize(state: State, entry: Entry) -> None:
    tx = entry["transaction"]
    request: dict[str, Any] = tx["request"]
    game_id, round_id = (
        _played(state, entry)
        if tx["outcome"] == Outcome.COMMITTED
        else (request.get("game_id"), request.get("round_id"))
    )
    state.put(
        TABLE,
        (entry["sequence"],),
        {
            "id": tx["id"],
            "type": tx["type"],
            "outcome": tx["outcome"],
            "client_id": tx["client_id"],
            "via": tx["via"],
            "committed_at": tx["committed_at"],
            "player_id": request.get("player_id"),
            "game_id": game_id,
            "round_id": round_id,
            # The currency it moved: a rollback, a payout, a claim or a refund names none in its
            # request, only in its result (a refusal's result is empty).
            "currency": request.get("currency") or tx["result"].get("currency"),
        },
    )
