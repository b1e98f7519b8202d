"""A change the edge's store refuses (its queue full) is not lost: the document holding it stays
live, and it is stored whole with the next change the store takes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from shared.errors import Unavailable

from edge.crdt import Effect
from edge.crdt.replica import Replica
from edge.crdt.slots import SessionRecord, slots, write_slot
from edge.metrics import EdgeMetrics
from edge.persist import DocumentStore, Loaded, StoreLimits
from edge.state import EdgeState

DOCS = [f"session/p{i}/g1" for i in range(6)]


def record(i: int) -> dict:
    return SessionRecord(json.dumps({"i": i}), "2027-01-15T10:00:00Z", 1.8e9 + i).encode()


async def held_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, docs_live_max: int
) -> tuple[DocumentStore, EdgeState, asyncio.Event]:
    """An edge state on a store whose queue holds two writes and whose writer holds each commit
    until the event is set: the store refuses a fourth write."""
    store = DocumentStore(tmp_path / "edge.db", 7, limits=StoreLimits(queue_max=2))
    state = EdgeState("eu", 7, docs_live_max, store, EdgeMetrics(CollectorRegistry()), time.time)
    await state.open()
    held = asyncio.Event()
    commit = store._commit

    async def held_commit(ops: list) -> None:
        await held.wait()
        await commit(ops)

    monkeypatch.setattr(store, "_commit", held_commit)
    return store, state, held


async def released_and_reopened(
    tmp_path: Path, store: DocumentStore, state: EdgeState, held: asyncio.Event, refused: str
) -> tuple[Loaded, list[bytes]]:
    """The held commits let go, then the next change the store takes (which stores the refused
    document whole); then the store reopened: what it loads, and the refused document's rows."""
    try:
        held.set()
        assert await store.barrier(5)
        state.write(DOCS[0], lambda d: write_slot(d, "eu", record(9)))
        assert state.unstored == set()
        assert await store.barrier(5)
    finally:
        held.set()
        await store.close()
    reopened = DocumentStore(tmp_path / "edge.db", 7)
    loaded = await reopened.open()
    try:
        return loaded, await reopened.load_doc(refused)
    finally:
        await reopened.close()


async def test_a_change_the_store_refused_keeps_its_document_live_and_is_stored_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, state, held = await held_store(tmp_path, monkeypatch, docs_live_max=4)
    peer = Replica("us", 2, 8)
    refused = DOCS[3]
    try:
        for i, name in enumerate(DOCS[:4]):  # the writer holds the first, the queue the next two
            peer.install(name, [])
            update = peer.write_local(name, lambda d, i=i: write_slot(d, "us", record(i)))
            await state.doc(name)
            changed, _ = state.replica.apply_remote(name, update, source="us")
            if name != refused:
                state.remote_changed(name, changed)
                await asyncio.sleep(0)  # the writer takes it off the queue (and holds it)
            else:
                with pytest.raises(Unavailable):
                    state.remote_changed(name, changed)
        assert state.unstored == {refused}
        for name in DOCS[4:]:  # more documents than may be live: the refused one is not evicted
            await state.doc(name)
        assert state.replica.live(refused) is not None
        await state.doc(DOCS[0])
    finally:
        _, rows = await released_and_reopened(tmp_path, store, state, held, refused)
    assert slots(Replica("eu", 9, 4).install(refused, rows)).get("us") == record(3)


async def test_an_effect_the_store_refused_is_stored_with_its_document_so_a_restart_does_not_apply_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The effect is booked in memory when its write is refused; the stored book must hold it once
    the document holding its delta is stored whole, or a restart would apply it a second time."""
    store, state, held = await held_store(tmp_path, monkeypatch, docs_live_max=8)
    refused, effect = DOCS[3], Effect(DOCS[3], 42, {"amount_minor": 500})
    try:
        for i, name in enumerate(DOCS[:3]):  # the writer holds the first, the queue the next two
            await state.doc(name)
            state.write(name, lambda d, i=i: write_slot(d, "eu", record(i)))
            await asyncio.sleep(0)
        await state.doc(refused)
        with pytest.raises(Unavailable):
            state.write(refused, lambda d: write_slot(d, "eu", record(3)), (effect,))
        assert not state.book.should_apply(refused, 42), "booked in memory: this process does not apply it again"
    finally:
        loaded, rows = await released_and_reopened(tmp_path, store, state, held, refused)
    assert slots(Replica("eu", 9, 4).install(refused, rows)).get("eu") == record(3)
    assert effect in loaded.effects, "the document carries the effect's delta, so its book must too"
