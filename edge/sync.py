"""Edge-to-edge sync over websockets (`GET /v1/sync`, role `peer`).

One websocket per peer pair: the edge with the smaller id dials, the other accepts (so both must
list each other in `[[edge.peers]]`, as the cluster launcher writes them); after a
hello each way both sides run the same link: live push of this edge's own updates (at most one
frame per `sync_push_interval_s`, and only once they are stored), a state-vector exchange at
connect and every `anti_entropy_interval_s` (which repairs drops, reordering and partitions), and receipt
of peer frames through the pure `edge.crdt.exchange`. A round advertises only the documents that
changed since the peer's previous round, plus a page of a sweep over all of them
(`edge.crdt.anti_entropy`): its cost follows what changed, not how many documents the edge holds.
It leaves out what the peer holds already: changes that came from that peer, and (for a peer whose
hello says `"sync": 2` or more, which asks for what it refused for now) this edge's own writes
pushed live on the link; a push (or an answer) that may not have arrived is advertised in the next
round, and so are answers a slow store held back.
Text messages carry reconcile hints.
The dialer reconnects with doubling backoff; heartbeats detect a silent (blackholed) link.

Peers are hostile until checked. Each edge holds its own peer credential, named after its edge
id: a websocket's hello must claim exactly the id its credential names, so no peer can pose as
another or take over another's link. Every update a peer sends is admitted whole or not at all
(`edge.crdt.admission`), against the jackpot facts learned from the ledger (`edge.jackpots`) and
within the peer's byte quota (`edge.quota`); refusals are logged and counted. No loop dies
silently: failures are counted in `edge.health`, and a link that fails is closed and redialed.
"""

from __future__ import annotations

import asyncio
import functools
import math
import ssl
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

import aiohttp
import orjson
import structlog
from aiohttp import web
from pycrdt import YSyncMessageType

from shared.auth import TokenStore
from shared.errors import Unauthenticated, Unavailable
from shared.tasks import TaskSet

from edge.config import Limits, Peer
from edge.crdt import FrameBuilder, ProtocolError, admission, protocol, yupdate
from edge.crdt.anti_entropy import PeerRounds
from edge.crdt.exchange import docs_to_load, handle, state_entries
from edge.crdt.identity import Owners
from edge.crdt.slots import JACKPOT
from edge.health import TaskHealth
from edge.jackpots import JackpotCatalog
from edge.metrics import EdgeMetrics
from edge.quota import ByteBucket
from edge.state import EdgeState

log = structlog.get_logger("croupier.edge.sync")

HELLO_TIMEOUT_S = 2.0
CONNECT_TIMEOUT_S = 0.5  # a loopback/LAN handshake; a blackholed dial is abandoned quickly
BARRIER_TIMEOUT_S = 5.0
CHUNK_DOCS_MAX = 256  # documents made live per step of one frame (<< docs_live_max)
HINT_NAMES_MAX = 1000
SENT_KEPT_MAX = 32_768  # pushes and answers a link remembers in case it is lost (older: advertised again);
# far above what an honest peer leaves (2,000 updates/s over the 4 s rewind margin: at most 8,000)
REFUSED_LINK_REASONS = ("claimed_other_edge", "unknown_peer", "malformed_hello")
# The sync level this edge speaks, in its hello. 2: it asks a peer, in its next anti-entropy round,
# for a document whose update it refused for now (deferred, or over the peer's byte quota), so the
# peer need not advertise its own pushed writes. A hello without it is level 1.
SYNC_LEVEL = 2
ASK_AGAIN_REASONS = frozenset({admission.PEER_QUOTA})  # refusals, besides deferred ones, asked again


