"""Multi-process: a ledger with one front process (`fronts = 1`), over TLS with client certificates,
and an edge in front of it. The front serves the money routes on the ledger's address and relays
every other route to the ledger process; it is restarted when it dies; stopping the ledger stops it."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from harness.cluster import Cluster, seed
from tests.support.polling import eventually

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

WAIT_S = 20.0


def fronts_of(pid: int) -> list[int]:
    """The pids of `pid`'s children that are ledger fronts."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"front" in argv and b"ledger" in argv:
                out.append(int(child))
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("fronts"), edge_ids=("eu",), tls=True, ledger_fronts=1)
    fronts: list[int] = []
    try:
        await c.start()
        await seed(c, players=3)
        proc = c.services["ledger"].proc
        assert proc is not None
        fronts = fronts_of(proc.pid)
        yield c
    finally:
        await c.stop()
    # The ledger stopped its fronts (none left behind), the first one and any started since.
    assert fronts
    await eventually(lambda: none_alive(fronts), 5, what=f"fronts {fronts} stopped with the ledger")


async def none_alive(pids: list[int]) -> bool:
    return not any(alive(p) for p in pids)


def bet(n: str, player: str = "p001", amount: int = 100) -> dict[str, Any]:
    return {
        "id": f"front-bet-{n}",
        "player_id": player,
        "currency": "EUR",
        "amount_minor": amount,
        "round_id": f"front-round-{n}",
        "game_id": "slots-1",
    }


async def metric(http: aiohttp.ClientSession, cluster: Cluster, series: str) -> float:
    async with http.get(cluster.url("ledger") + "/metrics", headers=cluster.headers("metrics")) as r:
        assert r.status == 200, await r.text()
        return sum(float(line.rsplit(" ", 1)[1]) for line in (await r.text()).splitlines() if line.startswith(series))


