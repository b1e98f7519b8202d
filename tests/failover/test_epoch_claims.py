"""Epoch claims at the ledger's trust boundary: a caller's `X-Ledger-Epoch` is a claim, never
evidence. Only edge/replica credentials are heard; a claim fences only when a configured peer
proves it (primary at that epoch); one survey at a time, refutations remembered; an edge never
forwards a game server's header; an operator lifts a fence with a journaled `unfence`."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry

from shared.auth import TokenEntry, hash_token

from core_ledger.app import create_app
from core_ledger.app_keys import SERVICE
from core_ledger.config import LedgerConfig
from core_ledger.standby_tailer import StandbySettings
from core_ledger.store import MemoryStore, SqliteStore, StorageError
from edge.app import create_app as create_edge_app
from harness.cluster import free_port
from tests.support.clock import FakeClock
from tests.support.edges import GS, edge_config
from tests.support.ledger import TOKENS, Api, bet, ledger_config
from tests.support.ledger_cli import CLI
from tests.support.polling import wait_for

EPOCH = "X-Ledger-Epoch"
HUGE = "999999999999999999"
METRICS_TOKEN = "token-of-metrics-0123456789"
QUIET = {"peer_check_interval_s": 600.0}  # no periodic check: only what the test does happens


def with_metrics_token(config: LedgerConfig) -> LedgerConfig:
    return dataclasses.replace(
        config, tokens=(*config.tokens, TokenEntry("metrics-1", "metrics", hash_token(METRICS_TOKEN)))
    )


def url_of(server: Any) -> str:
    return str(server.make_url("")).rstrip("/")


async def call(
    client: Any, token: str | None, method: str, path: str, body: Any = None, epoch: str | None = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if epoch is not None:
        headers[EPOCH] = epoch
    async with client.request(method, path, json=body, headers=headers) as resp:
        if resp.content_type in ("application/json", "application/problem+json"):
            return resp.status, await resp.json()
        return resp.status, await resp.text()


def claims(app: web.Application, outcome: str) -> float:
    registry = app[SERVICE].metrics.epoch_claims_total
    return registry.labels(outcome)._value.get()


async def fence_store(data_dir: Path, epoch: int) -> None:
    """What the old bug left behind: a durable fence nobody proved."""
    store = SqliteStore(data_dir / "ledger.db")
    await store.open()
    try:
        await store.fence(epoch)
    finally:
        await store.close()


async def test_the_reproduction_metrics_token_with_a_huge_epoch_fences_nothing_even_after_a_restart(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    config = with_metrics_token(ledger_config(tmp_path / "l"))
    app = create_app(config, clock=FakeClock())
    client = await aiohttp_client(app)
    api = Api(client)
    await api.player(deposit=1000)
    status, text = await call(client, METRICS_TOKEN, "GET", "/metrics", epoch=HUGE)
    assert status == 200
    assert (await api.post("edge", "/v1/bets", bet("b1", 10)))[0] == 201 and app[SERVICE].fenced_by == 0
    assert claims(app, "role_not_allowed") == 1 and "ledger_epoch_claims_total" in text
    await client.close()

    again = await aiohttp_client(create_app(config, clock=FakeClock()))  # restart on the same data
    assert (await Api(again).post("edge", "/v1/bets", bet("b2", 10)))[0] == 201
    status, ready = await Api(again).get("", "/readyz")
    assert status == 200 and ready["fenced"] is False


async def test_game_server_cashier_and_admin_credentials_sending_the_header_change_nothing(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    app = create_app(ledger_config(tmp_path / "l"), clock=FakeClock())
    client = await aiohttp_client(app)
    await Api(client).player(deposit=1000)
    tried = [
        ("cashier", "POST", "/v1/deposits", {"id": "d2", "player_id": "p1", "currency": "EUR", "amount_minor": 5}),
        ("admin_write", "POST", "/admin/v1/players", {"player_id": "p2", "currencies": ["EUR"]}),
        ("admin_read", "GET", "/admin/v1/replication", None),
        ("game_server", "GET", "/v1/players/p1/balances", None),  # no ledger route admits it: 403 first
    ]
    answers = [
        (await call(client, TOKENS[role], method, path, body, epoch=HUGE))[0] for role, method, path, body in tried
    ]
    assert answers == [201, 201, 200, 403]
    assert app[SERVICE].fenced_by == 0 and claims(app, "role_not_allowed") == 3
    assert (await Api(client).post("edge", "/v1/bets", bet("b1", 10)))[0] == 201
    status, problem = await call(client, TOKENS["cashier"], "GET", "/v1/players/p1/balances", epoch="12x")
    assert status == 400 and problem["code"] == "validation_error" and problem["field"] == EPOCH


async def test_an_edge_claim_no_peer_can_prove_never_fences_durably(aiohttp_client: Any, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    for name, peers, outcome in (("alone", (), "unverifiable"), ("dead-peer", (dead,), "unverifiable")):
        config = ledger_config(
            tmp_path / name, peers=peers, peer_check_timeout_s=0.5, epoch_claim_recheck_s=0.01, **QUIET
        )
        app = create_app(config, clock=FakeClock())
        client = await aiohttp_client(app)
        await Api(client).player(deposit=1000)
        await asyncio.sleep(0.02)  # past the start survey's memory: the claim asks again
        started = time.monotonic()
        status, _ = await call(client, TOKENS["edge"], "POST", "/v1/bets", bet("b1", 10), epoch=HUGE)
        assert status == 201 and time.monotonic() - started < 2.0  # bounded by the peer timeout
        assert app[SERVICE].fenced_by == 0 and claims(app, outcome) == 1, name
        await client.close()
        again = await aiohttp_client(create_app(config, clock=FakeClock()))
        assert (await Api(again).post("edge", "/v1/bets", bet("b2", 10)))[0] == 201, name
        await again.close()


async def test_a_flood_of_claims_costs_one_survey_and_stops_no_other_write(aiohttp_client: Any, tmp_path: Path) -> None:
    asked = []

    async def readyz(request: web.Request) -> web.Response:  # a peer standby of epoch 1: refutes every claim
        asked.append(time.monotonic())
        await asyncio.sleep(0.2)
        body = {"role": "standby", "epoch": 1, "fenced": False, "head_sequence": 0, "head_hash": "0" * 64}
        return web.json_response(body, headers={EPOCH: "1"})

    peer_app = web.Application()
    peer_app.router.add_get("/readyz", readyz)
    peer = TestServer(peer_app, host="127.0.0.1")
    await peer.start_server()
    try:
        app = create_app(
            ledger_config(tmp_path / "l", peers=(url_of(peer),), epoch_claim_recheck_s=1.0, **QUIET), clock=FakeClock()
        )
        client = await aiohttp_client(app)
        await Api(client).player(deposit=10_000)
        assert len(asked) == 1  # the start survey
        await asyncio.sleep(1.05)  # its memory expired
        flood = [
            call(client, TOKENS["edge"], "POST", "/v1/bets", bet(f"f{i}", 1), epoch=str(10 + i)) for i in range(20)
        ]
        plain = [Api(client).post("edge", "/v1/bets", bet(f"p{i}", 1)) for i in range(5)]
        answers = await asyncio.gather(*flood, *plain)
        assert [s for s, _ in answers] == [201] * 25
        assert len(asked) == 2  # twenty claims shared one survey
        for i in range(20):  # refuted from memory now: no further survey
            assert (await call(client, TOKENS["edge"], "GET", "/v1/players/p1/balances", epoch=str(100 + i)))[0] == 200
        assert len(asked) == 2 and claims(app, "refuted") == 40 and app[SERVICE].fenced_by == 0
    finally:
        await peer.close()


async def promoted_peer(aiohttp_server: Any, aiohttp_client: Any, root: Path, primary: Any, port: int) -> Api:
    """A standby of `primary` served on `port`, promoted (epoch 2)."""
    settings = StandbySettings(url_of(primary), TOKENS["replica"], poll_interval_s=0.05)
    standby = await aiohttp_server(create_app(ledger_config(root), clock=FakeClock(), standby=settings), port=port)
    api = Api(await aiohttp_client(standby))
    assert (await api.post("admin_write", "/admin/v1/promote"))[1]["epoch"] == 2
    return api


async def test_an_edge_claim_a_promoted_peer_proves_fences_for_good_and_unfencing_it_needs_force(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    port = free_port()
    config = ledger_config(
        tmp_path / "old",
        peers=(f"http://127.0.0.1:{port}",),
        peer_check_timeout_s=1.0,
        epoch_claim_recheck_s=0.01,
        **QUIET,
    )
    old_app = create_app(config, clock=FakeClock())
    old_server = await aiohttp_server(old_app)
    old = Api(await aiohttp_client(old_server))
    await old.player(deposit=1000)
    assert (await old.post("edge", "/v1/bets", bet("b1", 10)))[0] == 201
    await promoted_peer(aiohttp_server, aiohttp_client, tmp_path / "new", old_server, port)

    status, problem = await call(old.client, TOKENS["edge"], "POST", "/v1/bets", bet("b2", 10), epoch="2")
    assert status == 503 and problem["code"] == "not_primary"
    assert old_app[SERVICE].fenced_by == 2 and claims(old_app, "proven") == 1
    status, problem = await old.post("admin_write", "/admin/v1/unfence", {"reason": "looks wrong to me"})
    assert status == 409 and problem["code"] == "peer_is_primary"
    assert [(p["role"], p["epoch"]) for p in problem["peers"]] == [("primary", 2)]
    assert old_app[SERVICE].fenced_by == 2  # refused: still fenced

    status, body = await old.post(
        "admin_write", "/admin/v1/unfence", {"reason": "drill: two primaries on purpose", "force": True}
    )
    assert status == 201, body
    tx = body["transaction"]
    assert tx["type"] == "unfence" and tx["force"] is True and tx["fenced_by_epoch"] == 2
    assert tx["peers"][0]["role"] == "primary" and tx["peers"][0]["epoch"] == 2
    assert old_app[SERVICE].fenced_by == 0
    assert old_app[SERVICE].metrics.unfences_total.labels("true")._value.get() == 1


async def test_a_fence_nobody_proves_is_lifted_by_a_journaled_unfence_that_standby_and_rebuild_replay(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    port = free_port()
    config = ledger_config(tmp_path / "a", peers=(f"http://127.0.0.1:{port}",), **QUIET)
    await fence_store(tmp_path / "a", int(HUGE))  # left by the old bug
    primary_app = create_app(config, clock=FakeClock())
    primary_server = await aiohttp_server(primary_app)
    primary = Api(await aiohttp_client(primary_server))
    assert (await primary.post("admin_write", "/admin/v1/players", {"player_id": "p1", "currencies": ["EUR"]}))[
        0
    ] == 503
    status, problem = await primary.post("admin_write", "/admin/v1/unfence", {"reason": ""})
    assert status == 400 and problem["code"] == "validation_error"
    assert (await primary.post("admin_read", "/admin/v1/unfence", {"reason": "x"}))[0] == 403
    # Its peer cannot be read yet: it may be the primary that fenced this copy, cut off from it.
    status, problem = await primary.post("admin_write", "/admin/v1/unfence", {"reason": "the peer is down"})
    assert status == 409 and problem["code"] == "peer_unreadable", problem
    assert [p["readable"] for p in problem["peers"]] == [False] and primary_app[SERVICE].fenced
    assert primary_app[SERVICE].metrics.peers_unreadable._value.get() == 1

    settings = StandbySettings(url_of(primary_server), TOKENS["replica"], poll_interval_s=0.05)
    standby_app = create_app(ledger_config(tmp_path / "b"), clock=FakeClock(), standby=settings)
    await aiohttp_server(standby_app, port=port)  # the configured peer: a standby, epoch 1 (proves nothing)

    status, body = await primary.post(
        "admin_write", "/admin/v1/unfence", {"reason": "fenced by a forged X-Ledger-Epoch (issue 8)"}
    )
    assert status == 201, body
    tx = body["transaction"]
    assert tx["type"] == "unfence" and tx["force"] is False and tx["fenced_by_epoch"] == int(HUGE)
    assert tx["reason"] == "fenced by a forged X-Ledger-Epoch (issue 8)"
    assert [(p["role"], p["epoch"], p["fenced"]) for p in tx["peers"]] == [("standby", 1, False)]
    assert primary_app[SERVICE].metrics.peers_unreadable._value.get() == 0
    status, problem = await primary.post("admin_write", "/admin/v1/unfence", {"reason": "again"})
    assert status == 409 and problem["code"] == "not_fenced"

    await primary.player(deposit=1000)
    assert (await primary.post("edge", "/v1/bets", bet("b1", 10)))[0] == 201
    await wait_for(lambda: standby_app[SERVICE].head == primary_app[SERVICE].head, 10.0)
    _, trace = await primary.get("admin_read", "/admin/v1/journal/export")
    entries = [orjson.loads(line) for line in trace.splitlines()]
    unfences = [e for e in entries if e["transaction"]["type"] == "unfence"]
    assert len(unfences) == 1 and unfences[0]["sequence"] == 1
    assert unfences[0]["transaction"]["principal"] == "admin-write-1"
    await primary.client.close()

    again = await aiohttp_client(create_app(config, clock=FakeClock()))  # restart: the fence stays lifted
    assert (await Api(again).post("edge", "/v1/bets", bet("b2", 10)))[0] == 201
    await again.close()
    db = str(tmp_path / "a" / "ledger.db")
    for command in ("verify", "rebuild"):
        process = await asyncio.create_subprocess_exec(
            *CLI, command, db, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, out + err
        assert orjson.loads(out)["ok" if command == "verify" else "rebuilt"] is True


async def test_an_edge_never_forwards_a_game_servers_epoch_header(tmp_path: Path) -> None:
    ledger_app = create_app(ledger_config(tmp_path / "l"), clock=FakeClock(), registry=CollectorRegistry())
    ledger = TestServer(ledger_app, host="127.0.0.1")
    await ledger.start_server()
    port = free_port()
    edge = TestServer(
        create_edge_app(edge_config(tmp_path, "eu", 1, url_of(ledger), port, {}, ledger_token=TOKENS["edge"])),
        host="127.0.0.1",
        port=port,
    )
    try:
        async with aiohttp.ClientSession() as http:
            await Api(http).call(
                "admin_write", "POST", url_of(ledger) + "/admin/v1/players", {"player_id": "p1", "currencies": ["EUR"]}
            )
            await Api(http).call(
                "cashier",
                "POST",
                url_of(ledger) + "/v1/deposits",
                {"id": "d1", "player_id": "p1", "currency": "EUR", "amount_minor": 1000},
            )
            await edge.start_server()
            for i in range(3):
                async with http.post(
                    f"http://127.0.0.1:{port}/v1/bets",
                    json=bet(f"b{i}", 10),
                    headers={"Authorization": f"Bearer {GS}", EPOCH: HUGE},
                ) as resp:
                    assert resp.status == 201, await resp.text()
        assert ledger_app[SERVICE].fenced_by == 0
        assert sum(claims(ledger_app, o) for o in ("proven", "refuted", "unverifiable", "role_not_allowed")) == 0
    finally:
        await edge.close()
        await ledger.close()


class FenceFailsOnce(MemoryStore):
    """A store whose first fence write fails, as a full disk would."""

    failed = False

    async def fence(self, epoch: int) -> None:
        if not self.failed:
            self.failed = True
            raise StorageError("disk full")
        await super().fence(epoch)


async def test_a_fence_the_store_failed_to_record_holds_in_memory_is_counted_and_stored_by_the_next_check(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    async def readyz(request: web.Request) -> web.Response:  # a promoted peer: primary at epoch 2
        body = {"role": "primary", "epoch": 2, "fenced": False, "head_sequence": 9, "head_hash": "ab" * 32}
        return web.json_response(body, headers={EPOCH: "2"})

    peer_app = web.Application()
    peer_app.router.add_get("/readyz", readyz)
    peer = TestServer(peer_app, host="127.0.0.1")
    await peer.start_server()
    store = FenceFailsOnce()
    try:
        app = create_app(
            ledger_config(tmp_path / "l", peers=(url_of(peer),), peer_check_interval_s=0.05),
            store=store,
            clock=FakeClock(),
        )
        client = await aiohttp_client(app)
        assert app[SERVICE].fenced_by == 2  # the start check: in memory at once, though the store failed
        assert app[SERVICE].metrics.peer_check_failures_total._value.get() == 1
        status, problem = await Api(client).post(
            "admin_write", "/admin/v1/players", {"player_id": "p1", "currencies": ["EUR"]}
        )
        assert status == 503 and problem["code"] == "not_primary"
        for _ in range(100):  # the periodic check (every 50 ms) stores it
            if await store.fenced_by() == 2:
                break
            await asyncio.sleep(0.05)
        assert await store.fenced_by() == 2
    finally:
        await peer.close()
