"""No credential leaks: after traffic that tempts a leak (credentials in the wrong form, place,
service or role, a peer link with a wrong token, a process restart), no token of cluster.json
(nor an edge's own ledger credential) appears in any log line, any response body collected by the
security suite, or any file the processes wrote (configs hold digests; clear tokens live only in
secrets/ and cluster.json). Run with the package (it sorts last), it covers every request the
security suite made; alone, it covers its own."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from harness.cluster import Cluster
from tests.security.conftest import SEEN_BODIES, Client

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="package")]

FILE_BYTES_MAX = 64 << 20  # bounds what one scanned file may hold


def _tokens(cluster: Cluster) -> dict[str, str]:
    listed = json.loads((cluster.root / "cluster.json").read_text())["tokens"]
    assert set(listed) >= {"game_server", "peer", "edge", "cashier", "admin_read", "admin_write"}, listed
    return {**cluster.tokens, **listed}


def _written_files(root: Path) -> list[Path]:
    """Everything under the cluster's directory except the two homes of clear tokens."""
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and p.name != "cluster.json" and "secrets" not in p.relative_to(root).parts)


async def _tempt(client: Client) -> None:
    """Credentials sent in every wrong way, to every service; the answers join SEEN_BODIES."""
    c = client.cluster
    for _name, token in sorted(c.tokens.items()):
        for service in ("ledger", "eu"):
            for headers in ({"Authorization": f"Bearer {token}x"}, {"Authorization": f"Basic {token}"},
                            {"Authorization": f"bearer {token}"}, {"Authorization": token},
                            {"X-Api-Key": token, "Cookie": f"session={token}"}):
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
    tokens = _tokens(cluster)
    kept = b"".join(p.read_bytes() for p in (cluster.root / "secrets").iterdir())
    assert all(t.encode() in kept for t in tokens.values()), "the search would not see these tokens"
    files = _written_files(cluster.root)
    logs = [f for f in files if f.suffix == ".log"]
    assert len(logs) == 1 + len(cluster.edge_ids), logs
    assert all(f.stat().st_size > 0 for f in logs)
    leaks = []
    for path in files:
        data = path.read_bytes()
        assert len(data) <= FILE_BYTES_MAX, path
        leaks += [f"{name} in {path.relative_to(cluster.root)}" for name, t in tokens.items() if t.encode() in data]
    assert len(SEEN_BODIES) > 100
    for url, status, body in SEEN_BODIES:
        leaks += [f"{name} in the {status} body of {url}" for name, t in tokens.items() if t.encode() in body]
    assert leaks == []
