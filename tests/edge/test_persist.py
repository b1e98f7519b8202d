"""The edge store: updates, effects and watermarks survive a reopen; compaction keeps the state."""

import asyncio
import sqlite3
from pathlib import Path

import pytest

from edge.crdt import Effect
from edge.crdt.replica import Replica
from edge.crdt.slots import JackpotSlot, jackpot_slots, write_slot
from edge.persist import Append, DocumentStore, StoreLimits

JP = "jackpot/mega"


async def test_store_reopens_with_documents_effects_and_watermarks_and_compacts(tmp_path):
    durable = []
    store = DocumentStore(
        tmp_path / "edge.db", client_id=1, limits=StoreLimits(compact_after=10), on_durable=durable.extend
    )
    await store.open()
    r = Replica("eu", 1, 4, pinned=store.pending)
    r.install(JP, [])
    for i in range(1, 26):
        update = r.write_local(JP, lambda d, i=i: write_slot(d, "eu", JackpotSlot(1, i, 0, 5, "EUR", 0.0).encode()))
        effect = Effect(JP, 100 + i, {"epoch": 1, "amount_minor": 1}) if i % 5 == 0 else None
        store.append(Append(JP, update, r.state_vectors[JP], (effect,) if effect else (), local=i % 2 == 0))
    store.raise_watermark(JP, 110)
    assert await store.barrier(timeout_s=10)
    assert len(durable) == 12 and not store.pending(JP), "local updates are handed over only once committed"
    await store.close()

    store2 = DocumentStore(tmp_path / "edge.db", client_id=1, limits=StoreLimits(compact_after=10))
    loaded = await store2.open()
    try:
        assert loaded.docs == [(JP, r.state_vectors[JP])]
        assert sorted(e.sequence for e in loaded.effects) == [115, 120, 125]  # <= 110 forgotten
        assert loaded.watermarks == {JP: 110}
        rows = await store2.load_doc(JP)
        assert len(rows) <= 11, "compaction bounds the rows of a document"
        r2 = Replica("eu", 1, 4)
        assert jackpot_slots(r2.install(JP, rows))["eu"].p == 25
    finally:
        await store2.close()


async def test_a_batch_is_one_hop_and_the_connection_runs_in_wal(tmp_path, monkeypatch):
    store = DocumentStore(tmp_path / "edge.db", client_id=1)
    await store.open()
    try:
        db = store._db
        pragmas = await db.run(
            lambda conn: (
                conn.execute("PRAGMA journal_mode").fetchone()[0],
                conn.execute("PRAGMA synchronous").fetchone()[0],
            )
        )
        assert pragmas == ("wal", 1)  # NORMAL: a commit in WAL mode survives the death of the process
        hops = []
        original = db.run

        async def counted(fn, *args, **kw):
            hops.append(fn.__name__)
            return await original(fn, *args, **kw)

        monkeypatch.setattr(db, "run", counted)
        r = Replica("eu", 1, 4, pinned=store.pending)
        r.install(JP, [])
        for i in range(1, 6):
            update = r.write_local(JP, lambda d, i=i: write_slot(d, "eu", JackpotSlot(1, i, 0, 5, "EUR", 0.0).encode()))
            store.append(Append(JP, update, r.state_vectors[JP], (Effect(JP, 100 + i, {"amount_minor": 1}),)))
        store.raise_watermark(JP, 102)
        assert await store.barrier(timeout_s=10)
        assert hops == ["_commit_batch"], "updates, documents, effects and watermarks: one unit of work"
    finally:
        await store.close()


async def test_a_barrier_cancelled_as_its_commit_lands_is_cancelled(tmp_path: Path) -> None:
    """`asyncio.wait_for` on Python 3.11 returns the inner result when the cancellation of its
    caller meets the inner wait's completion: a sync task stopped at that moment went on, and
    the edge's stop waited for it for ever."""
    store = DocumentStore(tmp_path / "edge.db", 1)
    await store.open()
    try:
        store._enqueued += 1  # one write queued (the writer is not needed: the commit is played below)
        waiting = asyncio.create_task(store.barrier(5))
        await asyncio.sleep(0)  # it waits for that write's commit
        async with store._committed_cond:  # the commit lands, as `_commit` reports it
            store._committed += 1
            store._committed_cond.notify_all()
        waiting.cancel()  # and the task is stopped at that very moment
        with pytest.raises(asyncio.CancelledError):
            await waiting
    finally:
        store._committed = store._enqueued
        await store.close()


