"""No credential leaks: after traffic that tempts a leak (credentials in the wrong form, place,
service or role, a peer link with a wrong token, a process restart), no token of cluster.json
(nor an edge's own ledger credential) appears in any log line, any answer to that traffic, or any
file the processes wrote (configs hold digests; clear tokens live only in secrets/ and cluster.json).

The test stands alone: it searches the answers it received itself and the files as they are when it
runs, so it passes or fails the same wherever it runs in the package. The answers other security
tests receive are searched as they arrive (tests/support/cluster_client.py), and every file once
more when the package's cluster stops (tests/security/conftest.py)."""

from __future__ import annotations

import aiohttp
import pytest

from tests.support.cluster_client import Client
from tests.support.leaks import cluster_tokens, leaks_in_bodies, leaks_in_files, written_files

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="package")]


async def _tempt(client: Client) -> None:
    """Credentials sent in every wrong way, to every service (the client keeps the answers)."""
    c = client.cluster
    for _name, token in sorted(c.tokens.items()):
        for service in ("ledger", "eu"):
            for headers in (
                {"Authorization": f"Bearer {token}x"},
                {"Authorization": f"Basic {token}"},
                {"Authorization": f"bearer {token}"},
                {"Authorization": token},
                {"X-Api-Key": token, "Cookie": f"session={token}"},
            ):
                await client.send(service, "POST", "/v1/bets", body={"id": "leak"}, headers=headers)
            await client.send(service, "GET", f"/v1/players/p001/balances?access_token={token}")
            await client.send(service, "POST", "/admin/v1/adjustments", token=token, body={"reason": "x"})
            await client.send(service, "GET", "/metrics", token=token)
            await client.send(service, "GET", "/v1/sync", token=token)


async def test_no_credential_appears_in_logs_response_bodies_or_written_files(client, cluster):
    await _tempt(client)
    async with aiohttp.ClientSession() as http:  # a peer link attempt with another role's credential
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(cluster.url("us") + "/v1/sync", headers=cluster.headers("game_server"))
    await cluster.restart("apac")  # shutdown and start-up lines (configs, peers, ledger link) are logged too
    tokens = cluster_tokens(cluster)
    kept = b"".join(p.read_bytes() for p in (cluster.root / "secrets").iterdir())
    assert all(t.encode() in kept for t in tokens.values()), "the search would not see these tokens"
    files = written_files(cluster.root)
    logs = [f for f in files if f.suffix == ".log"]
    assert len(logs) == 1 + len(cluster.edge_ids), logs
    assert all(f.stat().st_size > 0 for f in logs)
    assert len(client.bodies) > 100
    assert leaks_in_files(cluster.root, tokens) + leaks_in_bodies(client.bodies, tokens) == []
