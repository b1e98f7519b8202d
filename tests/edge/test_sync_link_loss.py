"""What a link that ends takes with it is handed back to anti-entropy: an update the push loop took
off the queue but had not sent yet, a document evicted between load and handle, answers a slow store
held back. Each of these, before, reached the peer only when the slow backstop sweep came round."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from pycrdt import Map
from structlog.testing import capture_logs

from shared.errors import NotFound

from edge.config import Peer
from edge.crdt import protocol
from edge.jackpots import JackpotCatalog
from edge.metrics import EdgeMetrics
from edge.persist import DocumentStore
from edge.state import EdgeState
from edge.sync import SyncHub, _Link
from tests.support.edges import FAST, SilentWs, bare_hub
from tests.support.polling import eventually


async def test_an_update_taken_off_the_queue_and_not_sent_when_the_link_ends_is_handed_back():
    """The push loop takes the first update, then waits out `sync_push_interval_s` after its last
    frame to batch more: a link that ends meanwhile cancels it with the update neither queued nor
    recorded as sent."""
    hub = bare_hub(sync_push_interval_s=5.0)
    ws = SilentWs()
    link = _Link("us", ws, queue_max=10, level=2)
    link.last_push = time.monotonic()  # a frame just went out: the next waits
    sender = asyncio.create_task(hub._send_loop(link))
    link.queue.put_nowait(("session/p1/g1", b"update"))
    for _ in range(100):  # bounded: the loop takes it at its next turn
        await asyncio.sleep(0)
        if link.queue.empty():
            break
    assert link.queue.empty()
    sender.cancel()
    await asyncio.gather(sender, return_exceptions=True)
    assert not ws.frames, "cancelled in the wait, before sending"
    assert link.recently_sent(0.0) == ["session/p1/g1"]


@pytest.fixture
async def eu(tmp_path: Path) -> AsyncIterator[SyncHub]:
    """A hub of edge eu over a real store, with one document (eu's own write), never started."""
    metrics = EdgeMetrics(CollectorRegistry())
    state = EdgeState("eu", 11, 100, DocumentStore(tmp_path / "eu.db", client_id=11), metrics, time.time)
    await state.open()
    await state.doc("session/p1/g1")
    state.write("session/p1/g1", lambda d: d.get("slots", type=Map).__setitem__("eu", {"state": "{}", "ts": 1.0}))
    hub = SyncHub("eu", (Peer("us", "http://127.0.0.1:9"),), "t", state, FAST, metrics, lambda names: None)
    try:
        yield hub
    finally:
        await state.store.close()


def _advertised_by_us(name: str) -> bytes:
    """A frame of peer us's round: its (empty) state of `name`."""
    return protocol.encode_frame([(name, protocol.step1(protocol.EMPTY_STATE_VECTOR))])


async def test_an_answer_sent_shortly_before_a_link_ended_is_advertised_again(eu: SyncHub):
    """eu answered us's STEP1 with what us lacked; the link ended (us killed before it stored it,
    or the frame lost with the link). us's round does not bring it again (a restarted us knows
    nothing of a document it never stored), and eu's document did not change: eu's next round must
    advertise it, as it does a live push sent then."""
    ws = SilentWs()
    link = _Link("us", ws, queue_max=10, level=2)
    await eu._receive(link, _advertised_by_us("session/p1/g1"))
    assert ws.frames, "eu answered"
    assert "session/p1/g1" in link.recently_sent(link.last_heard - eu._rewind_margin_s)


async def test_answers_a_slow_store_held_back_are_asked_for_in_the_next_round(eu: SyncHub, monkeypatch):
    """Answers wait for the store (an edge sends only what it stored); when that wait times out,
    they were dropped, and neither side's round named the document again."""

    async def slow(timeout_s: float) -> bool:
        return False

    replica, rounds = eu.state.replica, eu.rounds["us"]
    for i in range(2, 40):  # other documents, so that a slow sweep page is not this one
        replica.note_state(f"session/p{i}/g1", replica.state_vectors["session/p1/g1"])
    for _ in range(3):  # the first sweep, and the slow sweep's first pages (this document's among them)
        rounds.next_round(replica, time.monotonic(), peer="us", trusts_pushes=True)
    monkeypatch.setattr(eu.state.store, "barrier", slow)
    ws = SilentWs()
    link = _Link("us", ws, queue_max=10, level=2)
    await eu._receive(link, _advertised_by_us("session/p1/g1"))
    assert not ws.frames  # held back: nothing unstored leaves the edge
    assert eu.metrics.sync_answers_held_back_total.labels("us")._value.get() == 1
    assert "session/p1/g1" in rounds.next_round(replica, time.monotonic(), peer="us", trusts_pushes=True)
    assert "session/p1/g1" not in rounds.next_round(replica, time.monotonic(), peer="us", trusts_pushes=True)


class _Ledger:
    """The ledger as the jackpot catalog sees it: `jackpot/mega` exists once `created`."""

    deadline_s = 1.0

    def __init__(self) -> None:
        self.created, self.asked = False, 0

    async def read(self, path: str, what: str, model: Any, deadline_s: float) -> Any:
        self.asked += 1
        if not self.created:
            raise NotFound(f"{path} not found")
        return SimpleNamespace(epoch=1)


async def test_a_jackpot_the_ledger_once_said_was_missing_is_asked_again_when_due(eu: SyncHub):
    """A 404 marked the id missing; the jackpot was created at the ledger since. A peer's entries for
    it were dropped before anything asked the ledger again, so this edge refused them for as long as
    nothing else here looked the jackpot up."""
    now = [0.0]
    ledger = _Ledger()
    catalog = JackpotCatalog(ledger, lookup_interval_s=5.0, clock=lambda: now[0])  # type: ignore[arg-type]  # a stand-in ledger
    hub = SyncHub("eu", (Peer("us", "http://127.0.0.1:9"),), "t", eu.state, FAST, eu.metrics, None, catalog=catalog)
    await catalog.learn(["mega"])
    assert catalog.missing("mega") and ledger.asked == 1
    ledger.created = True
    entry = [("jackpot/mega", protocol.step1(protocol.EMPTY_STATE_VECTOR))]
    assert hub._known_docs(_Link("us", SilentWs(), queue_max=10), entry) == [], "asked recently: still missing"
    now[0] = 6.0  # the lookup is due again
    assert hub._known_docs(_Link("us", SilentWs(), queue_max=10), entry) == entry
    await catalog.learn(hub._jackpots_to_confirm(entry))
    assert catalog.epoch("mega") == 1 and not catalog.missing("mega") and ledger.asked == 2


async def test_a_link_that_comes_up_and_is_lost_is_logged_once_each(edges):
    """A lost link was logged at debug only: an operator reading the log at info saw nothing of a
    region cut off (only the gauge `edge_sync_peer_up` moved)."""
    with capture_logs() as lines:
        e = await edges("eu", "us")

        async def up() -> bool:
            return {line.get("peer") for line in lines if line["event"] == "sync_link_up"} == {"eu", "us"}

        await eventually(up)
        await e.stop("us")

        async def lost() -> bool:
            return any(line["event"] == "sync_link_lost" and line["peer"] == "us" for line in lines)

        await eventually(lost)
    [lost_line] = [line for line in lines if line["event"] == "sync_link_lost" and line["peer"] == "us"]
    assert lost_line["log_level"] == "warning" and lost_line["up_s"] > 0


async def test_a_peer_that_stops_reading_has_its_link_cut_counted_and_logged(edges):
    """A peer that sends now and then (so no heartbeat ever probes it) but never reads kept its
    link up for good: sends blocked on full socket buffers, every update for it was dropped once
    its queue was full, and no metric or log said so."""
    from edge.app_keys import HUB
    from tests.support.hostile_peer import Hostile

    e = await edges("apac", "eu")
    await e.stop("apac")
    await e.stop("eu")
    await e.start("eu", limits=dataclasses.replace(e.config("eu").limits, sync_heartbeat_s=0.5))
    hub = e.servers["eu"].app[HUB]
    apac = Hostile("apac")
    assert await apac.connect(e.url("eu"), level=2) == "eu"
    await eventually(lambda: asyncio.sleep(0, result="apac" in hub.links), timeout_s=5)
    link = hub.links["apac"]
    stop = asyncio.Event()

    async def keep_sending() -> None:  # data in: aiohttp's heartbeat never pings such a peer
        while not stop.is_set():
            await apac.send_text({"reconcile": []})
            await asyncio.sleep(0.2)

    sending = asyncio.create_task(keep_sending())
    try:
        # Far more than the socket buffers hold, never read:
        with capture_logs() as lines, pytest.raises(TimeoutError):
            await asyncio.wait_for(hub._send_frames(link, [b"\x00" * 1_000_000] * 200), 30)
        assert hub.metrics.sync_stalled_links_total.labels("apac")._value.get() == 1
        assert [line["peer"] for line in lines if line["event"] == "sync_peer_stalled"] == ["apac"]
    finally:
        stop.set()
        await sending
        await apac.close()


async def test_own_updates_past_a_full_send_queue_are_counted_and_left_to_anti_entropy(edges):
    """An update that does not fit the peer's send queue is not pushed live: it used to be counted
    only on the link (and logged if the link stalled), so a link that stays up but cannot keep up
    showed nothing. Each one is counted per peer, and its document is advertised next round."""
    from edge.app_keys import HUB
    from tests.support.hostile_peer import Hostile

    e = await edges("apac", "eu")
    await e.stop("apac")
    await e.stop("eu")
    await e.start("eu", limits=dataclasses.replace(e.config("eu").limits, sync_queue_max=2))
    hub = e.servers["eu"].app[HUB]
    dropped = hub.metrics.sync_live_updates_dropped_total.labels("apac")
    assert dropped._value.get() == 0  # the series exists before the first drop: an alert sees it rise
    apac = Hostile("apac")
    try:
        assert await apac.connect(e.url("eu"), level=2) == "eu"
        await eventually(lambda: asyncio.sleep(0, result="apac" in hub.links), timeout_s=5)
        names = [f"bonus/p{i}" for i in range(10)]
        hub.push([(name, b"\x00\x00") for name in names])  # no await: the push loop takes none off meanwhile
        assert hub.links["apac"].queue.qsize() == 2
        assert dropped._value.get() == 8 == hub.links["apac"].dropped
        assert set(names[2:]) <= set(hub.rounds["apac"]._must)  # advertised next round
    finally:
        await apac.close()