async def test_a_full_disk_holds_the_writes_until_it_has_room_again_and_is_counted(tmp_path, monkeypatch):
    """The writer died at the first failed commit and was never restarted: every later save was
    refused 503 for good, even once the disk had room, and no metric said why."""
    from prometheus_client import CollectorRegistry

    import edge.persist
    from edge.health import TaskHealth
    from edge.metrics import EdgeMetrics

    metrics = EdgeMetrics(CollectorRegistry())
    health = TaskHealth(metrics, unready_after=2, tasks=(edge.persist.STORE_WRITER,))
    store = DocumentStore(tmp_path / "edge.db", client_id=1, health=health)
    await store.open()
    failures = 3
    commit_batch = edge.persist._commit_batch

    def commit_on_a_full_disk(*args):  # type: ignore[no-untyped-def]  # the SQLite thread's unit
        nonlocal failures
        if failures:
            failures -= 1
            raise sqlite3.OperationalError("database or disk is full")
        return commit_batch(*args)

    monkeypatch.setattr(edge.persist, "_commit_batch", commit_on_a_full_disk)
    monkeypatch.setattr(edge.persist, "STORE_RETRY_FIRST_S", 0.01)
    r = Replica("eu", 1, 4, pinned=store.pending)
    r.install(JP, [])
    update = r.write_local(JP, lambda d: write_slot(d, "eu", JackpotSlot(1, 5, 0, 5, "EUR", 0.0).encode()))
    store.append(Append(JP, update, r.state_vectors[JP], (), local=True))
    try:
        assert await store.barrier(timeout_s=10), "stored once the disk has room"
        assert store.failed is None and health.failing() == []
        failed = metrics.background_failures_total.labels(edge.persist.STORE_WRITER)._value.get()
        assert failed == 3
    finally:
        await store.close()
    reopened = DocumentStore(tmp_path / "edge.db", client_id=1)
    await reopened.open()
    try:
        assert jackpot_slots(Replica("eu", 1, 4).install(JP, await reopened.load_doc(JP)))["eu"].p == 5
    finally:
        await reopened.close()


async def test_closing_while_the_disk_refuses_every_commit_ends(tmp_path, monkeypatch):
    """A writer retrying a refused commit behind a full queue: close waited for room to queue its
    end, which the writer never made, so the edge never stopped."""
    from prometheus_client import CollectorRegistry

    import edge.persist
    from edge.health import TaskHealth
    from edge.metrics import EdgeMetrics

    health = TaskHealth(EdgeMetrics(CollectorRegistry()), unready_after=2, tasks=(edge.persist.STORE_WRITER,))
    store = DocumentStore(tmp_path / "edge.db", client_id=1, limits=StoreLimits(queue_max=2), health=health)
    await store.open()

    def full_disk(*args):  # type: ignore[no-untyped-def]  # the SQLite thread's unit
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(edge.persist, "_commit_batch", full_disk)
    monkeypatch.setattr(edge.persist, "STORE_RETRY_FIRST_S", 0.01)
    r = Replica("eu", 1, 4, pinned=store.pending)
    r.install(JP, [])
    for i in range(3):  # one in the writer's hands, two filling the queue
        update = r.write_local(JP, lambda d, i=i: write_slot(d, "eu", JackpotSlot(1, i, 0, 5, "EUR", 0.0).encode()))
        store.append(Append(JP, update, r.state_vectors[JP], (), local=True))
        await asyncio.sleep(0.05)
    await asyncio.wait_for(store.close(), 5)
    assert isinstance(store.failed, sqlite3.OperationalError)