async def test_money_routes_are_served_by_the_front_and_other_routes_relayed(cluster: Cluster) -> None:
    ledger = cluster.url("ledger")
    async with cluster.http_session(timeout=aiohttp.ClientTimeout(total=10)) as http:
        # Through the edge (its batch path) and straight to the ledger's address.
        async with http.post(
            cluster.url("eu") + "/v1/bets", json=bet("e1"), headers=cluster.headers("game_server")
        ) as r:
            assert r.status == 201, await r.text()
        rid = "front-request-" + os.urandom(4).hex()
        headers = {**cluster.headers("edge"), "X-Request-Id": rid}
        async with http.post(ledger + "/v1/bets", json=bet("d1"), headers=headers) as r:
            assert r.status == 201, await r.text()
            assert r.headers["X-Request-Id"] == rid
            assert int(r.headers["X-Ledger-Epoch"]) >= 1
            sequence = (await r.json())["transaction"]["sequence"]
        # A read is relayed to the ledger process: it sees the bet just confirmed.
        async with http.get(ledger + "/v1/transactions/front-bet-d1", headers=cluster.headers("edge")) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["sequence"] == sequence
            assert "X-Ledger-Epoch" in r.headers
        # The query string reaches the ledger process as sent.
        async with http.get(ledger + "/v1/players/p001/rounds?status=bogus", headers=cluster.headers("edge")) as r:
            assert r.status == 400 and (await r.json())["field"] == "status"
        async with http.get(ledger + "/readyz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ready"
        async with http.get(ledger + "/v1/nothing-here", headers=cluster.headers("edge")) as r:
            assert r.status == 404 and (await r.json())["code"] == "not_found"
        # A bad credential: refused by the front on a money route, by the ledger on a relayed one.
        bad = {"Authorization": "Bearer not-a-token"}
        async with http.get(ledger + "/readyz") as r:
            epoch = (await r.json())["epoch"]
        async with http.post(ledger + "/v1/bets", json=bet("x1"), headers=bad) as r:
            assert r.status == 401 and (await r.json())["code"] == "unauthenticated"
            assert r.headers["X-Ledger-Epoch"] == str(epoch), "the ledger's epoch, pushed to the front"
        async with http.get(ledger + "/v1/players/p001/balances", headers=bad) as r:
            assert r.status == 401 and (await r.json())["code"] == "unauthenticated"
        # Bad input: a clear error from the front, nothing journaled.
        async with http.post(ledger + "/v1/bets", json={**bet("x2"), "amount_minor": -5}, headers=headers) as r:
            assert r.status == 400 and (await r.json())["code"] == "validation_error"
        async with http.get(ledger + "/v1/transactions/front-bet-x2", headers=cluster.headers("edge")) as r:
            assert r.status == 404, "nothing journaled"

        # One /metrics (the ledger process's): the front's requests counted in it, the front up.
        async def counted() -> bool:
            return (
                await metric(http, cluster, 'http_request_duration_seconds_count{method="POST",route="/v1/bets"') >= 2
            )

        await eventually(counted, WAIT_S, what="the front's bets counted in the ledger's http_request_duration_seconds")
        assert await metric(http, cluster, "ledger_fronts_up") == 1
    # The request's lines, one request id across both processes.
    log = (cluster.root / "ledger.log").read_text()
    lines = [line for line in log.splitlines() if rid in line]
    assert any('"ledger_action"' in line for line in lines) and any('"http_request"' in line for line in lines)


async def test_a_killed_front_is_started_again_and_a_retry_by_id_is_answered_once(cluster: Cluster) -> None:
    proc = cluster.services["ledger"].proc
    assert proc is not None
    [front] = fronts_of(proc.pid)
    ledger = cluster.url("ledger")
    async with cluster.http_session(timeout=aiohttp.ClientTimeout(total=10)) as http:
        failures_before = await metric(http, cluster, 'ledger_task_failures_total{task="fronts"}')
        async with http.post(ledger + "/v1/bets", json=bet("k1", "p002"), headers=cluster.headers("edge")) as r:
            assert r.status == 201, await r.text()
            first = await r.json()
        os.kill(front, signal.SIGKILL)

        async def serving_again() -> bool:
            try:
                async with http.post(ledger + "/v1/bets", json=bet("k1", "p002"), headers=cluster.headers("edge")) as r:
                    # A replay: 200 with the first answer's transaction.
                    return r.status == 200 and (await r.json())["transaction"] == first["transaction"]
            except aiohttp.ClientError:
                return False

        await eventually(serving_again, WAIT_S, what="a new front answers the retried bet with its first answer")
        assert fronts_of(proc.pid) and front not in fronts_of(proc.pid)
        assert await metric(http, cluster, 'ledger_task_failures_total{task="fronts"}') == failures_before + 1
        assert await metric(http, cluster, "ledger_fronts_up") == 1
        async with http.get(ledger + "/v1/players/p002/balances", headers=cluster.headers("edge")) as r:
            [eur] = (await r.json())["balances"]
    assert eur["balance_minor"] == 1_000_000 - 100, "charged once"
    assert '"ledger_front_ended"' in (cluster.root / "ledger.log").read_text()


async def test_fronts_of_a_killed_ledger_stop_and_free_its_address_for_the_next_start(cluster: Cluster) -> None:
    proc = cluster.services["ledger"].proc
    assert proc is not None
    fronts = fronts_of(proc.pid)
    assert fronts
    await cluster.kill("ledger")  # kill -9: no graceful stop of its fronts
    await eventually(lambda: none_alive(fronts), 10, what="the orphaned fronts stopped at their channel's end")
    await cluster.start_service("ledger")  # binds the address again, and the private socket left behind
    async with (
        cluster.http_session(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.post(
            cluster.url("ledger") + "/v1/bets", json=bet("after-kill", "p003"), headers=cluster.headers("edge")
        ) as r,
    ):
        assert r.status == 201, await r.text()
    new_proc = cluster.services["ledger"].proc
    assert new_proc is not None and len(fronts_of(new_proc.pid)) == 1
