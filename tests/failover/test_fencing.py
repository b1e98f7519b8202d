"""Fencing (in process): a primary that learns of a higher epoch (a caller's `X-Ledger-Epoch`
claim that a peer proves, or the peer check at start) refuses writes at once and for good;
`compare` picks the promoted copy and reports the old primary's extra tail."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core_ledger.app import create_app
from core_ledger.app_keys import SERVICE
from core_ledger.compare import compare_stores
from core_ledger.standby_tailer import StandbySettings
from core_ledger.store import SqliteStore
from harness.cluster import free_port
from tests.support.clock import FakeClock
from tests.support.ledger import TOKENS, Api, bet, ledger_config, standby_of
from tests.support.polling import wait_for

EPOCH = "X-Ledger-Epoch"


async def raw_post(client: Any, role: str, path: str, body: Any, epoch: int | None = None) -> tuple[int, Any, Any]:
    headers = {"Authorization": f"Bearer {TOKENS[role]}"}
    if epoch is not None:
        headers[EPOCH] = str(epoch)
    async with client.post(path, json=body, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers


async def test_a_higher_epoch_a_peer_proves_fences_the_primary_for_good(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    port = free_port()  # the peer that will prove epoch 2 (a standby of this primary, promoted)
    config = ledger_config(
        tmp_path / "l", peers=(f"http://127.0.0.1:{port}",), peer_check_interval_s=600.0, epoch_claim_recheck_s=0.01
    )
    server = await aiohttp_server(create_app(config, clock=FakeClock()))
    client = await aiohttp_client(server)
    api = Api(client)
    await api.player(deposit=1000)
    status, _, headers = await raw_post(client, "edge", "/v1/bets", bet("b1", 10), epoch=1)
    assert status == 201 and headers[EPOCH] == "1"  # every answer announces the ledger's epoch
    async with client.get("/readyz", headers={EPOCH: "7"}) as resp:  # anonymous: cannot fence
        assert resp.status == 200 and (await resp.json())["fenced"] is False
    settings = StandbySettings(str(server.make_url("")).rstrip("/"), TOKENS["replica"], poll_interval_s=0.05)
    promoted = await aiohttp_server(
        create_app(ledger_config(tmp_path / "new"), clock=FakeClock(), standby=settings), port=port
    )
    assert (await Api(await aiohttp_client(promoted)).post("admin_write", "/admin/v1/promote"))[1]["epoch"] == 2

    status, problem, headers = await raw_post(client, "edge", "/v1/bets", bet("b2", 10), epoch=2)
    assert status == 503 and problem["code"] == "not_primary" and "Retry-After" in headers
    status, problem, _ = await raw_post(client, "edge", "/v1/bets", bet("b3", 10))  # no header: still fenced
    assert status == 503 and problem["code"] == "not_primary"
    status, problem, _ = await raw_post(client, "edge", "/v1/bets", bet("b1", 10))  # not even a replay
    assert status == 503 and problem["code"] == "not_primary"
    status, ready = await api.get("", "/readyz")
    assert status == 503 and ready["status"] == "fenced" and ready["epoch"] == 1
    _, repl = await api.get("admin_read", "/admin/v1/replication")
    assert repl["fenced"] is True and repl["fenced_by_epoch"] == 2 and repl["head"]["sequence"] == 3
    await client.close()
    await promoted.close()

    # Restart without peers (nothing can prove anything now): the stored fence holds on its own.
    again = await aiohttp_client(create_app(ledger_config(tmp_path / "l"), clock=FakeClock()))
    status, problem, _ = await raw_post(again, "edge", "/v1/bets", bet("b4", 10))
    assert status == 503 and problem["code"] == "not_primary"
    assert (await Api(again).get("", "/readyz"))[0] == 503


async def test_a_peer_of_a_higher_epoch_fences_a_primary_at_start(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    settings = StandbySettings("http://127.0.0.1:9", TOKENS["replica"], poll_interval_s=10)
    promoted_app = create_app(ledger_config(tmp_path / "new"), clock=FakeClock(), standby=settings)
    promoted = await aiohttp_server(promoted_app)
    assert (await Api(await aiohttp_client(promoted)).post("admin_write", "/admin/v1/promote"))[1]["epoch"] == 2
    old = create_app(
        ledger_config(tmp_path / "old", peers=(str(promoted.make_url("")).rstrip("/"),)), clock=FakeClock()
    )
    client = await aiohttp_client(old)
    assert old[SERVICE].fenced_by == 2
    status, problem, _ = await raw_post(
        client, "admin_write", "/admin/v1/players", {"player_id": "p1", "currencies": ["EUR"]}
    )
    assert status == 503 and problem["code"] == "not_primary"


async def test_compare_picks_the_promoted_copy_and_reports_the_old_primarys_tail(
    aiohttp_server: Any, aiohttp_client: Any, tmp_path: Path
) -> None:
    clock = FakeClock()
    primary_app = create_app(ledger_config(tmp_path / "a"), clock=clock)
    primary_server = await aiohttp_server(primary_app)
    primary = Api(await aiohttp_client(primary_server))
    standby_app = standby_of(primary_server, tmp_path / "b", clock)
    standby = Api(await aiohttp_client(standby_app))
    await primary.player(deposit=1000)
    await wait_for(lambda: standby_app[SERVICE].head == primary_app[SERVICE].head)
    shared_head = primary_app[SERVICE].head.sequence
    await standby.post("admin_write", "/admin/v1/promote")
    assert (await standby.post("edge", "/v1/bets", bet("new-1", 10)))[0] == 201
    for i in range(3):  # the old primary, not told yet: a tail nobody else has
        assert (await primary.post("edge", "/v1/bets", bet(f"old-{i}", 10)))[0] == 201
    await primary.client.close()
    await standby.client.close()

    stores = SqliteStore(tmp_path / "a" / "ledger.db"), SqliteStore(tmp_path / "b" / "ledger.db")
    for store in stores:
        await store.open()
    try:
        report = await compare_stores(*stores, names=("old", "promoted"))
    finally:
        for store in stores:
            await store.close()
    assert report["winner"] == "promoted" and report["divergence_sequence"] == shared_head + 1
    assert report["loser_is_prefix"] is False and report["loser_extra_entries"] == 3
    assert report["copies"]["promoted"]["epoch"] == 2 and report["copies"]["old"]["verifies"]
