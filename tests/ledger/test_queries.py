"""HTTP: operator queries (lists with cursors, balances as of a sequence or a time)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

from core_ledger.queries import encode_cursor
from tests.support.clock import FakeClock
from tests.support.ledger import Api, bet


async def _all_pages(
    api: Api, path: str, member: str, limit: int, pages_max: int = 100, pause_s: float = 0.0
) -> list[dict[str, Any]]:
    """Every item of a listing, following `next_cursor`; checks the Link header on each page. With
    `pause_s`, sleeps that long after each page (writes go on meanwhile)."""
    items: list[dict[str, Any]] = []
    sep = "&" if "?" in path else "?"
    url = f"{path}{sep}limit={limit}"
    for _ in range(pages_max):
        async with api.client.get(url, headers={"Authorization": "Bearer token-of-admin_read-0123456789"}) as resp:
            assert resp.status == 200, await resp.text()
            page = await resp.json()
            link = resp.headers.get("Link")
        items += page[member]
        if not page["has_more"]:
            assert page["next_cursor"] is None and link is None
            return items
        assert link is not None and link.endswith('>; rel="next"') and page["next_cursor"] in link
        url = link[1 : link.index(">")]
        if pause_s:
            await asyncio.sleep(pause_s)
    raise AssertionError("too many pages")


async def test_transactions_filter_and_page_in_journal_order(api: Api) -> None:
    await api.player("p1", deposit=1000)
    await api.player("p2", deposit=1000)
    for i in range(5):
        await api.post("edge", "/v1/bets", bet(f"b{i}", 10, round_id=f"r{i % 2}", via="eu", client_id="gs"))
    await api.post("edge", "/v1/bets", bet("x", 10, player="p2", game="poker", via="us", client_id="gs"))
    await api.post(
        "edge",
        "/v1/wins",
        {
            "id": "w0",
            "player_id": "p1",
            "currency": "EUR",
            "amount_minor": 5,
            "round_id": "r0",
            "close_round": True,
            "via": "eu",
            "client_id": "gs",
        },
    )
    listed = await _all_pages(api, "/admin/v1/transactions?player_id=p1&type=bet", "transactions", 2)
    assert [t["id"] for t in listed] == ["b0", "b1", "b2", "b3", "b4"]
    assert all(t["via"] == "eu" and t["game_id"] == "slots" and t["outcome"] == "committed" for t in listed)
    sequences = [t["sequence"] for t in listed]
    assert sequences == sorted(sequences)
    status, by_round = await api.get("admin_read", "/admin/v1/transactions?round_id=r0&player_id=p1")
    assert status == 200 and [t["id"] for t in by_round["transactions"]] == ["b0", "b2", "b4", "w0"]
    assert by_round["transactions"][-1]["game_id"] == "slots"  # a win names its round's game
    _, poker = await api.get("admin_read", "/admin/v1/transactions?game_id=poker")
    assert [t["id"] for t in poker["transactions"]] == ["x"] and poker["has_more"] is False
    _, us = await api.get("admin_read", "/admin/v1/transactions?via=us&client_id=gs")
    assert [t["player_id"] for t in us["transactions"]] == ["p2"]
    _, everything = await api.get("admin_read", "/admin/v1/transactions?limit=50")
    assert len(everything["transactions"]) == 11 and everything["as_of_sequence"] == 11


async def test_the_currency_filter_finds_what_moved_money_in_it_though_its_request_names_none(api: Api) -> None:
    """A rollback, a jackpot payout, a bonus claim or a round refund names no currency in its
    request, only in its result: the index took the request's, so a list of EUR transactions left
    out every EUR rollback."""
    await api.player("p1", deposit=1000)
    await api.post("edge", "/v1/bets", bet("b0", 10))
    status, rolled = await api.post("edge", "/v1/rollbacks", {"id": "rb0", "bet_id": "b0", "player_id": "p1"})
    assert status == 201 and rolled["transaction"]["reversed"]
    await api.post("edge", "/v1/rollbacks", {"id": "rb-unknown", "bet_id": "ghost", "player_id": "p1"})
    listed = await _all_pages(api, "/admin/v1/transactions?currency=EUR", "transactions", 50)
    assert [t["id"] for t in listed if t["type"] == "rollback"] == ["rb0"]  # the unknown bet's moved nothing
    assert next(t for t in listed if t["id"] == "rb0")["currency"] == "EUR"


async def test_admin_entries_are_listed_by_the_client_the_list_shows_them_under(api: Api) -> None:
    await api.player("p1", deposit=1000)  # the player's creation is an admin entry
    admin = await _all_pages(api, "/admin/v1/transactions?client_id=%40admin", "transactions", 50)
    assert [t["type"] for t in admin] == ["player_create"] and admin[0]["client_id"] == "@admin"


async def test_transactions_by_time_range(api: Api, clock: FakeClock) -> None:
    await api.player("p1", deposit=1000)
    clock.advance(60)
    await api.post("edge", "/v1/bets", bet("late", 10))
    _, before = await api.get("admin_read", "/admin/v1/transactions?until=2026-11-23T11:00:30%2B01:00")
    assert [t["type"] for t in before["transactions"]] == ["player_create", "deposit"]
    _, after = await api.get("admin_read", "/admin/v1/transactions?from=2026-11-23T10:00:30Z")
    assert [t["id"] for t in after["transactions"]] == ["late"]
    exact_range = "from=2026-11-23T10:01:00Z&until=2026-11-23T10:01:00.000001Z"
    _, exact = await api.get("admin_read", f"/admin/v1/transactions?{exact_range}")
    assert [t["id"] for t in exact["transactions"]] == ["late"]  # from is inclusive, until exclusive


async def test_bad_cursor_and_filters_are_400_and_change_nothing(api: Api) -> None:
    await api.player("p1", deposit=1000)
    for query in (
        "cursor=garbage!",
        "cursor=eyJsIjoicGxheWVycyIsImsiOlsicDEiXX0",
        "from=yesterday",
        "from=2026-11-23T10:00:00",
        "limit=0",
        "limit=51",
        "player_id=" + "x" * 300,
        "player_id=a%00b",
        "from=0001-01-01T00:00:00%2B01:00",
        "cursor=" + encode_cursor("transactions", 2**63 - 1),
        "cursor=" + base64.urlsafe_b64encode(b'{"l":"transactions","k":' + b"9" * 40 + b"}").decode(),
        "cursor=" + encode_cursor("transactions", "1"),
        "cursor=" + encode_cursor("transactions", True),
    ):
        status, problem = await api.get("admin_read", f"/admin/v1/transactions?{query}")
        assert status == 400 and problem["code"] == "validation_error", (query, problem)
    # a cursor of another listing (players) is refused, not misread
    _, players = await api.get("admin_read", "/admin/v1/players?limit=1")
    await api.player("p2")
    _, players = await api.get("admin_read", "/admin/v1/players?limit=1")
    status, problem = await api.get("admin_read", f"/admin/v1/accounts?cursor={players['next_cursor']}")
    assert status == 400 and problem["field"] == "cursor"
    for listing, key in (
        ("accounts", [{"a": 1}]),
        ("accounts", ["a", "b"]),
        ("rounds", ["client_rounds", ["p"]]),
        ("rounds", ["nope", ["p", "r"]]),
        ("rounds", ["rounds", [1, 2]]),
        ("bonuses", ["p1"]),
    ):
        path = "/admin/v1/" + listing.split("_")[0]
        status, problem = await api.get("admin_read", f"{path}?cursor={encode_cursor(listing, key)}")
        assert status == 400 and problem["field"] == "cursor", (listing, key, problem)
    status, problem = await api.get("admin_read", "/admin/v1/accounts?kind=jackpot&currency=EUR")
    assert status == 400 and problem["field"] == "currency"
    assert (await api.get("cashier", "/admin/v1/transactions"))[0] == 403
    assert (await api.get("admin_write", "/admin/v1/players"))[0] == 403
    _, head = await api.get("admin_read", "/admin/v1/transactions?limit=50")
    assert head["as_of_sequence"] == 3  # nothing was written by the refused reads


async def test_players_accounts_jackpots_bonuses_rounds_lists(api: Api, clock: FakeClock) -> None:
    for p in ("p1", "p2", "p3"):
        await api.player(p, currencies=("EUR", "USD"), deposit=500)
    await api.post("admin_write", "/admin/v1/players/p2/freeze", {"reason": "kyc"})
    assert [p["player_id"] for p in await _all_pages(api, "/admin/v1/players", "players", 2)] == ["p1", "p2", "p3"]
    assert [p["player_id"] for p in await _all_pages(api, "/admin/v1/players?status=frozen", "players", 1)] == ["p2"]
    created = await _all_pages(api, "/admin/v1/players?created_from=2026-11-23T00:00:00Z&status=active", "players", 1)
    assert [p["player_id"] for p in created] == ["p1", "p3"] and all(p["created_sequence"] for p in created)
    _, none = await api.get("admin_read", "/admin/v1/players?created_until=2026-11-23T09:00:00Z")
    assert none["players"] == [] and none["has_more"] is False

    players = await _all_pages(api, "/admin/v1/accounts?kind=player", "accounts", 4)
    assert [(a["player_id"], a["currency"]) for a in players] == [
        (p, c) for p in ("p1", "p2", "p3") for c in ("EUR", "USD")
    ]
    euros = await _all_pages(api, "/admin/v1/accounts?kind=player&currency=EUR", "accounts", 4)
    assert [a["balance_minor"] for a in euros] == [500, 500, 500]
    _, cashier = await api.get("admin_read", "/admin/v1/accounts?kind=cashier&currency=EUR")
    assert [(a["account"], a["balance_minor"]) for a in cashier["accounts"]] == [("cashier:EUR", -1500)]

    for j in ("mega", "mini"):
        status, _ = await api.post(
            "admin_write",
            "/admin/v1/jackpots",
            {"jackpot_id": j, "currency": "EUR", "seed_minor": 100, "contribution_ppm": 10000, "game_ids": ["slots"]},
        )
        assert status == 201
    jackpots = await _all_pages(api, "/admin/v1/jackpots?currency=EUR", "jackpots", 1)
    assert [(j["jackpot_id"], j["pool_minor"]) for j in jackpots] == [("mega", 100), ("mini", 100)]
    pools = await _all_pages(api, "/admin/v1/accounts?kind=jackpot", "accounts", 5)
    assert [a["jackpot_id"] for a in pools] == ["mega", "mini"]

    for p, b in (("p1", "welcome"), ("p3", "reload")):
        status, _ = await api.post(
            "admin_write",
            "/admin/v1/bonuses",
            {
                "id": f"g-{p}",
                "player_id": p,
                "bonus_id": b,
                "currency": "EUR",
                "amount_minor": 10,
                "wagering_requirement_minor": 100,
                "expires_at": "2026-11-23T11:00:00Z",
            },
        )
        assert status == 201
    assert [(b["player_id"], b["status"]) for b in await _all_pages(api, "/admin/v1/bonuses", "bonuses", 1)] == [
        ("p1", "active"),
        ("p3", "active"),
    ]
    assert [b["bonus_id"] for b in await _all_pages(api, "/admin/v1/bonuses?player_id=p3", "bonuses", 1)] == ["reload"]

    await api.post("edge", "/v1/bets", bet("b1", 10, round_id="old", client_id="gs"))
    clock.advance(600)
    await api.post("edge", "/v1/bets", bet("b2", 10, round_id="new", client_id="gs"))
    await api.post("edge", "/v1/bets", bet("b3", 10, player="p3", round_id="done", client_id="gs"))
    await api.post(
        "edge",
        "/v1/wins",
        {
            "id": "w3",
            "player_id": "p3",
            "currency": "EUR",
            "amount_minor": 1,
            "round_id": "done",
            "close_round": True,
            "client_id": "gs",
        },
    )
    opened = await _all_pages(api, "/admin/v1/rounds?status=open", "rounds", 1)
    assert [r["round_id"] for r in opened] == ["new", "old"]
    stale = await _all_pages(api, "/admin/v1/rounds?status=open&min_age_s=300", "rounds", 1)
    assert [r["round_id"] for r in stale] == ["old"]
    assert [r["round_id"] for r in await _all_pages(api, "/admin/v1/rounds?status=closed", "rounds", 5)] == ["done"]
    clock.advance(3600)
    assert [b["status"] for b in await _all_pages(api, "/admin/v1/bonuses?status=expired", "bonuses", 5)] == [
        "expired",
        "expired",
    ]  # the clock passed their expiry


async def test_balances_as_of_a_sequence_and_a_time(api: Api, clock: FakeClock) -> None:
    await api.player("p1", currencies=("EUR", "USD"), deposit=1000)  # sequences 1, 2
    clock.advance(60)
    await api.post("edge", "/v1/bets", bet("b1", 100))  # 3
    clock.advance(60)
    await api.post("edge", "/v1/bets", bet("b2", 200))  # 4
    status, at = await api.get("admin_read", "/admin/v1/players/p1/balances?as_of_sequence=3")
    assert status == 200 and at == {
        "player_id": "p1",
        "as_of_sequence": 3,
        "balances": [
            {"currency": "EUR", "balance_minor": 900, "last_sequence": 3},
            {"currency": "USD", "balance_minor": 0, "last_sequence": None},
        ],
    }
    _, first = await api.get("admin_read", "/admin/v1/players/p1/balances?as_of_sequence=1")
    assert first["balances"][0]["balance_minor"] == 0
    _, by_time = await api.get("admin_read", "/admin/v1/players/p1/balances?as_of=2026-11-23T10:01:30Z")
    assert by_time["as_of_sequence"] == 3 and by_time["balances"][0]["balance_minor"] == 900
    _, now = await api.get("admin_read", "/admin/v1/players/p1/balances?as_of=2026-11-23T11:05:00%2B01:00")
    assert now["as_of_sequence"] == 4 and now["balances"][0]["balance_minor"] == 700
    for query in (
        "",
        "as_of_sequence=5",
        "as_of_sequence=1&as_of=2026-11-23T10:00:00Z",
        "as_of=noon",
        "as_of_sequence=-1",
    ):
        status, problem = await api.get("admin_read", f"/admin/v1/players/p1/balances?{query}")
        assert status == 400 and problem["code"] == "validation_error", query
    assert (await api.get("admin_read", "/admin/v1/players/nobody/balances?as_of_sequence=1"))[0] == 404


async def test_pagination_under_concurrent_bets_skips_and_doubles_nothing(api: Api) -> None:
    """Pages of transactions and accounts read while bets and new players commit: every item that
    existed before the listing started is served exactly once, and nothing is served twice."""
    for p in range(6):
        await api.player(f"p{p}", deposit=10_000)
    _, before = await api.get("admin_read", "/admin/v1/transactions?limit=50")
    existing = {t["sequence"] for t in before["transactions"]}
    stop = asyncio.Event()

    async def writer() -> int:
        n = 0
        while not stop.is_set() and n < 200:
            status, body = await api.post("edge", "/v1/bets", bet(f"c{n}", 1, player=f"p{n % 6}", round_id=f"r{n}"))
            assert status == 201, body
            if n % 10 == 0:
                await api.player(f"new{n:03d}")
            n += 1
            await asyncio.sleep(0)
        return n

    task = asyncio.create_task(writer())
    try:
        await asyncio.sleep(0.05)
        # A pause between pages lets bets commit: without it the listing could reach the head after
        # only four more (under load, on main too), and the check below was a race.
        listed = await _all_pages(api, "/admin/v1/transactions", "transactions", 3, pages_max=400, pause_s=0.01)
        accounts = await _all_pages(api, "/admin/v1/accounts", "accounts", 2, pages_max=400)
    finally:
        stop.set()
        written = await asyncio.wait_for(task, 30)
    sequences = [t["sequence"] for t in listed]
    assert len(sequences) == len(set(sequences)) and sequences == sorted(sequences)
    assert existing <= set(sequences)
    assert max(sequences) > max(existing) + 3  # bets did commit while the pages were read
    assert sequences == list(range(1, len(sequences) + 1))  # journal order without a gap
    names = [a["account"] for a in accounts]
    assert len(names) == len(set(names)) and names == sorted(names)
    assert {f"player:p{p}:EUR" for p in range(6)} <= set(names)
    assert written > 0
