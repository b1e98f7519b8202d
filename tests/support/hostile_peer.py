"""A hostile sync peer: a websocket client speaking /v1/sync with one edge's peer credential, for
the tests that show what a lying peer can and cannot do (tests/edge/test_hostile_peer.py,
tests/edge/test_anti_entropy.py)."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import aiohttp
import orjson
from pycrdt import Doc, Map

from edge.crdt import protocol
from edge.crdt.identity import fresh_client_id
from tests.support.edges import peer_headers

RNG = random.Random(8)


class Hostile:
    """A websocket client speaking /v1/sync as `edge_id` with that edge's credential, writing with
    a pycrdt client id of `edge_id` (or any other it chooses)."""

    def __init__(self, edge_id: str, client_id: int | None = None) -> None:
        self.edge_id = edge_id
        self.client_id = client_id or fresh_client_id(edge_id, time.time())
        self.docs: dict[str, Doc] = {}
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self, url: str, *, claim: str | None = None, level: int | None = None) -> str | None:
        """With `level`, the hello names that sync level (an edge of this version says 2; without
        it the peer speaks as an edge from before levels)."""
        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(url + "/v1/sync", headers=peer_headers(self.edge_id), max_msg_size=8 << 20)
        hello: dict[str, Any] = {"edge": claim or self.edge_id}
        if level is not None:
            hello["sync"] = level
        await self.ws.send_str(orjson.dumps(hello).decode())
        msg = await asyncio.wait_for(self.ws.receive(), 5)
        return orjson.loads(msg.data)["edge"] if msg.type == aiohttp.WSMsgType.TEXT else None

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()

    async def write(self, name: str, key: str, value: Any) -> None:
        """Each write from a fresh document and client id of the edge: it depends on nothing the
        edge may have refused before."""
        self.client_id = fresh_client_id(self.edge_id, time.time() + RNG.random())
        doc = self.docs[name] = Doc(client_id=self.client_id)
        before = doc.get_state()
        doc.get("slots", type=Map)[key] = value
        await self.send([(name, protocol.update_message(doc.get_update(before)))])

    async def send(self, entries: list[tuple[str, bytes]]) -> None:
        assert self.ws is not None
        await self.ws.send_bytes(protocol.encode_frame(entries))

    async def send_text(self, message: dict[str, Any]) -> None:
        """A text frame (a hint, a hello) of any content."""
        assert self.ws is not None
        await self.ws.send_str(orjson.dumps(message).decode())
