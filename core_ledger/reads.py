"""Reads of committed state for the handlers (the writer's overlay is never read here): balances,
rounds, transactions, jackpots, bonuses, statements, journal pages. Whole-journal checks (verify,
rebuild) are in core_ledger/journal_checks.py."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import orjson

from shared.errors import NotFound

from core_ledger.domain import public_transaction
from core_ledger.domain.commands import present
from core_ledger.domain.state import jackpot_account, player_account
from core_ledger.journal_checks import JOURNAL_PAGE, verify_store
from core_ledger.pace import Pace
from core_ledger.store import Head, Store

STALE_SCAN_PAGE = 256
STALE_SCAN_ROWS_MAX = 10_000  # index rows one listing of stale rounds reads at most (then `has_more`)
ROUND_TABLES = ("rounds", "client_rounds")  # before scoping by client, and scoped (see domain.state)

ON_DEMAND = Pace()  # an operator's walk: small pages, no pause


def _round_view(key: tuple, doc: dict[str, Any]) -> dict[str, Any]:
    """A round of either table; `client_id` is the game-server client it is scoped to (None: a
    round journaled before rounds were scoped)."""
    return {
        "player_id": key[0],
        "round_id": key[1],
        "client_id": key[2] if len(key) > 2 else None,
        "game_id": doc["game_id"],
        "currency": doc["currency"],
        "status": doc["status"],
        "bets_minor": doc["bets_minor"],
        "wins_minor": doc["wins_minor"],
        "transactions": doc["transactions"],
    }


async def _rounds_where(
    store: Store,
    equals: dict[str, Any],
    limit: int,
    doc_equals: dict[str, Any] | None = None,
    *,
    holding_stake: bool = False,
) -> list[dict[str, Any]]:
    """Rounds of both tables (only the scoped one when `equals` names a client), by (round id,
    client), at most `limit`; with `holding_stake`, only rounds some bet still holds money in."""
    found = []
    for table in ROUND_TABLES:
        if table == "rounds" and "client_id" in equals:
            continue  # journaled before rounds were scoped by client: no client to match
        positive = ("bets_minor",) if holding_stake else ()
        rows, _ = await store.select(table, equals, limit=limit, doc_equals=doc_equals, doc_positive=positive)
        found += rows
    found.sort(key=lambda row: (row[0][1], row[0][2] if len(row[0]) > 2 else ""))
    return [_round_view(k, d) for k, d in found[:limit]]


class LedgerReads:
    def __init__(self, store: Store, *, clock: Callable[[], datetime]) -> None:
        self.store = store
        self._clock = clock

    async def player(self, player_id: str) -> dict[str, Any]:
        row, _ = await self.store.get("players", (player_id,))
        if row is None:
            raise NotFound(f"player {player_id!r} not found", field="player_id")
        balances = []
        for currency in row["currencies"]:
            account, _ = await self.store.get("accounts", (player_account(player_id, currency),))
            account = present(account, f"account of {player_id!r} in {currency}")
            balances.append({"currency": currency, **account})
        return {"player_id": player_id, "currencies": row["currencies"], "frozen": row["frozen"], "balances": balances}

    async def balances(self, player_id: str) -> dict[str, Any]:
        player = await self.player(player_id)
        return {"player_id": player_id, "balances": player["balances"]}

    async def rounds(
        self, player_id: str, status: str | None, limit: int, client_id: str | None = None
    ) -> dict[str, Any]:
        """A player's rounds (of one game-server client's, with `client_id`). `open`: the rounds a
        resuming game server has to finish, so those still holding a stake."""
        equals = {"player_id": player_id} if client_id is None else {"player_id": player_id, "client_id": client_id}
        rounds = await _rounds_where(
            self.store, equals, limit, {"status": status} if status else None, holding_stake=status == "open"
        )
        return {"rounds": rounds}

    async def rounds_by_id(self, round_id: str, limit: int) -> dict[str, Any]:
        rounds = await _rounds_where(self.store, {"round_id": round_id}, limit)
        if not rounds:
            raise NotFound(f"round {round_id!r} not found", field="round_id")
        return {"rounds": rounds}

    async def _entries(self, tx_id: str, limit: int) -> list[dict[str, Any]]:
        entries = [orjson.loads(t) for t in await self.store.journal_of(tx_id, limit)]
        if not entries:
            raise NotFound(f"transaction {tx_id!r} not found", field="id")
        return entries

    async def transaction(self, tx_id: str, client_id: str | None) -> dict[str, Any]:
        entries = await self._entries(tx_id, JOURNAL_PAGE)
        if client_id is not None:
            entries = [e for e in entries if e["transaction"]["client_id"] == client_id]
            if not entries:
                raise NotFound(f"transaction {tx_id!r} not found", field="id")
        return public_transaction(entries[0])

    async def by_external_ref(
        self, ref: str, *, after_sequence: int, limit: int, only: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """The entries journaled under a provider's reference, in journal order (`only`: those whose
        index row matches, e.g. one client's)."""
        rows, head = await self.store.select(
            "external_refs", {"external_ref": ref}, limit=limit + 1, doc_equals=only, after=after_sequence
        )
        page = rows[:limit]
        out = []
        for (_, sequence), _doc in page:
            [(_, text)] = await self.store.journal(sequence - 1, 1)
            out.append(public_transaction(orjson.loads(text)))
        return {
            "external_ref": ref,
            "transactions": out,
            "next_after_sequence": page[-1][0][1] if page else after_sequence,
            "has_more": len(rows) > limit,
            "as_of_sequence": head,
        }

    async def stale_rounds(self, older_than_s: float, *, after_sequence: int, limit: int) -> dict[str, Any]:
        """Open rounds opened more than `older_than_s` ago, oldest first (by the sequence of their first
        bet), after `after_sequence`. Rows indexed before `opened_at` was kept are skipped (a rebuild
        from the journal dates them); at most `STALE_SCAN_ROWS_MAX` index rows are read per call."""
        cutoff = self._clock() - timedelta(seconds=older_than_s)
        rounds: list[dict[str, Any]] = []
        after, scanned, head = after_sequence, 0, 0

        def page(has_more: bool) -> dict[str, Any]:
            return {
                "rounds": rounds,
                "next_after_sequence": after,
                "has_more": has_more,
                "older_than_s": older_than_s,
                "as_of_sequence": head,
            }

        while scanned < STALE_SCAN_ROWS_MAX:
            rows, head = await self.store.select(
                "round_openings", {}, limit=STALE_SCAN_PAGE, doc_equals={"status": "open"}, after=after
            )
            scanned += len(rows)
            for (sequence,), doc in rows:
                opened_at = doc["opened_at"]
                if opened_at is not None:
                    if datetime.fromisoformat(opened_at) > cutoff:
                        return page(False)  # ordered by sequence: every later round is younger
                    if len(rounds) == limit:
                        return page(True)
                    rounds.append(
                        {
                            **{
                                k: doc[k]
                                for k in ("player_id", "round_id", "client_id", "game_id", "currency", "opened_at")
                            },
                            "opened_sequence": sequence,
                        }
                    )
                after = sequence
            if len(rows) < STALE_SCAN_PAGE:
                return page(False)
        return page(True)

    async def round_scopes(self, player_id: str, round_id: str) -> list[str | None]:
        """The clients a player's round of this id is scoped to (None: the round from before scoping)."""
        found: list[str | None] = []
        rows, _ = await self.store.select("client_rounds", {"player_id": player_id, "round_id": round_id}, limit=2)
        found += [key[2] for key, _ in rows]
        legacy, _ = await self.store.get("rounds", (player_id, round_id))
        if legacy is not None:
            found.append(None)
        return found

    async def trace(self, tx_id: str, limit: int) -> dict[str, Any]:
        out = []
        for e in await self._entries(tx_id, limit):
            tx = e["transaction"]
            out.append(
                {
                    "sequence": e["sequence"],
                    "epoch": e["epoch"],
                    "hash": e["hash"],
                    "prev_hash": e["prev_hash"],
                    "type": tx["type"],
                    "client_id": tx["client_id"],
                    "via": tx["via"],
                    "principal": tx["principal"],
                    "committed_at": tx["committed_at"],
                    "outcome": tx["outcome"],
                    "postings": e["postings"],
                }
            )
        return {"id": tx_id, "entries": out}

    async def jackpot(self, jackpot_id: str) -> dict[str, Any]:
        row, head = await self.store.get("jackpots", (jackpot_id,))
        if row is None:
            raise NotFound(f"jackpot {jackpot_id!r} not found", field="jackpot_id")
        by_edge = row["contributions_by_edge"]
        # The pool of the current epoch is the seed plus that epoch's contributions (the
        # jackpot account's balance; equal by construction, checked by the tests).
        return {
            "jackpot_id": jackpot_id,
            "currency": row["currency"],
            "pool_minor": row["seed_minor"] + sum(by_edge.values()),
            "seed_minor": row["seed_minor"],
            "epoch": row["epoch"],
            "contribution_ppm": row["contribution_ppm"],
            "game_ids": row["game_ids"],
            "contributions_by_edge": by_edge,
            "account": jackpot_account(jackpot_id),
            "as_of_sequence": head,
        }

    async def bonuses(self, player_id: str, limit: int) -> dict[str, Any]:
        rows, head = await self.store.select("bonuses", {"player_id": player_id}, limit=limit)
        now = self._clock()
        out = []
        for (_, bonus_id), d in rows:
            status = d["status"]
            if status == "active" and datetime.fromisoformat(d["expires_at"]) <= now:
                status = "expired"
            out.append(
                {
                    "bonus_id": bonus_id,
                    "id": d["id"],
                    "currency": d["currency"],
                    "amount_minor": d["amount_minor"],
                    "wagering_requirement_minor": d["wagering_requirement_minor"],
                    "wagered_minor": d["wagered_minor"],
                    "wagered_by_edge": d["wagered_by_edge"],
                    "status": status,
                    "expires_at": d["expires_at"],
                }
            )
        return {"player_id": player_id, "bonuses": out, "as_of_sequence": head}

    async def statement(self, player_id: str, currency: str, after_sequence: int, limit: int) -> dict[str, Any]:
        await self.player(player_id)
        account = player_account(player_id, currency)
        rows, head = await self.store.select("history", {"account": account}, limit=limit, after=after_sequence)
        entries = [{"sequence": k[1], **d} for k, d in rows]
        return {
            "player_id": player_id,
            "currency": currency,
            "entries": entries,
            "next_after_sequence": entries[-1]["sequence"] if entries else after_sequence,
            "as_of_sequence": head,
        }

    async def journal_page(self, after_sequence: int, limit: int) -> list[str]:
        return [text for _, text in await self.store.journal(after_sequence, limit)]

    async def journal_range(self, from_sequence: int, to_sequence: int) -> AsyncIterator[list[dict[str, Any]]]:
        """Entries from..to inclusive, page by page (bounded memory however long the range)."""
        after = from_sequence - 1
        while after < to_sequence:
            rows = await self.store.journal(after, min(JOURNAL_PAGE, to_sequence - after))
            if not rows:
                return
            yield [orjson.loads(text) for _, text in rows]
            after = rows[-1][0]

    async def verify(self, up_to_sequence: int, since: Head | None = None, *, pace: Pace = ON_DEMAND) -> dict[str, Any]:
        """The chain up to a sequence; with `since` (a head verified before), only what follows it.
        In small pages by default, so a walk never holds the event loop for long (see `Pace`)."""
        return await verify_store(self.store, up_to_sequence, since=since, pace=pace)
