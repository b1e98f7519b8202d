"""Multi-process: a real ledger and three real edges on loopback (harness.cluster, with fault
proxies), one cluster for the module. Displays must equal the ledger exactly after traffic,
retries, replays, rollbacks, a payout, a partition, a kill -9 and a ledger outage."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from harness.cluster import BONUS_ID, JACKPOT_ID, Cluster, seed
from tests.support.polling import eventually

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

PLAYERS = 6
CONVERGE_TIMEOUT_S = 20.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("edge-cluster"), proxied=True, seed=7, log_level="warning")
    try:
        await c.start()
        await seed(c, players=PLAYERS)
        yield c
    finally:
        await c.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def http(cluster) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(
        headers=cluster.headers("game_server"), timeout=aiohttp.ClientTimeout(total=15)
    ) as s:
        yield s


class Traffic:
    def __init__(self, cluster: Cluster, http: aiohttp.ClientSession, tag: str) -> None:
        self.c, self.http, self.tag, self.n = cluster, http, tag, 0
        self.rng = random.Random(tag)

    def bet(self, game: str = "slots-1") -> dict[str, Any]:
        self.n += 1
        return {
            "id": f"{self.tag}-b{self.n}",
            "player_id": f"p{self.rng.randint(1, PLAYERS):03d}",
            "currency": "EUR",
            "amount_minor": self.rng.randint(100, 2000),
            "round_id": f"{self.tag}-r{self.n}",
            "game_id": game,
        }

    async def post(self, edge: str, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        async with self.http.post(self.c.url(edge) + path, json=body) as r:
            return r.status, await r.json()

    async def bets(self, edges: tuple[str, ...], count: int) -> list[tuple[str, dict[str, Any]]]:
        placed = [(edges[i % len(edges)], self.bet()) for i in range(count)]
        results = await asyncio.gather(*(self.post(e, "/v1/bets", b) for e, b in placed))
        assert all(status == 201 for status, _ in results), results[:3]
        return placed


async def ledger_truth(c: Cluster, http: aiohttp.ClientSession) -> dict[str, Any]:
    h = c.headers("edge")
    async with http.get(f"{c.url('ledger')}/v1/jackpots/{JACKPOT_ID}", headers=h) as r:
        jp = await r.json()
    wagered = {}
    for i in range(1, PLAYERS + 1):
        async with http.get(f"{c.url('ledger')}/v1/players/p{i:03d}/bonuses", headers=h) as r:
            wagered[f"p{i:03d}"] = {b["bonus_id"]: b["wagered_minor"] for b in (await r.json())["bonuses"]}
    return {"jackpot": (jp["pool_minor"], jp["epoch"]), "wagered": wagered}


async def edge_view(c: Cluster, http: aiohttp.ClientSession, edge: str) -> dict[str, Any]:
    async with http.get(f"{c.url(edge)}/v1/jackpots/{JACKPOT_ID}") as r:
        jp = await r.json()
    wagered = {}
    for i in range(1, PLAYERS + 1):
        async with http.get(f"{c.url(edge)}/v1/players/p{i:03d}/bonus-progress") as r:
            wagered[f"p{i:03d}"] = {b["bonus_id"]: b["wagered_minor"] for b in (await r.json())["bonuses"]}
    return {"jackpot": (jp.get("display_minor"), jp.get("epoch")), "wagered": wagered}


async def converged(c: Cluster, http: aiohttp.ClientSession, timeout_s: float = CONVERGE_TIMEOUT_S) -> float:
    """Wait until every edge shows exactly the ledger's values; returns the seconds it took."""
    started = time.monotonic()
    while True:
        truth = await ledger_truth(c, http)
        views = {e: await edge_view(c, http, e) for e in c.edge_ids}
        if all(v == truth for v in views.values()):
            return time.monotonic() - started
        assert time.monotonic() - started < timeout_s, f"not converged: ledger {truth} edges {views}"
        await asyncio.sleep(0.2)


async def test_bets_retries_replays_and_rollbacks_through_all_edges_show_the_ledger_exactly(cluster, http):
    t = Traffic(cluster, http, "mix")
    placed = await t.bets(cluster.edge_ids, 90)
    # retries through the same edge and replays through another: identical answers, counted once
    for i, (edge, body) in enumerate(placed[:12]):
        other = cluster.edge_ids[(cluster.edge_ids.index(edge) + 1 + i % 2) % 3]
        status, again = await t.post(other, "/v1/bets", body)
        assert status == 200 and again["replayed"] is True and again["transaction"]["via"] == edge
    # rollbacks through the bet's edge and through another edge
    for i, (edge, body) in enumerate(placed[20:26]):
        via = edge if i % 2 else cluster.edge_ids[(cluster.edge_ids.index(edge) + 1) % 3]
        status, _ = await t.post(
            via,
            "/v1/rollbacks",
            {
                "id": f"rb-{body['id']}",
                "bet_id": body["id"],
                "player_id": body["player_id"],
                "round_id": body["round_id"],
            },
        )
        assert status == 201
    await converged(cluster, http)
    truth = await ledger_truth(cluster, http)
    assert truth["jackpot"][0] > 100_000 and all(w[BONUS_ID] > 0 for w in truth["wagered"].values() if w)


async def test_a_jackpot_payout_resets_every_display(cluster, http):
    t = Traffic(cluster, http, "pay")
    placed = await t.bets(cluster.edge_ids, 9)
    winner = placed[0][1]  # a jackpot is won in a round the player staked in
    status, body = await t.post(
        "us",
        "/v1/jackpot-payouts",
        {"id": "pay-1", "jackpot_id": JACKPOT_ID, "player_id": winner["player_id"], "round_id": winner["round_id"]},
    )
    assert status == 201, body
    await converged(cluster, http)
    assert (await ledger_truth(cluster, http))["jackpot"] == (100_000, 2)
    await t.bets(cluster.edge_ids, 6)
    await converged(cluster, http)


