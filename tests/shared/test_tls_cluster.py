"""Multi-process: a ledger, its standby and two edges over TLS with certificates made for the run
(`Cluster(tls=True)`), then credentials rotated without restarting any process."""

from __future__ import annotations

import signal
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from shared.auth import hash_token, new_token

from harness.cluster import STANDBY, Cluster, seed
from tests.support.polling import eventually

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

WAIT_S = 15.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def cluster(tmp_path_factory) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("tls-cluster"), edge_ids=("eu", "us"), standby=True, tls=True, log_level="info")
    try:
        await c.start()
        await seed(c, players=2)
        yield c
    finally:
        await c.stop()


def bet(n: str, player: str = "p001") -> dict[str, Any]:
    return {
        "id": f"tls-bet-{n}",
        "player_id": player,
        "currency": "EUR",
        "amount_minor": 100,
        "round_id": f"tls-round-{n}",
        "game_id": "slots-1",
    }


async def test_every_link_runs_over_tls_bet_sync_and_standby(cluster: Cluster) -> None:
    assert all(cluster.url(name).startswith("https://") for name in cluster.services)
    async with cluster.http_session(timeout=aiohttp.ClientTimeout(total=10)) as http:
        # A bet through an edge: game server -> edge (https) -> ledger (https, client certificate).
        game_server = cluster.headers("game_server")
        async with http.post(cluster.url("eu") + "/v1/bets", json=bet("1"), headers=game_server) as r:
            assert r.status == 201, await r.text()
            sequence = (await r.json())["transaction"]["sequence"]
        # Edge-to-edge sync over wss://: a game state saved in eu shows in us.
        async with http.put(
            cluster.url("eu") + "/v1/players/p001/session/slots-1",
            json={"state": {"reels": 5}},
            headers=cluster.headers("game_server"),
        ) as r:
            assert r.status == 200, await r.text()

        async def synced() -> bool:
            async with http.get(
                cluster.url("us") + "/v1/players/p001/session", headers=cluster.headers("game_server")
            ) as r:
                return r.status == 200 and "reels" in str(await r.json())

        await eventually(synced, WAIT_S, what="eu's game state synced to us over TLS")

        # The standby tails the primary over https with its client certificate.
        async def tailing() -> bool:
            async with http.get(cluster.url(STANDBY) + "/readyz") as r:
                body = await r.json()
            return body.get("tailer") == "tailing" and body["head_sequence"] >= sequence

        await eventually(tailing, WAIT_S, what="the standby applied the bet")
    # Peer ledger checks over TLS: the standby, started after the primary, read it at start-up
    # (verifying its certificate, presenting its own) and every check since.
    standby_log = (cluster.root / f"{STANDBY}.log").read_text()
    assert '"ledger_started"' in standby_log and "peer_ledger_unreadable" not in standby_log


async def test_a_client_without_the_ca_or_without_a_certificate_is_refused(cluster: Cluster) -> None:
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as http:  # the system CA store only
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await http.get(cluster.url("eu") + "/healthz")
    # Trusts the CA but presents no client certificate: the ledger requires one.
    ca_only = ssl.create_default_context(cafile=cluster.tls_info()["ca_file"])
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(ssl=ca_only)) as http:
        async with http.get(cluster.url("eu") + "/healthz") as r:  # edges do not require client certificates
            assert r.status == 200
        with pytest.raises(aiohttp.ClientError):
            async with http.get(cluster.url("ledger") + "/healthz") as r:
                await r.read()
    # Plain HTTP to a TLS port is not served.
    async with aiohttp.ClientSession(timeout=timeout) as http:
        with pytest.raises(aiohttp.ClientError):
            async with http.get(cluster.url("eu").replace("https://", "http://") + "/healthz") as r:
                await r.read()


def replace_in(path: Any, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text.replace(old, new))
    tmp.replace(path)


async def metric(http: aiohttp.ClientSession, cluster: Cluster, name: str, series: str) -> float | None:
    async with http.get(cluster.url(name) + "/metrics", headers=cluster.headers("metrics")) as r:
        for line in (await r.text()).splitlines():
            if line.startswith(series + " "):
                return float(line.split()[1])
    return None


