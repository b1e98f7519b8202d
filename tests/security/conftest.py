"""Fixtures for the security suite: one live cluster (a ledger and three edges as real processes,
debug logging so that a leak anywhere shows in the logs) for the whole package, and a client that
keeps every response body it saw so that `test_secrets` can search them for credentials."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import pytest_asyncio
from yarl import URL

from harness.cluster import Cluster, seed

PLAYERS = 8
REQUEST_TIMEOUT_S = 30.0

# Every response body any security test received: (url, status, body). Searched for secrets.
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
    """Raw HTTP to the cluster as any credential (or none); records every body it receives."""

    def __init__(self, cluster: Cluster, http: aiohttp.ClientSession) -> None:
        self.cluster, self.http = cluster, http

    async def send(self, service: str, method: str, path: str, *, token: str | None = None,
                   body: Any = None, data: bytes | None = None, headers: dict[str, str] | None = None) -> Reply:
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
            SEEN_BODIES.append((url, r.status, raw))
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
        for i in range(1, PLAYERS + 1):
            r = await self.as_role("ledger", "admin_read", "GET", f"/admin/v1/players/p{i:03d}")
            assert r.status == 200, r.raw
            balances[f"p{i:03d}"] = r.json().get("balances")
        return {"head": replication.json()["head"], "balances": balances}


@pytest_asyncio.fixture(scope="package", loop_scope="package")
async def cluster(tmp_path_factory) -> AsyncIterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("security-cluster"), log_level="debug")
    try:
        await c.start()
        c.write_info(await seed(c, players=PLAYERS))
        yield c
    finally:
        await c.stop()


@pytest_asyncio.fixture(loop_scope="package")
async def client(cluster: Cluster) -> AsyncIterator[Client]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as http:
        yield Client(cluster, http)
