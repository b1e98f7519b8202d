"""Raw HTTP to a live `harness.cluster.Cluster` as any credential (or none), for the security suite.

Every answer a `Client` receives is searched for the cluster's credentials at once, so the test that
provoked a leak is the one that fails. Tests that reach the cluster another way (schemathesis) add
their answers to `SEEN_BODIES`; the security package's `cluster` fixture searches those (and every
file the cluster wrote) when it stops.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from yarl import URL

from harness.cluster import Cluster

PROBLEM = "application/problem+json"
SEEDED_PLAYERS = 8  # p001..p008, seeded when the cluster starts

# Answers received outside a `Client`: (url, status, body). Searched for credentials when the cluster stops.
SEEN_BODIES: list[tuple[str, int, bytes]] = []


@dataclass(frozen=True)
class Reply:
    status: int
    content_type: str
    raw: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        return orjson.loads(self.raw)


class Client:
    """Raw HTTP to the cluster as any credential (or none); refuses any answer holding a credential."""

    def __init__(self, cluster: Cluster, http: aiohttp.ClientSession) -> None:
        self.cluster, self.http = cluster, http
        self.bodies: list[tuple[str, int, bytes]] = []  # every answer this client received: (url, status, body)

    async def send(
        self,
        service: str,
        method: str,
        path: str,
        *,
        token: str | None = None,
        body: Any = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        if body is not None:
            data = orjson.dumps(body)
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        url = self.cluster.url(service) + path
        # Paths are sent exactly as written (already percent-encoded; no `..` folding).
        async with self.http.request(method, URL(url, encoded=True), data=data, headers=hdrs) as r:
            raw = await r.read()
        self.bodies.append((url, r.status, raw))
        leaked = sorted(name for name, secret in self.cluster.tokens.items() if secret.encode() in raw)
        assert not leaked, f"credentials {leaked} in the {r.status} answer of {method} {url}"
        return Reply(r.status, r.content_type, raw, dict(r.headers))

    async def as_role(self, service: str, role: str, method: str, path: str, **kw: Any) -> Reply:
        return await self.send(service, method, path, token=self.token(service, role), **kw)

    def token(self, service: str, role: str) -> str:
        """The cluster's credential of `role` for `service`: a `peer` credential is one edge's own,
        so an edge is called with the credential of another edge (one of its peers)."""
        if role == "peer" and service in self.cluster.edge_ids:
            return self.cluster.peer_token(next(e for e in self.cluster.edge_ids if e != service))
        return self.cluster.tokens[role]

    async def snapshot(self) -> dict[str, Any]:
        """What must not move on a refused request: the journal head and every seeded balance."""
        replication = await self.as_role("ledger", "admin_read", "GET", "/admin/v1/replication")
        assert replication.status == 200, replication.raw
        balances = {}
        for i in range(1, SEEDED_PLAYERS + 1):
            r = await self.as_role("ledger", "admin_read", "GET", f"/admin/v1/players/p{i:03d}")
            assert r.status == 200, r.raw
            balances[f"p{i:03d}"] = r.json().get("balances")
        return {"head": replication.json()["head"], "balances": balances}
