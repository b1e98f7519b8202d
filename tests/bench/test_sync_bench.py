"""The sync benchmarks measure what they claim: the admission micro-benchmark admits and applies
real peer updates (and checks both replicas agree), and the convergence poller of sync_lag.py,
in its own process, times from `go` until every edge shows the same pool and sessions."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import aiohttp
import pytest
from aiohttp import web

import admission as admission_bench
import sync_lag
from harness.launcher import free_port


def test_the_admission_benchmark_admits_every_update_and_both_replicas_agree():
    figures = admission_bench.run("session", updates=30, docs=3, history=3)
    assert figures["admit_us"] > 0 and figures["apply_us"] > 0
    assert figures["edge_us_per_update"] >= figures["admit_us"]


def test_the_lag_quantile_reads_the_increase_of_buckets_between_scrapes():
    before = {0.01: 5.0, 0.05: 5.0, float("inf"): 5.0}
    after = {0.01: 95.0, 0.05: 105.0, float("inf"): 105.0}  # 90 below 10 ms, 10 between 10 and 50
    assert sync_lag.quantile(0.5, before, after) == pytest.approx(0.01 * 50 / 90)
    assert 0.01 < (sync_lag.quantile(0.99, before, after) or 0) <= 0.05


class FakeEdges:
    """A ledger and two edges on one loopback server; edge `b` shows player 0's session late."""

    def __init__(self) -> None:
        self.converge_at = 0.0  # (monotonic) until then edge b shows an older state

    def app(self) -> web.Application:
        async def jackpot(request: web.Request) -> web.Response:
            return web.json_response({"pool_minor": 100, "display_minor": 100})

        async def session(request: web.Request) -> web.Response:
            late = request.match_info["edge"] == "b" and time.monotonic() < self.converge_at
            state = {"i": 0 if late else 1}
            return web.json_response({"games": {"g0": {"state": state, "edge": "a"}}})

        app = web.Application()
        app.router.add_get("/{edge}/v1/jackpots/{id}", jackpot)
        app.router.add_get("/{edge}/v1/players/{player}/session", session)
        return app


async def test_the_convergence_poller_runs_in_its_own_process_and_times_from_go():
    fake = FakeEdges()
    runner = web.AppRunner(fake.app())
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    job = {
        "urls": {"ledger": f"{base}/ledger", "a": f"{base}/a", "b": f"{base}/b"},
        "headers": {"edge": {}, "game_server": {}},
        "edge_ids": ["a", "b"],
        "sessions_of": 1,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, sync_lag.__file__, "--poll", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(job).encode() + b"\n")
        assert (await asyncio.wait_for(proc.stdout.readline(), 20)).strip() == b"ready"
        fake.converge_at = time.monotonic() + 0.6
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        result = json.loads(await asyncio.wait_for(proc.stdout.readline(), 20))
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
        await runner.cleanup()
    assert 0.5 <= result["converge_s"] < 5.0
    assert 0 < result["poll_s"] <= result["converge_s"]


async def test_a_poll_reads_every_edge_at_once_and_keeps_each_edges_players_in_order():
    async def session(request: web.Request) -> web.Response:
        edge, player = request.match_info["edge"], request.match_info["player"]
        await asyncio.sleep(0.001 * (hash(player) % 5))  # answers arrive out of order
        return web.json_response({"games": {"g1": {"state": f"{edge}-{player}", "edge": edge}}})

    app = web.Application()
    app.router.add_get("/{edge}/v1/players/{player}/session", session)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    at = sync_lag.Endpoints({e: f"{base}/{e}" for e in "abc"}, {"game_server": {}}, list("abc"))
    try:
        async with aiohttp.ClientSession() as http:
            shown = await sync_lag.sessions_shown(at, http, 40)
    finally:
        await runner.cleanup()
    assert shown == {e: [{"g1": (f"{e}-bench-p{p}", e)} for p in range(40)] for e in "abc"}


async def test_the_in_process_driver_saves_states_the_convergence_poll_reads(aiohttp_server, tmp_path):
    """The driver saved as game server "bench" while the poll reads sessions as the cluster's
    game server: once saved states were kept by game server, the poll saw no game on any edge,
    and convergence was "reached" at once whatever the edges held."""
    import edge_driver
    from edge.app import create_app
    from tests.support.edges import GS, edge_config

    port = free_port()
    app = create_app(edge_config(tmp_path, "eu", 1, "http://127.0.0.1:9", port, {}))
    server = await aiohttp_server(app, port=port)
    plan = {"rate": 200.0, "players": 2, "phase": "run", "start_at": time.time(), "seconds": 0.05}
    assert (await edge_driver.run_phase(app, plan, 0, 1))["ok"] == 10
    async with (
        aiohttp.ClientSession(headers={"Authorization": f"Bearer {GS}"}) as http,
        http.get(str(server.make_url("/v1/players/bench-p0/session"))) as r,
    ):
        games = (await r.json())["games"]
    assert games and all(g["state"]["run"] == "run" for g in games.values()), games
