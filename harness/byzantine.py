"""A lying sync peer for the chaos run: a websocket client of an edge's `GET /v1/sync` that speaks
the real framing (`edge.crdt.protocol`) but sends what no honest edge would.

It says hello as an edge the target accepts dials from (the smaller id dials: "apac" → "eu",
"apac"/"eu" → "us"). For the content lies it holds that edge's own peer credential (a
compromised edge); for `impersonate` it holds *another* edge's credential, so a target that
binds credentials to edge ids must refuse the hello. While it lies, the real edge's link to the
target is cut (its proxy resets), or the real edge would redial at once and displace the liar.
To forge a write that wins over the current value of a slot, it first pulls the target's copy of
the document (STEP1 with an empty state vector → STEP2), applies it to a local pycrdt document
of its own client id, writes there, and sends the difference as an update.

Lies, one per `LIES` entry:

- `forge_slot`     another edge's jackpot slot with a contribution it never made
- `foreign_slot`   a slot keyed by no edge at all (counted in the display by a trusting edge)
- `bad_values`     `{"epoch": "x"}` in a jackpot slot and `{"ts": "abc"}` in a bonus slot
- `unknown_doc`    a document the ledger never made (`jackpot/FAKE-JACKPOT`)
- `oversized`      a session update just under the frame limit, and a frame over it
- `impersonate`    a hello as one edge with another edge's credential; then it rewrites the
                   impersonated edge's own jackpot slot. An accepted hello is recorded in
                   `accepted_impersonations` (the checker fails on any).

The credential comes from `peer_credential` alone, so the per-edge peer credential layout needs
a change in one place.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import aiohttp
import structlog
from pycrdt import Doc, Map, YSyncMessageType

from harness.cluster import Cluster

log = structlog.get_logger("croupier.chaos.byzantine")

LIES = ("forge_slot", "foreign_slot", "bad_values", "unknown_doc", "oversized", "impersonate")
JACKPOT_DOC = "jackpot/mega"
FAKE_JACKPOT = "FAKE-JACKPOT"
FOREIGN_EDGE = "mallory"
FORGED_MINOR = 1_000_000  # a contribution nobody made: any display that trusts it is visibly wrong
FRAME_BYTES_MAX = 1 << 20  # the edges' default `protocol.Limits.frame_bytes_max`
PULL_TIMEOUT_S = 3.0
FRAMES_READ_MAX = 64  # frames read while waiting for the pulled document (bounded)
BYZANTINE_CLIENT_ID = 0x7E57_0001  # a pycrdt client id no edge uses (edges use 1..n)


def peer_credential(cluster: Cluster, edge: str) -> str:
    """The sync credential of `edge` (what it presents to its peers' `/v1/sync`): every edge has its
    own, named after its edge id, and an edge accepts a hello only as that id."""
    return cluster.peer_token(edge)


def dialers_of(cluster: Cluster, target: str) -> list[str]:
    """Edges whose hello `target` accepts: the ones with a smaller id (they dial it)."""
    return [e for e in cluster.edge_ids if e < target]


class ByzantinePeer:
    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        self.cluster, self.rng = cluster, rng
        self.accepted_impersonations: list[str] = []  # "target accepted X holding Y's credential"

    async def lie(self, lie: str, target: str, hold_s: float) -> str:
        """Connect to `target` as another edge, tell one lie, hold the link `hold_s`, close.
        The impersonated edge's own link to the target is cut meanwhile (its proxy resets), or it
        would redial at once and displace the liar. Returns what was done (for the fault log); a
        target that closes the link or refuses is an outcome, not an error."""
        assert lie in LIES, lie
        posing_as = self.rng.choice(dialers_of(self.cluster, target))
        cut = self.cluster.proxies.get((posing_as, target))
        if cut is not None:
            cut.set_mode("reset")
        try:
            frames = await self._tell(lie, target, posing_as, hold_s)
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as e:
            log.warning("byzantine_peer_cut_off", lie=lie, target=target, posing_as=posing_as, error=repr(e))
            return f"{lie} to {target} as {posing_as}: link closed ({type(e).__name__})"
        finally:
            if cut is not None:
                cut.set_mode("pass")
        log.warning("byzantine_peer_lied", lie=lie, target=target, posing_as=posing_as, frames=frames)
        return f"{lie} to {target} as {posing_as} ({frames} frames)"

    async def _tell(self, lie: str, target: str, posing_as: str, hold_s: float) -> int:
        url = self.cluster.url(target) + "/v1/sync"
        # A compromised edge lies with its own credential; an impersonator holds another's.
        holder = (
            posing_as
            if lie != "impersonate"
            else self.rng.choice([e for e in self.cluster.edge_ids if e not in (posing_as, target)] or [posing_as])
        )
        headers = {"Authorization": f"Bearer {peer_credential(self.cluster, holder)}"}
        from edge.crdt import protocol

        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(
                url, headers=headers, max_msg_size=4 * FRAME_BYTES_MAX, timeout=aiohttp.ClientWSTimeout(ws_close=1.0)
            ) as ws,
        ):
            await ws.send_str(json.dumps({"edge": posing_as}))
            async with asyncio.timeout(PULL_TIMEOUT_S):
                hello = await ws.receive()
            if hello.type != aiohttp.WSMsgType.TEXT:
                raise ConnectionError(f"{target} refused a hello as {posing_as}")
            if holder != posing_as:
                self.accepted_impersonations.append(
                    f"{target} accepted a hello as {posing_as} holding {holder}'s credential"
                )
            frames = await self._frames(lie, ws, posing_as, protocol)
            for frame in frames:
                await ws.send_bytes(frame)
            await self._drain(ws, hold_s)
        return len(frames)

    async def _frames(self, lie: str, ws: Any, posing_as: str, protocol: Any) -> list[bytes]:
        now = time.time()
        if lie in ("forge_slot", "impersonate", "foreign_slot"):
            doc = await self._pull(ws, JACKPOT_DOC, protocol)
            slots = doc.get("slots", type=Map)
            current = {k: v for k, v in slots.items() if isinstance(v, dict)}
            epoch = max((int(v.get("epoch", 0)) for v in current.values()), default=1)
            if lie == "foreign_slot":
                owner = FOREIGN_EDGE
            elif lie == "impersonate":
                owner = posing_as
            else:  # an edge other than the one it poses as (the target itself, possibly)
                owner = self.rng.choice([e for e in self.cluster.edge_ids if e != posing_as] or [posing_as])
            base = current.get(owner) or {"p": 0, "n": 0, "seed": 0, "currency": "EUR"}
            before = doc.get_state()
            slots[owner] = {
                "epoch": epoch,
                "p": int(base.get("p", 0)) + FORGED_MINOR,
                "n": int(base.get("n", 0)),
                "seed": int(base.get("seed", 0)),
                "currency": str(base.get("currency", "EUR")),
                "ts": now,
            }
            return [protocol.encode_frame([(JACKPOT_DOC, protocol.update_message(doc.get_update(before)))])]
        if lie == "bad_values":
            doc = await self._pull(ws, JACKPOT_DOC, protocol)
            before = doc.get_state()
            doc.get("slots", type=Map)[posing_as] = {"epoch": "x"}
            player = self.rng.choice(["p001", "p002", "p003"])
            return [
                protocol.encode_frame(
                    [
                        (JACKPOT_DOC, protocol.update_message(doc.get_update(before))),
                        (f"bonus/{player}", protocol.update_message(_fresh_update(posing_as, {"w": {}, "ts": "abc"}))),
                    ]
                )
            ]
        if lie == "unknown_doc":
            value = {"epoch": 1, "p": FORGED_MINOR, "n": 0, "seed": 0, "currency": "EUR", "ts": now}
            return [
                protocol.encode_frame(
                    [(f"jackpot/{FAKE_JACKPOT}", protocol.update_message(_fresh_update(posing_as, value)))]
                )
            ]
        if lie == "oversized":
            big = {
                "state": json.dumps({"blob": "x" * (FRAME_BYTES_MAX - 4096)}),
                "updated_at": "2026-01-01T00:00:00Z",
                "ts": now,
            }
            near_limit = protocol.encode_frame(
                [("session/p001/slots-1", protocol.update_message(_fresh_update(posing_as, big)))]
            )
            return [near_limit, b"\x01" * (FRAME_BYTES_MAX + 1)]
        raise AssertionError(lie)

    async def _pull(self, ws: Any, name: str, protocol: Any) -> Doc:
        """The target's copy of document `name` (empty if it has none within the time bound)."""
        doc: Doc = Doc(client_id=BYZANTINE_CLIENT_ID)
        await ws.send_bytes(protocol.encode_frame([(name, protocol.step1(b"\x00"))]))
        deadline = time.monotonic() + PULL_TIMEOUT_S
        for _ in range(FRAMES_READ_MAX):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    msg = await ws.receive()
            except TimeoutError:
                break
            if msg.type != aiohttp.WSMsgType.BINARY:
                if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
                continue
            for entry, message in protocol.decode_frame(msg.data, protocol.Limits(frame_bytes_max=4 * FRAME_BYTES_MAX)):
                kind, payload = protocol.parse(message)
                if entry == name and kind in (YSyncMessageType.SYNC_STEP2, YSyncMessageType.SYNC_UPDATE):
                    doc.apply_update(payload)
                    if kind == YSyncMessageType.SYNC_STEP2:
                        return doc
        return doc

    @staticmethod
    async def _drain(ws: Any, hold_s: float) -> None:
        """Keep the link open `hold_s`, reading (and ignoring) what the target sends."""
        deadline = time.monotonic() + hold_s
        for _ in range(10_000):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                async with asyncio.timeout(remaining):
                    msg = await ws.receive()
            except TimeoutError:
                return
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                return


def _fresh_update(owner: str, value: dict[str, Any]) -> bytes:
    """An update that writes `value` as `owner`'s slot in a document of the byzantine's own."""
    doc: Doc = Doc(client_id=BYZANTINE_CLIENT_ID)
    doc.get("slots", type=Map)[owner] = value
    return doc.get_update()
