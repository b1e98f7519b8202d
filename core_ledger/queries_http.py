"""The operator query API (`GET /admin/v1/...` lists and balances as of): query-string parsing, the
`Link: <...>; rel="next"` header, and the route table. Role `admin_read` only: a cashier moves money
in and out for players and already reads their balances; listing the whole ledger's players,
accounts and transactions is an operator's read (docs/decisions/operator-queries-with-cursors.md).
The reads themselves are in core_ledger/queries.py."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web

from shared import auth
from shared.contract.answers import (
    AccountsPage,
    BalancesAsOfAnswer,
    BonusesPage,
    JackpotsPage,
    PlayersPage,
    RoundsPage,
    TransactionsPage,
)
from shared.errors import BadRequest
from shared.routes import Route, path_id
from shared.web import json_response

from core_ledger.admin_http import ADMIN_READ_CODES, SEQUENCE_MAX
from core_ledger.app_keys import CONFIG
from core_ledger.domain.commands import ADMIN_SCOPE, rfc3339
from core_ledger.queries import (
    ACCOUNT_KINDS,
    BONUS_STATUSES,
    PLAYER_STATUSES,
    ROUND_STATUSES,
    LedgerQueries,
    Page,
)
from core_ledger.query import page_limit, query_choice, query_id, query_int
from core_ledger.store.base import SUMMARY_FILTERS

QUERIES = web.AppKey("queries", LedgerQueries)
AGE_S_MAX = 10 * 365 * 86400
PAGE_QUERY = {"cursor": "string", "limit": "integer"}


def _text(request: web.Request, name: str) -> str | None:
    """A filter value: an id (shared/ids.py) or a name (type, outcome, currency) of that alphabet;
    for `client_id` also the admin scope, which the lists show as the client of admin entries."""
    if name == "client_id" and request.query.get(name) == ADMIN_SCOPE:
        return ADMIN_SCOPE
    return query_id(request, name)


def _moment(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        moment = datetime.fromisoformat(raw) if len(raw) <= 64 else None
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise BadRequest(f"{name}: an RFC 3339 time with a zone offset is required", field=name)
    try:
        rfc3339(moment)  # in UTC it must still be a datetime (year 1 at +01:00 is not)
    except OverflowError:
        raise BadRequest(f"{name}: out of range", field=name) from None
    return moment


def _time_text(request: web.Request, name: str) -> str | None:
    """A time bound as the journal writes times (UTC, microseconds), so bounds compare as text."""
    moment = _moment(request, name)
    return None if moment is None else rfc3339(moment)


def _paged(request: web.Request, page: Page, member: str) -> web.Response:
    headers = {}
    if page.next_cursor is not None:
        headers["Link"] = f'<{request.rel_url.update_query(cursor=page.next_cursor)}>; rel="next"'
    return json_response(
        {
            member: page.items,
            "next_cursor": page.next_cursor,
            "has_more": page.has_more,
            "as_of_sequence": page.as_of_sequence,
        },
        headers=headers,
    )


@auth.roles("admin_read")
async def players(request: web.Request) -> web.Response:
    page = await request.app[QUERIES].players(
        status=query_choice(request, "status", PLAYER_STATUSES),
        created_from=_time_text(request, "created_from"),
        created_until=_time_text(request, "created_until"),
        cursor=request.query.get("cursor"),
        limit=page_limit(request),
    )
    return _paged(request, page, "players")


@auth.roles("admin_read")
async def accounts(request: web.Request) -> web.Response:
    currency = request.query.get("currency")
    if currency is not None and not (len(currency) == 3 and currency.isascii() and currency.isupper()):
        raise BadRequest("currency: a 3-letter currency code is required", field="currency")
    page = await request.app[QUERIES].accounts(
        kind=query_choice(request, "kind", ACCOUNT_KINDS),
        currency=currency,
        cursor=request.query.get("cursor"),
        limit=page_limit(request),
    )
    return _paged(request, page, "accounts")


@auth.roles("admin_read")
async def transactions(request: web.Request) -> web.Response:
    filters = {name: value for name in SUMMARY_FILTERS if (value := _text(request, name)) is not None}
    page = await request.app[QUERIES].transactions(
        filters,
        time_from=_time_text(request, "from"),
        time_until=_time_text(request, "until"),
        cursor=request.query.get("cursor"),
        limit=page_limit(request),
    )
    return _paged(request, page, "transactions")


@auth.roles("admin_read")
async def rounds(request: web.Request) -> web.Response:
    """`status=stale`: open rounds older than the configured `stale_round_after_s` (interrupted rounds)."""
    age = query_int(request, "min_age_s", -1, low=0, high=AGE_S_MAX)
    status = query_choice(request, "status", (*ROUND_STATUSES, "stale"))
    stale = status == "stale"
    if stale:  # as the stale-round job sees them: open, holding bets, old enough
        stale_after_s = request.app[CONFIG].stale_round_after_s
        if stale_after_s <= 0:
            raise BadRequest("status: stale rounds are off (stale_round_after_s is 0); use min_age_s", field="status")
        status, age = "open", max(age, int(stale_after_s))
    page = await request.app[QUERIES].rounds(
        status=status,
        min_age_s=None if age < 0 else age,
        cursor=request.query.get("cursor"),
        limit=page_limit(request),
        holding_bets=stale,
    )
    return _paged(request, page, "rounds")


@auth.roles("admin_read")
async def jackpots(request: web.Request) -> web.Response:
    page = await request.app[QUERIES].jackpots(
        currency=_text(request, "currency"), cursor=request.query.get("cursor"), limit=page_limit(request)
    )
    return _paged(request, page, "jackpots")


@auth.roles("admin_read")
async def bonuses(request: web.Request) -> web.Response:
    page = await request.app[QUERIES].bonuses(
        player_id=_text(request, "player_id"),
        status=query_choice(request, "status", BONUS_STATUSES),
        cursor=request.query.get("cursor"),
        limit=page_limit(request),
    )
    return _paged(request, page, "bonuses")


@auth.roles("admin_read")
async def balances_as_of(request: web.Request) -> web.Response:
    moment = _moment(request, "as_of")
    if ("as_of_sequence" in request.query) == (moment is not None):
        raise BadRequest("as_of_sequence or as_of: exactly one is required", field="as_of_sequence")
    sequence = query_int(request, "as_of_sequence", 0, low=0, high=SEQUENCE_MAX) if moment is None else None
    return json_response(
        await request.app[QUERIES].balances_as_of(path_id(request, "player_id"), sequence=sequence, moment=moment)
    )


ROUTES: list[Route] = [
    Route(
        "GET",
        "/admin/v1/players",
        players,
        "List players (by id; by creation with a creation range)",
        query={"status": "string", "created_from": "string", "created_until": "string", **PAGE_QUERY},
        answer=PlayersPage,
        codes=ADMIN_READ_CODES,
        tag="queries",
    ),
    Route(
        "GET",
        "/admin/v1/accounts",
        accounts,
        "List accounts with balances (by name)",
        query={"kind": "string", "currency": "string", **PAGE_QUERY},
        answer=AccountsPage,
        codes=ADMIN_READ_CODES,
        tag="queries",
    ),
    Route(
        "GET",
        "/admin/v1/transactions",
        transactions,
        "List transactions in journal order, filtered",
        query={**dict.fromkeys(SUMMARY_FILTERS, "string"), "from": "string", "until": "string", **PAGE_QUERY},
        answer=TransactionsPage,
        codes=ADMIN_READ_CODES,
        tag="queries",
    ),
    Route(
        "GET",
        "/admin/v1/rounds",
        rounds,
        "List rounds (by status: open, closed, or stale = open longer than stale_round_after_s; by age)",
        query={"status": "string", "min_age_s": "integer", **PAGE_QUERY},
        answer=RoundsPage,
        codes=ADMIN_READ_CODES,
        tag="queries",
    ),
    Route(
        "GET",
        "/admin/v1/jackpots",
        jackpots,
        "List jackpots with their pools",
        query={"currency": "string", **PAGE_QUERY},
        answer=JackpotsPage,
        codes=ADMIN_READ_CODES,
        tag="queries",
    ),
    Route(
        "GET",
        "/admin/v1/bonuses",
        bonuses,
        "List bonus offers (of one player or all)",
        query={"player_id": "string", "status": "string", **PAGE_QUERY},
        answer=BonusesPage,
        codes=ADMIN_READ_CODES,
        tag="queries",
    ),
    Route(
        "GET",
        "/admin/v1/players/{player_id}/balances",
        balances_as_of,
        "A player's balances as of a journal sequence or a time (disputes)",
        query={"as_of_sequence": "integer", "as_of": "string"},
        answer=BalancesAsOfAnswer,
        codes=ADMIN_READ_CODES,
        tag="queries",
    ),
]
