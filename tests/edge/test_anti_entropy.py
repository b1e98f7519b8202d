"""Anti-entropy costs what changed: after the first sweep, a round advertises the documents changed
since the peer's last round plus one small sweep page, not every document the edge holds; a link
that ends re-advertises what may have been lost with it; old-style peers still converge."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import aiohttp
from pycrdt import Map, YSyncMessageType

from edge.crdt import protocol
from edge.crdt.anti_entropy import HISTORY_ROUNDS_MAX, PeerRounds
from edge.crdt.replica import Replica
from edge.http import SERVICE
from tests.support.crdt_network import anti_entropy
from tests.support.edges import FAST
from tests.support.hostile_peer import Hostile


def session(i: int) -> dict:
    return {"state": f'{{"i": {i}}}', "updated_at": "t", "ts": 5.0 + i}


def _write(replica: Replica, name: str, value: int) -> None:
    if replica.live(name) is None:
        replica.install(name, [])
    replica.write_local(name, lambda d: d.get("slots", type=Map).__setitem__("eu", value))


def _replica(docs: int) -> Replica:
    r = Replica("eu", 11, docs_live_max=docs + 10)
    for i in range(docs):
        _write(r, f"bonus/p{i}", i)
    return r


def test_after_the_first_sweep_a_round_advertises_what_changed_and_a_small_page():
    r = _replica(2000)
    rounds = PeerRounds(sweep_docs=10, catch_up_docs=500)
    seen: set[str] = set()
    for i in range(4):
        names = rounds.next_round(r, float(i))
        assert len(names) == 500
        seen.update(names)
    assert seen == set(r.state_vectors)  # the first sweep covered every document
    _write(r, "bonus/p7", -1)
    _write(r, "bonus/new", 1)
    names = rounds.next_round(r, 5.0)
    assert rounds.swept
    assert names[:2] == ["bonus/p7", "bonus/new"] and len(names) <= 2 + 10
    assert len(rounds.next_round(r, 6.0)) == 10  # nothing changed: the backstop page only


def test_changed_since_costs_the_changes_and_lists_each_document_once_in_change_order():
    r = _replica(50)
    mark = r.position
    _write(r, "bonus/p3", 100)
    _write(r, "bonus/p1", 100)
    _write(r, "bonus/p3", 101)
    assert r.changed_since(mark) == ["bonus/p1", "bonus/p3"]
    assert r.changed_since(r.position) == []


def test_a_link_that_ends_re_advertises_what_changed_shortly_before_the_peer_was_last_heard():
    r = _replica(100)
    rounds = PeerRounds(sweep_docs=1, catch_up_docs=100)
    rounds.next_round(r, 0.0)  # catch-up: all 100
    rounds.next_round(r, 1.0)
    _write(r, "bonus/p5", -5)
    assert "bonus/p5" in rounds.next_round(r, 2.0)  # sent at t=2, maybe lost with the link
    rounds.next_round(r, 3.0)
    rounds.link_ended(last_heard=3.5, margin_s=1.0)  # rewinds to the round of t=2
    assert rounds.next_round(r, 10.0)[0] == "bonus/p5"
    assert "bonus/p5" not in rounds.next_round(r, 11.0)[:-1]  # once only (the last one is the sweep page)


def test_a_link_that_ends_during_the_first_sweep_resumes_it_where_it_may_have_been_lost():
    r = _replica(300)
    rounds = PeerRounds(sweep_docs=1, catch_up_docs=100)
    first = rounds.next_round(r, 0.0)
    second = rounds.next_round(r, 1.0)
    rounds.next_round(r, 2.0)
    rounds.link_ended(last_heard=1.5, margin_s=0.0)  # heard after the first page only
    again = rounds.next_round(r, 5.0)
    assert again == second and set(again).isdisjoint(first)
    assert not rounds.swept


def test_a_rewind_older_than_the_history_starts_a_full_sweep_again():
    r = _replica(20)
    rounds = PeerRounds(sweep_docs=1, catch_up_docs=20)
    for i in range(HISTORY_ROUNDS_MAX + 5):
        rounds.next_round(r, float(i))
    rounds.link_ended(last_heard=0.0, margin_s=1.0)
    assert len(rounds.next_round(r, 1e6)) == 20 and not rounds.swept


def test_an_old_peer_sending_every_state_vector_converges_with_a_new_one():
    """The wire format did not change: an old-style full exchange still converges."""
    a, b = _replica(30), Replica("us", 12, docs_live_max=100)
    _write(b, "bonus/p1", 555)
    anti_entropy(a, b)
    assert a.state_vectors == b.state_vectors


async def test_an_edge_with_many_documents_advertises_only_changes_after_its_first_sweep(edges):
    docs = 1500
    e = await edges("apac", "eu")
    await e.stop("apac")
    await e.stop("eu")
    limits = dataclasses.replace(FAST, anti_entropy_sweep_docs=16, anti_entropy_catch_up_docs=512)
    server = await e.start("eu", limits=limits)
    state = server.app[SERVICE].state
    for i in range(docs):  # game sessions: nothing else on the edge rewrites them
        name = f"session/p{i}/g1"
        await state.doc(name)
        state.write(name, lambda d, i=i: d.get("slots", type=Map).__setitem__("eu", session(i)))
    apac = Hostile("apac")
    assert await apac.connect(e.url("eu")) == "eu"
    try:
        per_round: list[set[str]] = []
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline and len(per_round) < 7:
            assert apac.ws is not None
            msg = await asyncio.wait_for(apac.ws.receive(), 3)
            assert msg.type == aiohttp.WSMsgType.BINARY
            entries = protocol.decode_frame(msg.data, protocol.Limits())
            step1 = {n for n, m in entries if protocol.parse(m)[0] == YSyncMessageType.SYNC_STEP1}
            if step1:
                per_round.append(step1)
            if len(per_round) == 4:  # the first sweep is done: change one document
                state.write("session/p42/g1", lambda d: d.get("slots", type=Map).__setitem__("eu", session(-1)))
        assert set().union(*per_round[:3]) == set(state.replica.state_vectors)  # 3 x 512 >= 1500
        later = per_round[4:]
        assert later and all(len(r) <= 16 + 1 for r in later)  # not 1500 per round
        assert any("session/p42/g1" in r for r in later)
    finally:
        await apac.close()
