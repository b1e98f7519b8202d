"""The edge's CRDT state at run time: documents loaded on demand, writes persisted, effects booked.

`EdgeState` ties the pure replica and effect book to the store and the metrics. Callers first
`await doc(name)` (load once, single flight), then call the synchronous `write`/`apply_remote`
with no await in between, so a decision and the write it leads to see the same state.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any

from pycrdt import Doc

from shared.errors import Unavailable

from edge.crdt import Effect, EffectBook, Replica
from edge.crdt.identity import after_stored
from edge.crdt.protocol import decode_state_vector
from edge.crdt.slots import doc_kind
from edge.metrics import EdgeMetrics
from edge.persist import Append, DocumentStore

CHILDREN_LIST_MAX = 16  # children kept in a list (membership by scan) before a set
DOC_LOOKS_MAX = 8  # a caller that waited on another's load looks this often before giving up (503)


class EdgeState:
    def __init__(
        self,
        edge_id: str,
        client_id: int,
        docs_live_max: int,
        store: DocumentStore,
        metrics: EdgeMetrics,
        clock: Callable[[], float],
    ) -> None:
        self.edge_id = edge_id
        self.store = store
        self.metrics = metrics
        self.clock = clock  # wall time in seconds: origin write times must compare across edges
        # Documents whose live state holds changes the store refused (its queue was full): kept
        # live (evicted, they would be reloaded without them while the replica's state vector
        # still claims them), and stored whole at the next write that gets through (`_stored`).
        self.unstored: set[str] = set()
        # The effects booked in those documents, stored with them: an effect in a stored document
        # but not in the stored book would be applied again after a restart.
        self._unstored_effects: dict[str, list[Effect]] = {}
        # Effects of money answers waiting for their document's next write, which takes all of
        # them at once (the service's, at the next turn of the loop): pinned live until then.
        self.effects_waiting: dict[str, list[tuple[str, Effect, str | None]]] = {}  # (op, effect, currency)
        self.replica = Replica(edge_id, client_id, docs_live_max, pinned=self._pinned)
        self.book = EffectBook()
        self._loading: dict[str, asyncio.Future[Doc]] = {}
        # "session/p1" -> ["g1"], "jackpot" -> {"mega"}: a short list (most players play a few
        # games; a one-element set costs four times as much, and a million players have one each),
        # a set once it grows past CHILDREN_LIST_MAX. Child names are interned (game ids repeat).
        self._children: dict[str, list[str] | set[str]] = {}
        self._counters: dict[tuple[str, str], Any] = {}  # (kind, origin) -> edge_crdt_updates_total child
        self._lag: dict[str, Any] = {}  # origin edge -> edge_sync_lag_seconds child

    async def open(self) -> None:
        loaded = await self.store.open()
        stored_clients: set[int] = set()
        for name, state_vector in loaded.docs:
            self.replica.note_state(name, state_vector)
            self._index(name)
            stored_clients.update(decode_state_vector(state_vector))
        self.book.load(loaded.effects, loaded.watermarks)
        # Nothing is live yet: the replica may still take a later identity than it was given.
        self.replica.client_id = self.store.client_id = after_stored(self.replica.client_id, stored_clients)

    # --- documents ----------------------------------------------------------------------------

    async def doc(self, name: str) -> Doc:
        """The live document `name`, loaded if it is not: live when this returns, so a caller's
        synchronous use right after (no await between) finds it. A caller that waited on another
        one's load resumes later: the document may have been evicted meanwhile, so it looks again."""
        for _ in range(DOC_LOOKS_MAX):
            doc = self.replica.live(name)
            if doc is not None:
                return doc
            pending = self._loading.get(name)
            if pending is None:
                return await self._load(name)
            await asyncio.shield(pending)
        raise Unavailable(f"document {name} is evicted as fast as it is loaded", code="storage_unavailable")

    async def _load(self, name: str) -> Doc:
        future: asyncio.Future[Doc] = asyncio.get_running_loop().create_future()
        self._loading[name] = future
        try:
            updates = await self.store.load_doc(name) if self.replica.known(name) else []
            doc = self.replica.live(name) or self.replica.install(name, updates)
            future.set_result(doc)
            return doc
        except BaseException as e:
            future.set_exception(e)
            future.exception()  # retrieved here: waiters re-raise it themselves
            raise
        finally:
            del self._loading[name]

    def children(self, parent: str) -> list[str]:
        return sorted(self._children.get(parent, ()))

    def _index(self, name: str) -> None:
        parent, _, child = name.rpartition("/")
        known = self._children.get(parent)
        if known is None:
            self._children[parent] = [sys.intern(child)]
        elif child not in known:
            if isinstance(known, set):
                known.add(sys.intern(child))
            elif len(known) < CHILDREN_LIST_MAX:
                known.append(sys.intern(child))
            else:
                self._children[parent] = {*known, sys.intern(child)}

    # --- changes ------------------------------------------------------------------------------

    def write(self, name: str, write: Callable[[Doc], None], effects: tuple[Effect, ...] = ()) -> None:
        """A local write (the document is live); with `effects`, booked and stored with it."""
        update = self.replica.write_local(name, write)
        for effect in effects:
            self.book.record(effect)
        if update or effects:
            self._stored(name, update or b"\x00\x00", effects, local=True)
            self._updates_counter(doc_kind(name), "local").inc()

    def remote_changed(self, name: str, update: bytes) -> None:
        """Bytes a peer's update changed here (already applied to the live document)."""
        self._stored(name, update, (), local=False)
        self._updates_counter(doc_kind(name), "remote").inc()

    def observe_arrivals(self, arrived: list[tuple[str, float]]) -> None:
        now = self.clock()
        for origin, ts in arrived:
            lag = self._lag.get(origin)
            if lag is None:
                lag = self._lag[origin] = self.metrics.sync_lag_seconds.labels(origin)
            lag.observe(max(0.0, now - ts))

    def _updates_counter(self, kind: str, origin: str) -> Any:
        """The labelled child, looked up once (`labels` takes a lock and checks the labels at every
        call, on every update)."""
        counter = self._counters.get((kind, origin))
        if counter is None:
            counter = self._counters[kind, origin] = self.metrics.crdt_updates_total.labels(kind, origin)
        return counter

    def _pinned(self, name: str) -> bool:
        return self.store.pending(name) or name in self.unstored or name in self.effects_waiting

    def _stored(self, name: str, update: bytes, effects: tuple[Effect, ...], local: bool) -> None:
        """Queue a change for the store; Unavailable when its queue is full (the change stays in
        the live document, which is kept live and stored whole once the store takes writes again)."""
        self._index(name)
        try:
            if self.unstored:
                self._store_unstored()
            sv = self.replica.state_vectors.get(name, b"\x00")
            self.store.append(Append(name, update, sv, effects, local=local))
        except Unavailable:
            self.unstored.add(name)
            if effects:
                self._unstored_effects.setdefault(name, []).extend(effects)
            raise

    def _store_unstored(self) -> None:
        """Queue each document holding refused changes whole (its full update: every change,
        the refused ones included), while the store takes them. As a local write: own writes
        among them were never pushed (pushes follow the commit), so it goes to the peers once
        stored, and answers wait for it."""
        for name in list(self.unstored):
            doc = self.replica.live(name)
            if doc is not None:  # (pinned: always live)
                sv = self.replica.state_vectors.get(name, b"\x00")
                effects = tuple(self._unstored_effects.get(name, ()))
                self.store.append(Append(name, doc.get_update(), sv, effects, local=True))  # Unavailable: later
            self.unstored.discard(name)
            self._unstored_effects.pop(name, None)
