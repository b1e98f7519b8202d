"""`croupier demo`: a cluster, simulated game servers in every region, a live view, a verdict.

The scenario runs for a bounded time: rounds of bets, wins and rollbacks in every region,
retries of the same id, a player who disconnects mid-round and resumes in another region, one
region cut off from its peers and healed, a jackpot hit and a bonus claim. It ends with the
invariant report of `harness.verify`; the exit status is non-zero if any check fails.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from shared.metrics import histogram_quantile

from harness.cluster import BONUS_ID, JACKPOT_GAMES, JACKPOT_ID, Cluster, seed
from harness.verify import Check, check_cluster

GAMES = (*JACKPOT_GAMES, "table-1")
LATENCY_WINDOW = 2000
CONVERGE_TIMEOUT_S = 20.0
REQUEST_TIMEOUT_S = 10.0


@dataclass
class RegionStats:
    ok: int = 0
    errors: int = 0
    replays_checked: int = 0
    latencies_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))
    window: deque[float] = field(default_factory=lambda: deque(maxlen=20_000))

    def record(self, started: float, ok: bool) -> None:
        now = time.monotonic()
        self.latencies_s.append(now - started)
        self.window.append(now)
        if ok:
            self.ok += 1
        else:
            self.errors += 1

    def rate(self) -> float:
        cutoff = time.monotonic() - 5.0
        return sum(1 for t in self.window if t >= cutoff) / 5.0

    def p99_ms(self) -> float:
        if not self.latencies_s:
            return 0.0
        ordered = sorted(self.latencies_s)
        return ordered[int(0.99 * (len(ordered) - 1))] * 1000


class Demo:
    def __init__(self, cluster: Cluster, seed_info: dict[str, Any], duration_s: float, rng_seed: int) -> None:
        self.cluster = cluster
        self.duration_s = duration_s
        self.rng = random.Random(rng_seed)
        self.players = [p["player_id"] for p in seed_info["players"]]
        self.stats = {e: RegionStats() for e in cluster.edge_ids}
        self.events: deque[str] = deque(maxlen=8)
        self.failures: list[str] = []
        self.view: dict[str, Any] = {"pool": 0, "epoch": 0, "displays": {}, "lag": {}}
        self.lag_buckets: dict[str, dict[str, list[tuple[float, float]]]] = {}
        self.gs = cluster.headers("game_server")
        self._ids = 0

    def new_id(self, kind: str) -> str:
        self._ids += 1
        return f"demo-{kind}-{self._ids}"

    def event(self, text: str, ok: bool = True) -> None:
        self.events.append(("[green]✓[/] " if ok else "[red]✗[/] ") + text)
        if not ok:
            self.failures.append(text)

    async def post(self, http: aiohttp.ClientSession, region: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        started = time.monotonic()
        try:
            async with http.post(self.cluster.url(region) + path, json=body, headers=self.gs) as r:
                payload = await r.json(content_type=None)
                self.stats[region].record(started, r.status < 500)
                return r.status, payload
        except (TimeoutError, aiohttp.ClientError) as e:
            self.stats[region].record(started, False)
            return 599, {"code": type(e).__name__}

    # --- traffic ----------------------------------------------------------------------------

    async def game_server(self, http: aiohttp.ClientSession, region: str, deadline: float) -> None:
        rng = random.Random(self.rng.random())
        while time.monotonic() < deadline:
            await self.play_round(http, region, rng.choice(self.players), rng)

    async def play_round(self, http: aiohttp.ClientSession, region: str, player: str, rng: random.Random) -> None:
        round_id = self.new_id("round")
        stake_minor = rng.randint(10, 500)
        bet = {
            "id": self.new_id("bet"),
            "player_id": player,
            "currency": "EUR",
            "amount_minor": stake_minor,
            "round_id": round_id,
            "game_id": rng.choice(GAMES),
        }
        status, first = await self.post(http, region, "/v1/bets", bet)
        if status != 201:
            return
        if rng.random() < 0.1:  # the game server timed out and retries: same id, same answer
            other = rng.choice(self.cluster.edge_ids)
            status2, again = await self.post(http, other, "/v1/bets", bet)
            same = status2 == 200 and again.get("replayed") and {**again, "replayed": False} == first
            self.stats[region].replays_checked += 1
            if not same:
                self.event(f"retry of {bet['id']} via {other} was not an identical replay ({status2})", ok=False)
        if rng.random() < 0.08:
            await self.post(
                http,
                region,
                "/v1/rollbacks",
                {"id": self.new_id("rb"), "bet_id": bet["id"], "player_id": player, "round_id": round_id},
            )
            return
        win = rng.choice([0, 0, stake_minor // 2, stake_minor * 2])
        await self.post(
            http,
            region,
            "/v1/wins",
            {
                "id": self.new_id("win"),
                "player_id": player,
                "currency": "EUR",
                "amount_minor": win,
                "round_id": round_id,
                "close_round": True,
            },
        )

    # --- scripted moments -------------------------------------------------------------------

    async def scenario(self, http: aiohttp.ClientSession) -> None:
        d = self.duration_s
        await asyncio.sleep(min(5.0, d * 0.1))
        await self.disconnect_and_resume(http)
        await asyncio.sleep(d * 0.15)
        cut = self.cluster.edge_ids[-1]
        self.cluster.partition(cut)
        self.event(f"region {cut} cut off from its peers (it keeps serving)")
        await asyncio.sleep(d * 0.25)
        self.cluster.heal()
        self.event(f"region {cut} healed")
        await asyncio.sleep(d * 0.1)
        await self.jackpot_hit(http)
        await asyncio.sleep(d * 0.05)
        await self.bonus_claim(http)

    async def disconnect_and_resume(self, http: aiohttp.ClientSession) -> None:
        first, second = self.cluster.edge_ids[0], self.cluster.edge_ids[1]
        player, round_id = self.players[0], self.new_id("round-dc")
        status, _ = await self.post(
            http,
            first,
            "/v1/bets",
            {
                "id": self.new_id("bet"),
                "player_id": player,
                "currency": "EUR",
                "amount_minor": 100,
                "round_id": round_id,
                "game_id": "slots-1",
            },
        )
        state = {"reels": [3, 1, 4], "free_spins_left": 2}
        async with http.put(
            f"{self.cluster.url(first)}/v1/players/{player}/session/slots-1", json={"state": state}, headers=self.gs
        ) as r:
            put_ok = r.status == 200
        self.event(f"{player} opened round {round_id} on {first} and disconnected", status == 201 and put_ok)
        session: dict[str, Any] = {}
        for _ in range(50):  # the session record travels by CRDT sync: bounded wait
            async with http.get(f"{self.cluster.url(second)}/v1/players/{player}/session", headers=self.gs) as r:
                session = await r.json()
            if session.get("games", {}).get("slots-1", {}).get("state") == state:
                break
            await asyncio.sleep(0.1)
        open_ids = {r["round_id"] for r in session.get("open_rounds", [])}
        ok = round_id in open_ids and session.get("games", {}).get("slots-1", {}).get("state") == state
        self.event(f"{player} resumed on {second}: open round and game state {'restored' if ok else 'MISSING'}", ok)
        await self.post(
            http,
            second,
            "/v1/wins",
            {
                "id": self.new_id("win"),
                "player_id": player,
                "currency": "EUR",
                "amount_minor": 250,
                "round_id": round_id,
                "close_round": True,
            },
        )

    async def jackpot_hit(self, http: aiohttp.ClientSession) -> None:
        region, player, round_id = self.cluster.edge_ids[1], self.rng.choice(self.players), self.new_id("round-jp")
        # A jackpot is won in a round the player staked in: the spin's bet comes first.
        await self.post(
            http,
            region,
            "/v1/bets",
            {
                "id": self.new_id("bet"),
                "player_id": player,
                "currency": "EUR",
                "amount_minor": 100,
                "round_id": round_id,
                "game_id": "slots-1",
            },
        )
        status, body = await self.post(
            http,
            region,
            "/v1/jackpot-payouts",
            {"id": self.new_id("jp"), "jackpot_id": JACKPOT_ID, "player_id": player, "round_id": round_id},
        )
        paid = body.get("transaction", {}).get("amount_minor") if status == 201 else None
        self.event(f"jackpot {JACKPOT_ID} hit by {player} via {region}: paid {paid}", status == 201)

    async def bonus_claim(self, http: aiohttp.ClientSession) -> None:
        region = self.cluster.edge_ids[2 % len(self.cluster.edge_ids)]
        for player in self.players:
            async with http.get(f"{self.cluster.url(region)}/v1/players/{player}/bonus-progress", headers=self.gs) as r:
                progress = {b["bonus_id"]: b["wagered_minor"] for b in (await r.json()).get("bonuses", [])}
            if progress.get(BONUS_ID, 0) >= 5_000:
                status, body = await self.post(
                    http,
                    region,
                    "/v1/bonus-claims",
                    {"id": self.new_id("claim"), "player_id": player, "bonus_id": BONUS_ID},
                )
                self.event(
                    f"{player} claimed bonus {BONUS_ID} via {region}: {status} {body.get('code', '')}", status == 201
                )
                return
        self.event("no player had met the bonus wagering yet: claim skipped")

    # --- live view ----------------------------------------------------------------------------

    async def poll_view(self, http: aiohttp.ClientSession) -> None:
        edge_h, metrics_h = self.cluster.headers("edge"), self.cluster.headers("metrics")
        while True:
            try:
                async with http.get(f"{self.cluster.url('ledger')}/v1/jackpots/{JACKPOT_ID}", headers=edge_h) as r:
                    jp = await r.json()
                self.view.update(pool=jp["pool_minor"], epoch=jp["epoch"])
                for e in self.cluster.edge_ids:
                    async with http.get(f"{self.cluster.url(e)}/v1/jackpots/{JACKPOT_ID}", headers=self.gs) as r:
                        self.view["displays"][e] = (await r.json())["display_minor"]
                    async with http.get(f"{self.cluster.url(e)}/metrics", headers=metrics_h) as r:
                        buckets = lag_buckets_by_peer(await r.text())
                    window = lag_p99_since(self.lag_buckets.get(e, {}), buckets)
                    self.lag_buckets[e] = buckets
                    self.view["lag"].setdefault(e, {}).update(window)  # a quiet peer keeps its last figure
            except (TimeoutError, aiohttp.ClientError, KeyError):
                pass
            await asyncio.sleep(1.0)

    def render(self, remaining_s: float) -> Group:
        t = Table(
            title=f"Croupier demo — {remaining_s:4.0f}s left — ledger pool {self.view['pool']} "
            f"(epoch {self.view['epoch']})"
        )
        for col in ("region", "req/s", "p99 ms", "ok", "errors", "jackpot display", "sync lag p99 by peer"):
            t.add_column(col)
        for e, s in self.stats.items():
            lag = ", ".join(f"{p} {v * 1000:.0f}ms" for p, v in sorted(self.view["lag"].get(e, {}).items()))
            t.add_row(
                e,
                f"{s.rate():.0f}",
                f"{s.p99_ms():.1f}",
                str(s.ok),
                str(s.errors),
                str(self.view["displays"].get(e, "-")),
                lag or "-",
            )
        events = Table.grid()
        for line in self.events:
            events.add_row(line)
        return Group(t, events)


def lag_buckets_by_peer(text: str) -> dict[str, list[tuple[float, float]]]:
    """Cumulative (le, count) buckets of edge_sync_lag_seconds per peer, from a /metrics text."""
    buckets: dict[str, list[tuple[float, float]]] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name != "edge_sync_lag_seconds":
            continue
        for s in fam.samples:
            if s.name.endswith("_bucket"):
                buckets.setdefault(s.labels["peer"], []).append((float(s.labels["le"]), s.value))
    return {peer: sorted(rows) for peer, rows in buckets.items()}


def lag_p99_since(
    previous: dict[str, list[tuple[float, float]]], current: dict[str, list[tuple[float, float]]]
) -> dict[str, float]:
    """p99 sync lag per peer over the updates applied between two scrapes."""
    out = {}
    for peer, rows in current.items():
        before = dict(previous.get(peer, []))
        window = [(le, count - before.get(le, 0.0)) for le, count in rows]
        value = histogram_quantile(window, 0.99)
        if value is not None:
            out[peer] = value
    return out


async def converge(info: dict[str, Any], players: list[str]) -> list[Check]:
    """Run the checks; wait (bounded) for displays to converge before judging them."""
    deadline = time.monotonic() + CONVERGE_TIMEOUT_S
    while True:
        checks = await check_cluster(info, [JACKPOT_ID], players)
        if all(c.ok for c in checks) or time.monotonic() > deadline:
            return checks
        await asyncio.sleep(0.5)


async def run_demo(cluster: Cluster, duration_s: float, rng_seed: int, players: int, console: Console) -> bool:
    seed_info = await seed(cluster, players=players)
    info = cluster.info(seed_info)
    cluster.write_info(seed_info)
    demo = Demo(cluster, seed_info, duration_s, rng_seed)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=64)) as http:
        deadline = time.monotonic() + duration_s
        workers = [asyncio.create_task(demo.game_server(http, e, deadline)) for e in cluster.edge_ids for _ in range(4)]
        background = [asyncio.create_task(demo.scenario(http)), asyncio.create_task(demo.poll_view(http))]
        try:
            with Live(demo.render(duration_s), console=console, refresh_per_second=2) as live:
                while time.monotonic() < deadline:
                    await asyncio.sleep(0.5)
                    live.update(demo.render(deadline - time.monotonic()))
            await asyncio.gather(*workers)
        finally:
            for t in [*workers, *background]:
                t.cancel()
            await asyncio.gather(*workers, *background, return_exceptions=True)
        cluster.heal()
    checks = await converge(info, demo.players)
    replays_checked = sum(s.replays_checked for s in demo.stats.values())
    checks.append(
        Check(
            "scripted moments behaved",
            not demo.failures,
            demo.failures[0] if demo.failures else f"{replays_checked} retries replayed identically",
        )
    )
    report = Table(title="Verification")
    report.add_column("check")
    report.add_column("result")
    report.add_column("detail")
    for c in checks:
        report.add_row(c.name, "[green]PASS[/]" if c.ok else "[red]FAIL[/]", c.detail)
    console.print(report)
    total = sum(s.ok for s in demo.stats.values())
    console.print(f"{total} money calls answered in {duration_s:.0f}s across {len(cluster.edge_ids)} regions.")
    return all(c.ok for c in checks)