class _Link:
    def __init__(self, peer: str, ws: Any, queue_max: int, authorization: str | None = None, level: int = 1) -> None:
        self.peer = peer
        self.ws = ws
        self.authorization = authorization  # what an accepted peer presented (None: this edge dialed)
        self.level = level  # the peer's sync level (its hello)
        self.queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=queue_max)
        self.dropped = 0
        self.last_heard = time.monotonic()  # when the peer last sent anything (the link's start at first)
        self.sent: deque[tuple[float, list[str]]] = deque()  # (when, documents) of recent pushes and answers
        self.in_hand: list[str] = []  # documents the push loop took off the queue and has not sent yet
        self.last_push = -math.inf  # when the push loop last took a frame's updates (monotonic)

    def recently_sent(self, since: float) -> list[str]:
        """Documents pushed or answered at or after `since` (monotonic), those taken to be pushed,
        and those still queued."""
        names = [name for at, sent in self.sent if at >= since for name in sent]
        names += self.in_hand
        while not self.queue.empty():
            names.append(self.queue.get_nowait()[0])
        return names


class SyncHub:
    def __init__(
        self,
        edge_id: str,
        peers: tuple[Peer, ...],
        peer_token: str | Callable[[], str],
        state: EdgeState,
        limits: Limits,
        metrics: EdgeMetrics,
        on_hint: Any,
        proto_limits: protocol.Limits = protocol.Limits(),
        *,
        catalog: JackpotCatalog | None = None,
        health: TaskHealth | None = None,
        session_state_bytes_max: int = 16384,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.edge_id = edge_id
        self.peers = {p.id: p for p in peers}
        # A callable is read at every dial: a reloaded peer_token_file is presented from the next link on.
        self._token: Callable[[], str] = peer_token if callable(peer_token) else (lambda: peer_token)
        self._tls = tls  # verifies wss:// (https://) peers (None: aiohttp's default verification)
        self.state = state
        self.limits = limits
        self.metrics = metrics
        self._on_hint = on_hint
        self.proto = proto_limits
        self.owners = Owners((edge_id, *self.peers))
        self.catalog = catalog or JackpotCatalog(None, limits.jackpot_lookup_interval_s)
        self.health = health or TaskHealth(metrics, limits.background_failures_unready)
        self._session_state_bytes_max = session_state_bytes_max
        self._quota = {p: ByteBucket(limits.sync_peer_bytes_per_s, limits.sync_peer_bytes_burst) for p in self.peers}
        self.links: dict[str, _Link] = {}
        # Per peer, across its links: what anti-entropy still has to advertise to it.
        sweep_rounds_min = max(1, math.ceil(limits.anti_entropy_sweep_period_s / limits.anti_entropy_interval_s))
        self.rounds = {
            p: PeerRounds(
                limits.anti_entropy_sweep_docs,
                limits.anti_entropy_catch_up_docs,
                sweep_rounds_min,
                wait_until_quiet=limits.anti_entropy_wait_until_quiet,
            )
            for p in self.peers
        }
        self._tasks = TaskSet(self._failed, self._succeeded)
        self._http: aiohttp.ClientSession | None = None
        self._closing = False

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._tls if self._tls is not None else True)
        )
        # Every series exists from the start: the first refusal is then an increase, alerts see it.
        for reason in REFUSED_LINK_REASONS:
            self.metrics.sync_refused_links_total.labels(reason)
        for peer in self.peers.values():
            self.metrics.sync_peer_up.labels(peer.id).set(0)
            for reason in admission.REASONS:
                self.metrics.sync_rejected_updates_total.labels(peer.id, reason)
            self.metrics.sync_answers_held_back_total.labels(peer.id)
            self.metrics.sync_stalled_links_total.labels(peer.id)
            self.metrics.sync_live_updates_dropped_total.labels(peer.id)
            if self.edge_id < peer.id:
                self._spawn(self._dial_forever(peer), f"sync-dial-{peer.id}")

    async def close(self) -> None:
        """Idempotent: stop dialing, close every link."""
        self._closing = True
        await self._tasks.cancel_all()
        for link in list(self.links.values()):
            await link.ws.close()
        if self._http is not None:
            await self._http.close()
            self._http = None

    # --- outbound -----------------------------------------------------------------------------

    def push(self, updates: list[tuple[str, bytes]]) -> None:
        """This edge's own updates, now stored: queue them for every connected peer (a peer that
        is not connected, or whose queue is full, gets them in its next anti-entropy round)."""
        messages = [(name, protocol.update_message(update)) for name, update in updates]
        for peer, rounds in self.rounds.items():
            link = self.links.get(peer)
            if link is None:
                rounds.must_advertise(name for name, _ in updates)
                continue
            for entry in messages:
                try:
                    link.queue.put_nowait(entry)
                except asyncio.QueueFull:
                    link.dropped += 1  # anti-entropy delivers it instead
                    self.metrics.sync_live_updates_dropped_total.labels(peer).inc()
                    rounds.must_advertise((entry[0],))

    def hint(self, peer: str, names: list[str]) -> None:
        link = self.links.get(peer)
        if link is not None and names:
            self._spawn(link.ws.send_str(orjson.dumps({"reconcile": names[:HINT_NAMES_MAX]}).decode()), "sync-hint")

    # --- connections --------------------------------------------------------------------------

    async def _dial_forever(self, peer: Peer) -> None:
        assert self._http is not None
        backoff = self.limits.reconnect_backoff_s
        while True:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    ws = await self._http.ws_connect(
                        peer.url + "/v1/sync",
                        headers={"Authorization": f"Bearer {self._token()}"},
                        heartbeat=self.limits.sync_heartbeat_s,
                        max_msg_size=self.proto.frame_bytes_max,
                    )
                try:
                    await ws.send_str(self._hello())
                    edge, level = await self._read_hello(ws)
                    if edge != peer.id:
                        raise ProtocolError("the peer answered with another edge id")
                    backoff = self.limits.reconnect_backoff_s
                    self.health.ok(f"sync-dial-{peer.id}")
                    await self._run(peer.id, ws, level=level)
                finally:
                    await ws.close()
            except (TimeoutError, aiohttp.ClientError, ProtocolError, OSError) as e:
                log.debug("sync link down", peer=peer.id, error=type(e).__name__)
            except Exception as e:  # noqa: BLE001 - a bug must not end the dialer for good: count it, redial
                self.health.failed(f"sync-dial-{peer.id}", e)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.limits.reconnect_backoff_max_s)

    async def accept(self, request: web.Request, credential: str) -> web.WebSocketResponse:
        """A peer's websocket; `credential` is the name of the peer credential it presented, which
        is the only edge id it may claim."""
        ws = web.WebSocketResponse(heartbeat=self.limits.sync_heartbeat_s, max_msg_size=self.proto.frame_bytes_max)
        await ws.prepare(request)
        if self._closing:
            await ws.close()
            return ws
        try:
            try:
                peer, level = await self._read_hello(ws)
            except (ProtocolError, TimeoutError):
                self._refuse_link("malformed_hello", credential, None)
                raise
            if peer != credential:
                self._refuse_link("claimed_other_edge", credential, peer)
                raise ProtocolError(f"credential {credential!r} claimed edge {peer[:40]!r}")
            if peer not in self.peers or peer >= self.edge_id:  # the smaller id dials
                self._refuse_link("unknown_peer", credential, peer)
                raise ProtocolError(f"unexpected peer {peer!r}")
            await ws.send_str(self._hello())
            self.health.ok("sync-accept")
            await self._run(peer, ws, request.headers.get("Authorization"), level)
        except (TimeoutError, ProtocolError) as e:
            log.warning("sync peer refused", credential=credential, error=str(e))
        except (aiohttp.ClientError, OSError) as e:  # the peer or the network dropped the link: it redials
            log.info("sync link down", peer=credential, error=type(e).__name__)
        except Exception as e:  # noqa: BLE001 - a bug ends this link only: counted, the peer redials
            self.health.failed("sync-accept", e)
        finally:
            await ws.close()
        return ws

    def revoke_removed(self, tokens: TokenStore) -> list[str]:
        """After a credential reload: close every accepted link whose credential is no longer
        accepted (a removed peer token stops working on open links too); the peer redials and is
        authenticated again. The peers whose links were closed."""
        revoked = []
        for link in list(self.links.values()):
            if link.authorization is None:
                continue
            try:
                tokens.authenticate(link.authorization)
            except Unauthenticated:
                revoked.append(link.peer)
                self._spawn(link.ws.close(), "sync-revoke")
        if revoked:
            log.warning("sync_links_revoked", peers=revoked, reason="credential_removed")
        return revoked

    def _refuse_link(self, reason: str, credential: str, claimed: str | None) -> None:
        self.metrics.sync_refused_links_total.labels(reason).inc()
        log.warning(
            "sync link refused", reason=reason, credential=credential, claimed=None if claimed is None else claimed[:40]
        )

    def _hello(self) -> str:
        return orjson.dumps({"edge": self.edge_id, "sync": SYNC_LEVEL}).decode()

    async def _read_hello(self, ws: Any) -> tuple[str, int]:
        """The peer's edge id and sync level (1 when its hello names none: an older edge)."""
        async with asyncio.timeout(HELLO_TIMEOUT_S):
            msg = await ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            raise ProtocolError("expected a hello")
        try:
            hello = orjson.loads(msg.data)
            edge, level = hello.get("edge"), hello.get("sync", 1)
        except (orjson.JSONDecodeError, AttributeError):
            raise ProtocolError("malformed hello") from None
        if not isinstance(edge, str) or isinstance(level, bool) or not isinstance(level, int):
            raise ProtocolError("malformed hello")
        return edge, level

    async def _run(self, peer: str, ws: Any, authorization: str | None = None, level: int = 1) -> None:
        old = self.links.get(peer)
        if old is not None:
            await old.ws.close()
        if self._closing:  # `close` ran during the handshake: it closed the links it knew, not this one
            return
        link = self.links[peer] = _Link(peer, ws, self.limits.sync_queue_max, authorization, level)
        self.metrics.sync_peer_up.labels(peer).set(1)
        started = time.monotonic()
        log.info("sync_link_up", peer=peer, sync_level=level, dialed=authorization is None)
        # A failed sender ends the link (counted under its label unless the socket broke); the dialer
        # reconnects. The label is the task's kind: a peer id may hold "-" too.
        tasks = []
        for label, loop in (("sync-push", self._send_loop(link)), ("sync-anti-entropy", self._anti_entropy_loop(link))):
            tasks.append(task := asyncio.create_task(loop, name=f"{label}-{peer}"))
            task.add_done_callback(partial(self._link_task_done, ws=ws, label=label))
        try:
            async for msg in ws:
                link.last_heard = time.monotonic()
                if msg.type == aiohttp.WSMsgType.BINARY:
                    await self._receive(link, msg.data)
                elif msg.type == aiohttp.WSMsgType.TEXT:
                    self._receive_hint(msg.data)
                else:
                    break
        finally:
            # Forget the link first: the awaits below may be cut short when this task is cancelled.
            if self.links.get(peer) is link:
                del self.links[peer]
                self.metrics.sync_peer_up.labels(peer).set(0)
            # Once per link (redials that fail meanwhile log at debug): what changed is here.
            (log.info if self._closing else log.warning)(
                "sync_link_lost", peer=peer, up_s=round(time.monotonic() - started, 3), closing=self._closing
            )
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            # What went out in the link's last moments may be lost: advertise it again next link.
            self.rounds[peer].link_ended(link.last_heard, self._rewind_margin_s)
            self.rounds[peer].must_advertise(link.recently_sent(link.last_heard - self._rewind_margin_s))

    def _link_task_done(self, task: asyncio.Task[Any], ws: Any, label: str) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            return
        if _peer_went_away(error):
            log.debug("sync link task ended", task=task.get_name(), error=repr(error))
        else:
            self.health.failed(label, error)
        self._spawn(ws.close(), "close")

    # --- per link -----------------------------------------------------------------------------

    async def _send_loop(self, link: _Link) -> None:
        while True:
            first = await link.queue.get()
            # Neither queued nor sent: handed back by `recently_sent` if the link ends in the wait.
            link.in_hand = names = [first[0]]
            # At most one push frame per `sync_push_interval_s`: an idle link sends at once (after
            # one loop turn), a busy one sends what queued in the meantime together. Fewer, larger
            # frames are less work for both edges than one per update.
            await asyncio.sleep(max(0.0, link.last_push + self.limits.sync_push_interval_s - time.monotonic()))
            link.last_push = time.monotonic()
            builder = FrameBuilder(self.proto)
            builder.add(*first)
            for _ in range(min(link.queue.qsize(), self.proto.entries_per_frame_max * 4)):
                name, message = link.queue.get_nowait()
                builder.add(name, message)
                names.append(name)
            builder.flush()
            link.sent.append((time.monotonic(), names))
            link.in_hand = []
            await self._send_frames(link, builder.frames)
            self._forget_sent(link)
            self.health.ok("sync-push")

    def _forget_sent(self, link: _Link) -> None:
        """Pushes and answers older than the rewind margin before the peer was last heard from are
        not kept, nor more than SENT_KEPT_MAX of them: a peer that answers pings but sends no frame
        never moves `last_heard`, and what it may have lost is then advertised again instead."""
        horizon = link.last_heard - self._rewind_margin_s
        while link.sent and link.sent[0][0] < horizon:
            link.sent.popleft()
        while len(link.sent) > SENT_KEPT_MAX:
            self.rounds[link.peer].must_advertise(link.sent.popleft()[1])

    @property
    def _rewind_margin_s(self) -> float:
        """How long before a peer was last heard from what this edge sent may still be lost."""
        return 2 * self.limits.anti_entropy_interval_s + self.limits.sync_heartbeat_s

    async def _anti_entropy_loop(self, link: _Link) -> None:
        rounds = self.rounds[link.peer]
        while True:
            rounds.received(link.last_heard - self._rewind_margin_s)  # (what went out before then arrived)
            names = rounds.next_round(
                self.state.replica, time.monotonic(), peer=link.peer, trusts_pushes=link.level >= 2
            )
            builder = FrameBuilder(self.proto)
            for name, message in state_entries(self.state.replica, names):
                builder.add(name, message)
            builder.flush()
            await self._send_frames(link, builder.frames)
            self.metrics.sync_anti_entropy_docs.labels(link.peer).observe(len(names))
            self.health.ok("sync-anti-entropy")
            await asyncio.sleep(self.limits.anti_entropy_interval_s)

    async def _receive(self, link: _Link, frame: bytes) -> None:
        entries = self._known_docs(link, protocol.decode_frame(frame, self.proto))
        replies: list[tuple[str, bytes]] = []
        differing, exchange = 0, False
        for start in range(0, len(entries), CHUNK_DOCS_MAX):
            chunk = entries[start : start + CHUNK_DOCS_MAX]
            await self.catalog.learn(self._jackpots_to_confirm(chunk))
            for name in docs_to_load(self.state.replica, chunk):
                await self.state.doc(name)
            # No await from here on: documents stay live, and admission sees what is applied.
            rules = self._rules()  # one clock reading per chunk: nothing awaits in between
            handled = handle(
                self.state.replica,
                chunk,
                functools.partial(self._admit, link, rules),
                source=link.peer,
            )
            self._refused(link, handled.refused)
            for name in handled.evicted:  # not handled: this edge's next round asks the peer again
                self.rounds[link.peer].ask(name)
            overloaded = 0
            for name, update in handled.changes:
                try:
                    self.state.remote_changed(name, update)
                except Unavailable:  # kept live, stored whole once the store takes writes (EdgeState)
                    overloaded += 1
            if overloaded:
                log.warning("store overloaded: remote updates kept live until stored", peer=link.peer, docs=overloaded)
            self.state.observe_arrivals(handled.arrived)
            replies += handled.replies
            differing += handled.differing
            exchange = exchange or any(m[1] == YSyncMessageType.SYNC_STEP1 for _, m in chunk)
        if exchange:
            self.metrics.sync_last_success.labels(link.peer).set(self.state.clock())
            self.metrics.sync_pending_updates.labels(link.peer).set(differing + link.queue.qsize())
        if not replies:
            return
        answered = list(dict.fromkeys(name for name, _ in replies))
        if not await self.state.store.barrier(BARRIER_TIMEOUT_S):  # send only what is stored
            # Not sent, and neither side's round names these documents again: ask the peer next round.
            for name in answered:
                self.rounds[link.peer].ask(name)
            self.metrics.sync_answers_held_back_total.labels(link.peer).inc()
            log.warning(
                "sync answers held back", peer=link.peer, docs=len(answered), reason="store_not_committed_in_time"
            )
            return
        builder = FrameBuilder(self.proto)
        for name, message in replies:
            builder.add(name, message)
        builder.flush()
        # Like a push, an answer sent shortly before the link ends may be lost: advertised again then.
        link.sent.append((time.monotonic(), answered))
        await self._send_frames(link, builder.frames)
        self._forget_sent(link)

    async def _send_frames(self, link: _Link, frames: list[bytes]) -> None:
        """Send frames to the peer; one that does not leave within two heartbeats means the peer
        stopped reading (its socket buffers are full): the link is cut (TimeoutError ends it, as a
        peer gone away does), counted and logged, and the dialer connects again. Otherwise a peer
        that keeps sending but never reads held the link up for good, silently, and every update
        for it was dropped once its queue was full."""
        try:
            async with asyncio.timeout(2 * self.limits.sync_heartbeat_s):
                for frame in frames:
                    await link.ws.send_bytes(frame)
        except TimeoutError:
            self.metrics.sync_stalled_links_total.labels(link.peer).inc()
            log.warning("sync_peer_stalled", peer=link.peer, queued=link.queue.qsize(), dropped=link.dropped)
            raise

    def _known_docs(self, link: _Link, entries: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
        """Entries for documents of a known kind (others are refused before anything is loaded or
        created), and not for jackpots the ledger said do not exist."""
        kept = []
        known = self.state.replica.state_vectors  # a known document's name was checked already
        for name, message in entries:
            verdict = (None if name in known else admission.check_name(name)) or self._jackpot_gone(name)
            if verdict is None:
                kept.append((name, message))
            elif protocol.parse(message)[0] != YSyncMessageType.SYNC_STEP1:
                self._refused(link, [(name, verdict)])
        return kept

    def _jackpot_gone(self, name: str) -> admission.Verdict | None:
        """A refusal for a jackpot the ledger said does not exist, unless it is due to be asked
        again: a jackpot created since is then learned (`_jackpots_to_confirm`) and admitted, not
        refused until something else at this edge happens to ask the ledger."""
        kind, _, jackpot_id = name.partition("/")
        if kind == JACKPOT and self.catalog.due(jackpot_id):
            return None
        return admission.check_jackpot_missing(name, self.catalog)

    def _jackpots_to_confirm(self, entries: list[tuple[str, bytes]]) -> list[str]:
        """Jackpots the ledger has not confirmed, or that an update shows at a newer epoch than the
        ledger's known here: they are asked of the ledger before admission."""
        out = []
        for name, message in entries:
            kind, _, jackpot_id = name.partition("/")
            if kind != JACKPOT:
                continue
            sync_type, payload = protocol.parse(message)
            known = self.catalog.epoch(jackpot_id)
            if known is None or (sync_type != YSyncMessageType.SYNC_STEP1 and _max_epoch(payload) > known):
                out.append(jackpot_id)
        return out

    def _rules(self) -> admission.Rules:
        return admission.Rules(
            self.owners,
            self.catalog,
            doc_bytes_max=self.limits.sync_doc_bytes_max,
            session_state_bytes_max=self._session_state_bytes_max,
            now=self.state.clock(),
            own_client=self.state.replica.client_id,
        )

    def _admit(self, link: _Link, rules: admission.Rules, name: str, doc: Any, update: bytes) -> admission.Verdict:
        """Admission within the peer's byte quota. Refused updates are paid for too (their trial
        cost this edge's CPU), and a peer whose bucket cannot hold an update gets no trial: a
        flood of updates admission refuses drains the peer's own quota, not this edge's loop."""
        replica, quota = self.state.replica, self._quota[link.peer]
        if not quota.holds(len(update)):
            return self._over_quota(link)
        verdict = admission.admit(name, doc, update, rules, replica.facts(name), lambda: replica.scratch(name))
        if verdict.update is None:
            if not verdict.deferred:  # deferred ones are honest: asked for again, checked then
                quota.spend(len(update))
            return verdict
        return verdict if quota.take(len(verdict.update)) else self._over_quota(link)

    def _over_quota(self, link: _Link) -> admission.Verdict:
        return admission.refuse(
            admission.PEER_QUOTA, f"{link.peer} is over its byte quota ({self.limits.sync_peer_bytes_per_s} bytes/s)"
        )

    def _refused(self, link: _Link, refused: list[tuple[str, admission.Verdict]]) -> None:
        for name, verdict in refused:
            self.metrics.sync_rejected_updates_total.labels(link.peer, verdict.reason).inc()
            if verdict.deferred or verdict.reason in ASK_AGAIN_REASONS:
                self.rounds[link.peer].ask(name)  # the peer sends it again when this edge can take it
            (log.debug if verdict.deferred else log.warning)(
                "peer update refused", peer=link.peer, doc=name[:120], reason=verdict.reason, detail=verdict.detail
            )

    def _receive_hint(self, data: str) -> None:
        try:
            names = orjson.loads(data).get("reconcile", [])
        except (orjson.JSONDecodeError, AttributeError):
            return
        if isinstance(names, list):
            self._on_hint([n for n in names[:HINT_NAMES_MAX] if isinstance(n, str)])

    def _spawn(self, coro: Any, name: str) -> None:
        self._tasks.spawn(coro, name)

    def _failed(self, task: asyncio.Task[Any], error: BaseException) -> None:
        """A one-shot task (a hint sent, a link closed) that failed: a bug is counted against
        "sync"; a peer that went away while we wrote to it is none (it was counted for life, and
        five of them turned /readyz red until a restart)."""
        if _peer_went_away(error):
            log.debug("sync task ended", task=task.get_name(), error=repr(error))
        else:
            self.health.failed("sync", error)

    def _succeeded(self, task: asyncio.Task[Any]) -> None:
        self.health.ok("sync")


def _peer_went_away(error: BaseException) -> bool:
    """The socket broke or timed out under us: the peer's doing or the network's, never a bug."""
    return isinstance(error, (aiohttp.ClientError, ConnectionError, TimeoutError))


def _max_epoch(update: bytes) -> int:
    """The highest `epoch` among the slot values an update carries (0 if none or unreadable)."""
    try:
        items = yupdate.parse(update).items
    except ValueError:
        return 0
    epochs = [v.get("epoch") for i in items for v in i.values if isinstance(v, dict)]
    return max(
        (int(e) for e in epochs if isinstance(e, (int, float)) and not isinstance(e, bool) and 0 <= e <= 2**53),
        default=0,
    )
