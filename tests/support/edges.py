"""Edges in process on loopback: their credentials (game server, ledger link, peer links), a config
with fast timers, and `Edges`, a set of edge servers the test starts and stops by id."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestServer

from shared.auth import TokenEntry, hash_token

from edge.app import create_app
from edge.config import EdgeConfig, Limits, Peer
from edge.sync import SyncHub

GS, LEDGER_TOKEN = "gs-token", "edge-token"
GS2 = "gs2-token"  # another game server (another provider) of the same region


def peer_token(edge_id: str) -> str:
    """The peer credential of `edge_id` (every edge lists its peers' under their edge ids)."""
    return f"peer-token-{edge_id}"


def peer_headers(edge_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {peer_token(edge_id)}"}


FAST = Limits(
    anti_entropy_interval_s=0.2,
    reconcile_interval_s=0.2,
    breaker_open_s=0.5,
    breaker_failures=3,
    reconnect_backoff_s=0.05,
    reconnect_backoff_max_s=0.3,
    sync_heartbeat_s=2.0,
)


class SilentWs:
    """A websocket that sends nothing anywhere (a link's transport not under test): each frame is
    kept with the time it was handed over (monotonic)."""

    def __init__(self) -> None:
        self.frames: list[tuple[float, bytes]] = []

    async def send_bytes(self, data: bytes) -> None:
        self.frames.append((time.monotonic(), data))

    async def close(self) -> None:
        pass


def bare_hub(**limits: Any) -> SyncHub:
    """Edge eu's sync hub with one peer (us), never started: for the link loops alone."""
    nothing: Any = None  # nothing started: no state, metrics or hint handler needed
    limited = dataclasses.replace(FAST, **limits)
    return SyncHub("eu", (Peer("us", "http://127.0.0.1:9"),), "t", nothing, limited, nothing, nothing)


def edge_config(
    root: Path, edge_id: str, client_id: int, ledger_url: str, port: int, peers: dict[str, int], **overrides: Any
) -> EdgeConfig:
    tokens = (
        TokenEntry("gs", "game_server", hash_token(GS)),
        TokenEntry("gs2", "game_server", hash_token(GS2)),
        TokenEntry("metrics", "metrics", hash_token("metrics-token")),
        *(TokenEntry(p, "peer", hash_token(peer_token(p))) for p in peers),
    )
    cfg = EdgeConfig(
        id=edge_id,
        crdt_client_id=client_id,
        host="127.0.0.1",
        port=port,
        data_dir=root / edge_id,
        ledger_url=ledger_url,
        ledger_token=LEDGER_TOKEN,
        peer_token=peer_token(edge_id),
        ledger_attempt_timeout_s=0.5,
        ledger_deadline_s=1.5,
        body_bytes_max=65536,
        session_state_bytes_max=2048,
        log_level="warning",
        peers=tuple(Peer(p, f"http://127.0.0.1:{port_}") for p, port_ in peers.items()),
        tokens=tokens,
        limits=FAST,
    )
    return dataclasses.replace(cfg, **overrides)


@dataclasses.dataclass
class Edges:
    root: Path
    ledger_url: str
    ports: dict[str, int]
    servers: dict[str, TestServer] = dataclasses.field(default_factory=dict)

    def config(self, edge_id: str, **overrides: Any) -> EdgeConfig:
        ids = sorted(self.ports)
        return edge_config(
            self.root,
            edge_id,
            ids.index(edge_id) + 1,
            self.ledger_url,
            self.ports[edge_id],
            {p: port for p, port in self.ports.items() if p != edge_id},
            **overrides,
        )

    async def start(self, edge_id: str, **overrides: Any) -> TestServer:
        server = TestServer(create_app(self.config(edge_id, **overrides)), host="127.0.0.1", port=self.ports[edge_id])
        await server.start_server()
        self.servers[edge_id] = server
        return server

    async def stop(self, edge_id: str) -> None:
        await self.servers.pop(edge_id).close()

    def url(self, edge_id: str) -> str:
        return f"http://127.0.0.1:{self.ports[edge_id]}"