async def test_a_game_server_token_is_rotated_on_sighup_and_a_bad_file_keeps_the_old_tokens(cluster: Cluster) -> None:
    config = cluster.services["eu"].config_path
    old, new = cluster.tokens["game_server"], new_token()
    old_headers, new_headers = cluster.headers("game_server"), {"Authorization": f"Bearer {new}"}
    async with cluster.http_session(timeout=aiohttp.ClientTimeout(total=10)) as http:

        async def status(headers: dict[str, str]) -> int:
            async with http.get(cluster.url("eu") + "/v1/jackpots", headers=headers) as r:
                return r.status

        assert (await status(old_headers), await status(new_headers)) == (200, 401)
        replace_in(config, hash_token(old), hash_token(new))
        cluster.signal("eu", signal.SIGHUP)

        async def rotated() -> bool:
            return (await status(old_headers), await status(new_headers)) == (401, 200)

        await eventually(rotated, WAIT_S, what="the new game_server token accepted and the old one refused")
        assert cluster.services["eu"].running  # no restart

        # A broken file: the reload fails, the tokens in use stay, the failure is visible.
        good = config.read_text()
        config.write_text(good + "\n[[tokens]]\nname = 'x'\nrole = 'nope'\n")
        cluster.signal("eu", signal.SIGHUP)

        async def failing() -> bool:
            return await metric(http, cluster, "eu", "credential_reload_failing") == 1.0

        await eventually(failing, WAIT_S, what="credential_reload_failing set after a bad file")
        assert await status(new_headers) == 200
        assert await metric(http, cluster, "eu", 'credential_reloads_total{result="error"}') == 1.0
        config.write_text(good)
        cluster.signal("eu", signal.SIGHUP)

        async def healed() -> bool:
            return await metric(http, cluster, "eu", "credential_reload_failing") == 0.0

        await eventually(healed, WAIT_S, what="credential_reload_failing cleared by a good reload")
        assert "credentials_reload_failed" in cluster.log_tail("eu", 200)
        assert new not in (cluster.root / "edge-eu.log").read_text()  # never logged

        # The cluster is shared: the token every other test presents works on eu again.
        replace_in(config, hash_token(new), hash_token(old))
        cluster.signal("eu", signal.SIGHUP)

        async def restored() -> bool:
            return await status(old_headers) == 200

        await eventually(restored, WAIT_S, what="the original game_server token accepted again")


async def test_an_edges_ledger_token_is_rotated_without_a_restart(cluster: Cluster) -> None:
    ledger_configs = [cluster.services[n].config_path for n in ("ledger", STANDBY)]
    token_file = cluster.root / "secrets" / "edge-us.token"
    old, new = cluster.tokens["edge-us"], new_token()
    async with cluster.http_session(timeout=aiohttp.ClientTimeout(total=10)) as http:

        async def ledger_status(token: str) -> int:
            async with http.get(
                cluster.url("ledger") + "/v1/players/p002/balances", headers={"Authorization": f"Bearer {token}"}
            ) as r:
                return r.status

        # 1. Both ledgers accept the new token too (overlap), picked up by the file watch.
        for path in ledger_configs:
            path.write_text(
                path.read_text() + f'\n[[tokens]]\nname = "edge-us"\nrole = "edge"\nsha256 = "{hash_token(new)}"\n'
            )

        async def overlap() -> bool:
            return (await ledger_status(old), await ledger_status(new)) == (200, 200)

        await eventually(overlap, WAIT_S, what="the ledger accepts the old and the new edge-us token")
        # 2. The edge presents the new token from its next request on (the file watch re-reads it).
        token_file.write_text(new)
        cluster.signal("us", signal.SIGHUP)
        # 3. The old token is removed from the ledgers.
        for path in ledger_configs:
            replace_in(path, f'sha256 = "{hash_token(old)}"', f'sha256 = "{hash_token(new_token())}"')

        async def retired() -> bool:
            return await ledger_status(old) == 401

        await eventually(retired, WAIT_S, what="the ledger refuses the old edge-us token")
        # A bet through us now reaches the ledger with the new token only.
        async with http.post(
            cluster.url("us") + "/v1/bets", json=bet("3", "p002"), headers=cluster.headers("game_server")
        ) as r:
            assert r.status == 201, await r.text()
        assert cluster.services["us"].running and cluster.services["ledger"].running
        assert "credentials_reloaded" in cluster.log_tail("ledger", 200)