async def test_an_edge_cut_from_its_peers_keeps_serving_and_converges_after_healing(cluster, http):
    t = Traffic(cluster, http, "cut")
    cluster.partition("apac")
    try:
        await t.bets(cluster.edge_ids, 30)  # apac still reaches the ledger
        async with http.get(cluster.url("apac") + f"/v1/jackpots/{JACKPOT_ID}") as r:
            assert r.status == 200
        truth = await ledger_truth(cluster, http)
        assert (await edge_view(cluster, http, "apac"))["jackpot"] != truth["jackpot"], "apac saw peers while cut"
    finally:
        cluster.heal()
    await converged(cluster, http)


CUT_PLAYERS = 30  # new session documents: the backstop sweep takes a round per document here
CUT_GAMES = ("slots-1", "roulette-1")
CUT_CONVERGE_S = 8.0  # well under the 60 s backstop sweep, and under a round per document


async def test_a_cut_shorter_than_the_heartbeat_converges_without_waiting_for_the_backstop_sweep(cluster, http):
    # Game states written on every edge during a cut too short for a heartbeat to notice: the
    # proxies drop what the links carry meanwhile, and reset them when the cut heals (a TCP stream
    # never resumes with a hole). The edges must agree soon after, not when the slow backstop
    # sweep (one document a round here, 60 s at least) comes round to those documents.
    players = [f"cut-s{i:02d}" for i in range(CUT_PLAYERS)]
    cluster.partition("apac")
    try:
        for n, player in enumerate(players):
            for g, game in enumerate(CUT_GAMES):
                edge = cluster.edge_ids[(n + g) % len(cluster.edge_ids)]
                url = cluster.url(edge) + f"/v1/players/{player}/session/{game}"
                async with http.put(url, json={"state": {"n": n, "edge": edge}}) as r:
                    assert r.status == 200, await r.text()
    finally:
        cluster.heal()
    started = time.monotonic()
    while True:
        views = {}
        for edge in cluster.edge_ids:
            views[edge] = []
            for player in players:
                async with http.get(cluster.url(edge) + f"/v1/players/{player}/session") as r:
                    games = (await r.json())["games"]
                views[edge].append({g: (v["state"], v["edge"]) for g, v in games.items()})
        if all(v == views[cluster.edge_ids[0]] for v in views.values()):
            break
        assert time.monotonic() - started < CUT_CONVERGE_S, "the edges still differ after the cut healed"
        await asyncio.sleep(0.2)
    assert all(len(games) == len(CUT_GAMES) for games in views["apac"])


async def test_an_edge_killed_with_sigkill_restarts_from_disk_and_converges(cluster, http):
    t = Traffic(cluster, http, "kill")
    await t.bets(cluster.edge_ids, 30)
    await cluster.kill("us")
    await t.bets(("eu", "apac"), 20)
    await cluster.start_service("us")
    await t.bets(cluster.edge_ids, 30)  # us writes again after its restart: no clock reuse, no double count
    await converged(cluster, http)


async def test_a_player_reconnecting_on_another_edge_sees_the_open_round_and_game_state(cluster, http):
    t = Traffic(cluster, http, "session")
    bet = {**t.bet(), "player_id": "p002"}
    assert (await t.post("eu", "/v1/bets", bet))[0] == 201
    async with http.put(
        cluster.url("eu") + f"/v1/players/p002/session/{bet['game_id']}",
        json={"state": {"reels": [3, 1, 4], "free_spins": 2}},
    ) as r:
        assert r.status == 200
    started = time.monotonic()
    while True:
        async with http.get(cluster.url("apac") + "/v1/players/p002/session") as r:
            session = await r.json()
        game = session["games"].get(bet["game_id"])
        if game is not None:
            break
        assert time.monotonic() - started < CONVERGE_TIMEOUT_S
        await asyncio.sleep(0.1)
    assert game["state"] == {"reels": [3, 1, 4], "free_spins": 2} and game["edge"] == "eu"
    assert bet["round_id"] in [r["round_id"] for r in session["open_rounds"]]


async def test_with_the_ledger_stopped_money_answers_503_in_time_and_state_reads_answer(cluster, http):
    t = Traffic(cluster, http, "down")
    for edge in cluster.edge_ids:  # each edge holds a jackpot display and p001's state of its own
        status, _ = await t.post(edge, "/v1/bets", {**t.bet(), "player_id": "p001"})
        assert status == 201
    await cluster.stop_service("ledger")
    try:
        for edge in cluster.edge_ids:
            started = time.monotonic()
            status, body = await t.post(edge, "/v1/bets", t.bet())
            assert status == 503 and body["code"] == "ledger_unavailable"
            assert time.monotonic() - started < cluster.ledger_deadline_s + 2.0  # deadline + scheduling slack
            for path in (f"/v1/jackpots/{JACKPOT_ID}", "/v1/players/p001/bonus-progress", "/v1/players/p001/session"):
                async with http.get(cluster.url(edge) + path) as r:
                    assert r.status == 200, path
    finally:
        await cluster.start_service("ledger")
    for edge in cluster.edge_ids:  # the cluster is shared: leave every edge taking money again

        async def takes_money(edge: str = edge) -> bool:
            return (await t.post(edge, "/v1/bets", t.bet()))[0] == 201

        await eventually(takes_money, 30.0, 0.2, what=f"{edge} taking bets once the ledger is back")
