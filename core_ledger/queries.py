"""Operator queries over committed state (no HTTP here; handlers in core_ledger/queries_http.py):
lists of players, accounts, transactions, rounds, jackpots and bonuses, one page at a time, and a
player's balances as of a journal sequence or a time (disputes).

Paging is by key, never by offset: a page is read in one snapshot, ordered by a unique key (the
journal sequence for transactions, the row key for the others), and its cursor encodes the last key
served, so the next page starts right after it whatever was committed in between. Nothing is served
twice and nothing that existed when the listing started is skipped; rows committed meanwhile appear
once when their key lies ahead of the cursor. See docs/decisions/operator-queries-with-cursors.md.

A cursor is opaque to clients (base64url of a small JSON document naming the listing it belongs to);
a forged, damaged or foreign one is a 400 `validation_error` on `cursor`, never a 5xx.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson

from shared.errors import BadRequest, NotFound

from core_ledger.domain.accounts import JACKPOT_PREFIX, PLAYER_PREFIX, player_account
from core_ledger.domain.commands import rfc3339
from core_ledger.reads import ROUND_TABLES, _round_view
from core_ledger.store import Store

CURSOR_CHARS_MAX = 2048
SEQUENCE_MAX = 2**62  # beyond any journal; keeps a forged cursor within the stores' integers
ACCOUNT_KINDS = ("player", "house", "jackpot", "bonus", "cashier")
ROUND_STATUSES = ("open", "closed")
PLAYER_STATUSES = ("active", "frozen")
BONUS_STATUSES = ("active", "claimed", "expired")


@dataclass(frozen=True)
class Page:
    """One page of a listing: its items, the cursor of the next page (None: this was the last) and
    the journal head sequence the page was read at."""

    items: list[dict[str, Any]]
    next_cursor: str | None
    as_of_sequence: int

    @property
    def has_more(self) -> bool:
        return self.next_cursor is not None


def encode_cursor(listing: str, key: Any) -> str:
    text = orjson.dumps({"l": listing, "k": key})
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def decode_cursor(listing: str, cursor: str | None) -> Any:
    """The last key a cursor of `listing` names; None without a cursor. 400 for anything else."""
    if cursor is None:
        return None
    bad = BadRequest("cursor: not a cursor of this listing (pass next_cursor back unchanged)", field="cursor")
    if len(cursor) > CURSOR_CHARS_MAX:
        raise bad
    try:
        doc = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError):
        raise bad from None
    if not isinstance(doc, dict) or doc.get("l") != listing or "k" not in doc:
        raise bad
    return doc["k"]


def _bad_cursor() -> BadRequest:
    return BadRequest("cursor: not a cursor of this listing (pass next_cursor back unchanged)", field="cursor")


def _text_key(key: Any, width: int) -> tuple[str, ...]:
    """A row key of `width` text columns, as a cursor holds it (400 for anything else)."""
    if not (
        isinstance(key, list)
        and len(key) == width
        and all(isinstance(k, str) and len(k) <= 512 and k.isprintable() for k in key)
    ):
        raise _bad_cursor()
    return tuple(key)


def _key_cursor(listing: str, cursor: str | None, width: int) -> tuple[str, ...] | None:
    """A cursor holding a row key of `width` text columns."""
    key = decode_cursor(listing, cursor)
    return None if key is None else _text_key(key, width)


def _sequence_cursor(listing: str, cursor: str | None) -> int:
    key = decode_cursor(listing, cursor)
    if key is None:
        return 0
    if not isinstance(key, int) or isinstance(key, bool) or not 0 <= key <= SEQUENCE_MAX:
        raise _bad_cursor()
    return key


def _next(listing: str, rows: list[Any], limit: int, last_key: Callable[[Any], Any]) -> str | None:
    """A full page may have a successor; a short one is the last."""
    return encode_cursor(listing, last_key(rows[-1])) if len(rows) >= limit and rows else None


def account_view(account: str, doc: dict[str, Any]) -> dict[str, Any]:
    """An account row with what its name says: kind, currency, owner (see domain/accounts.py)."""
    view: dict[str, Any] = {"account": account, "balance_minor": doc["balance_minor"], "version": doc["version"]}
    if account.startswith(PLAYER_PREFIX):
        player_id, currency = account[len(PLAYER_PREFIX) :].rsplit(":", 1)
        view.update(kind="player", currency=currency, player_id=player_id)
    elif account.startswith(JACKPOT_PREFIX):
        view.update(kind="jackpot", currency=None, jackpot_id=account[len(JACKPOT_PREFIX) :])
    else:
        kind, _, currency = account.partition(":")
        view.update(kind=kind, currency=currency)
    return view


def _player_view(player_id: str, doc: dict[str, Any]) -> dict[str, Any]:
    return {
        "player_id": player_id,
        "currencies": doc["currencies"],
        "frozen": doc["frozen"],
        "status": "frozen" if doc["frozen"] else "active",
        "bonus_ids": doc.get("bonus_ids", []),
    }


def _summary_view(sequence: int, doc: dict[str, Any]) -> dict[str, Any]:
    return {"sequence": sequence, **doc}


class LedgerQueries:
    def __init__(self, store: Store, *, clock: Callable[[], datetime]) -> None:
        self.store = store
        self._clock = clock

    async def players(
        self, *, status: str | None, created_from: str | None, created_until: str | None, cursor: str | None, limit: int
    ) -> Page:
        """By player id; with a creation range, by creation (the transaction index's `player_create`
        entries in the range), the status filter then applied to each page (a page may come back
        shorter than `limit`, even empty, with `has_more` still true)."""
        frozen = None if status is None else status == "frozen"
        if created_from is None and created_until is None:
            after = _key_cursor("players", cursor, 1)
            rows, head = await self.store.page(
                "players", after=after, limit=limit, doc_equals=None if frozen is None else {"frozen": frozen}
            )
            return Page(
                [_player_view(k[0], d) for k, d in rows], _next("players", rows, limit, lambda r: list(r[0])), head
            )
        created = {"type": "player_create", "outcome": "committed"}
        summaries, head = await self.store.summaries(
            created,
            after_sequence=_sequence_cursor("players_created", cursor),
            limit=limit,
            time_from=created_from,
            time_until=created_until,
        )
        items = []
        for sequence, summary in summaries:
            doc, _ = await self.store.get("players", (summary["player_id"],))
            if doc is not None and (frozen is None or doc["frozen"] == frozen):
                items.append(
                    {
                        **_player_view(summary["player_id"], doc),
                        "created_sequence": sequence,
                        "created_at": summary["committed_at"],
                    }
                )
        return Page(items, _next("players_created", summaries, limit, lambda r: r[0]), head)

    async def accounts(self, *, kind: str | None, currency: str | None, cursor: str | None, limit: int) -> Page:
        """By account name. A system kind with a currency is one account; a player kind with a
        currency is filtered per page (a page may be short, even empty, with `has_more` true)."""
        if kind == "jackpot" and currency is not None:
            raise BadRequest(
                "currency: jackpot pools are named by jackpot, not currency; list "
                "/admin/v1/jackpots?currency=... instead",
                field="currency",
            )
        prefix = None
        if kind == "player":
            prefix = PLAYER_PREFIX
        elif kind == "jackpot":
            prefix = JACKPOT_PREFIX
        elif kind is not None:
            prefix = f"{kind}:{currency}" if currency is not None else f"{kind}:"
        after = _key_cursor("accounts", cursor, 1)
        rows, head = await self.store.page("accounts", after=after, limit=limit, key_prefix=prefix)
        items = [account_view(k[0], d) for k, d in rows]
        if kind is not None and kind not in ("player", "jackpot") and currency is not None:
            items = [i for i in items if i["account"] == prefix]
        elif currency is not None:
            items = [i for i in items if i["currency"] == currency]
        return Page(items, _next("accounts", rows, limit, lambda r: list(r[0])), head)

    async def transactions(
        self, filters: dict[str, str], *, time_from: str | None, time_until: str | None, cursor: str | None, limit: int
    ) -> Page:
        """From the transaction index, in journal order (the cursor is the last sequence served)."""
        rows, head = await self.store.summaries(
            filters,
            after_sequence=_sequence_cursor("transactions", cursor),
            limit=limit,
            time_from=time_from,
            time_until=time_until,
        )
        return Page([_summary_view(s, d) for s, d in rows], _next("transactions", rows, limit, lambda r: r[0]), head)

    async def rounds(
        self,
        *,
        status: str | None,
        min_age_s: int | None,
        cursor: str | None,
        limit: int,
        holding_bets: bool = False,
    ) -> Page:
        """Scoped rounds (`client_rounds`) by key, then the rounds journaled before scoping. With
        `min_age_s`, only rounds opened at or before the last entry committed that long ago; with
        `holding_bets`, only rounds whose bets were not all rolled back (both filtered per page)."""
        position = decode_cursor("rounds", cursor)
        tables = list(ROUND_TABLES[::-1])  # client_rounds first: the live ones
        start, after = 0, None
        if position is not None:
            if not (isinstance(position, list) and len(position) == 2 and position[0] in tables):
                raise _bad_cursor()
            start = tables.index(position[0])
            after = _text_key(position[1], 3 if position[0] == "client_rounds" else 2)
        opened_by = None
        if min_age_s is not None:
            opened_by = await self.store.sequence_at(rfc3339(self._clock() - timedelta(seconds=min_age_s)))
        items: list[dict[str, Any]] = []
        head = 0
        for index in range(start, len(tables)):
            table = tables[index]
            rows, head = await self.store.page(
                table,
                after=after if index == start else None,
                limit=limit,
                doc_equals=None if status is None else {"status": status},
            )
            for key, doc in rows:
                if holding_bets and doc["bets_minor"] <= 0:
                    continue  # every bet rolled back: refunded, though its status stays open
                if opened_by is None or doc.get("opened_sequence", 0) <= opened_by:
                    items.append({**_round_view(key, doc), "opened_sequence": doc.get("opened_sequence")})
            if len(rows) >= limit:
                return Page(items, encode_cursor("rounds", [table, list(rows[-1][0])]), head)
            limit -= len(rows)
        return Page(items, None, head)

    async def jackpots(self, *, currency: str | None, cursor: str | None, limit: int) -> Page:
        rows, head = await self.store.page(
            "jackpots",
            after=_key_cursor("jackpots", cursor, 1),
            limit=limit,
            doc_equals=None if currency is None else {"currency": currency},
        )
        items = [
            {
                "jackpot_id": k[0],
                "currency": d["currency"],
                "pool_minor": d["seed_minor"] + sum(d["contributions_by_edge"].values()),
                "seed_minor": d["seed_minor"],
                "epoch": d["epoch"],
                "contribution_ppm": d["contribution_ppm"],
                "game_ids": d["game_ids"],
                "contributions_by_edge": d["contributions_by_edge"],
            }
            for k, d in rows
        ]
        return Page(items, _next("jackpots", rows, limit, lambda r: list(r[0])), head)

    async def bonuses(self, *, player_id: str | None, status: str | None, cursor: str | None, limit: int) -> Page:
        """By (player, bonus); `status` is what a reader sees (an active offer past its expiry is
        `expired`), filtered per page."""
        after = _key_cursor("bonuses", cursor, 2)
        if player_id is not None:
            if after is not None and after[0] != player_id:
                raise _bad_cursor()
            rows, head = await self.store.select(
                "bonuses", {"player_id": player_id}, limit=limit, after=None if after is None else after[1]
            )
        else:
            rows, head = await self.store.page("bonuses", after=after, limit=limit)
        now = self._clock()
        items = []
        for (owner, bonus_id), d in rows:
            seen = d["status"]
            if seen == "active" and datetime.fromisoformat(d["expires_at"]) <= now:
                seen = "expired"
            if status is None or seen == status:
                items.append(
                    {
                        "player_id": owner,
                        "bonus_id": bonus_id,
                        "id": d["id"],
                        "currency": d["currency"],
                        "amount_minor": d["amount_minor"],
                        "wagering_requirement_minor": d["wagering_requirement_minor"],
                        "wagered_minor": d["wagered_minor"],
                        "status": seen,
                        "expires_at": d["expires_at"],
                    }
                )
        return Page(items, _next("bonuses", rows, limit, lambda r: list(r[0])), head)

    async def balances_as_of(self, player_id: str, *, sequence: int | None, moment: datetime | None) -> dict[str, Any]:
        """A player's balances right after the entry at `sequence` (or the last entry committed at or
        before `moment`): per currency, the balance its last posting by then left (one index seek
        per currency in `history`, whatever the journal's length)."""
        player, head = await self.store.get("players", (player_id,))
        if player is None:
            raise NotFound(f"player {player_id!r} not found", field="player_id")
        if moment is not None:
            sequence = await self.store.sequence_at(rfc3339(moment))
        assert sequence is not None
        if sequence > head:
            raise BadRequest(f"as_of_sequence: beyond the journal head ({head})", field="as_of_sequence")
        balances = []
        for currency in player["currencies"]:
            last = await self.store.history_at(player_account(player_id, currency), sequence)
            balances.append(
                {
                    "currency": currency,
                    "balance_minor": last["balance_minor"] if last else 0,
                    "last_sequence": last["sequence"] if last else None,
                }
            )
        return {"player_id": player_id, "as_of_sequence": sequence, "balances": balances}
