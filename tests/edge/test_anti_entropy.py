"""Anti-entropy costs what changed: after the first sweep, a round advertises the documents changed
since the peer's last round plus one small sweep page, not every document the edge holds; a link
that ends re-advertises what may have been lost with it; old-style peers still converge."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import aiohttp
from pycrdt import Doc, Map, YSyncMessageType

from shared.web import REGISTRY_KEY

from edge.config import Peer
from edge.crdt import protocol
from edge.crdt.anti_entropy import HISTORY_ROUNDS_MAX, QUIET_WAIT_ROUNDS_MAX, PeerRounds
from edge.crdt.exchange import handle
from edge.crdt.replica import Replica
from edge.http import SERVICE
from edge.sync import SyncHub
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

    def change_after_sweep(n: int) -> None:
        if n == 4:  # the first sweep is done: change one document
            state.write("session/p42/g1", lambda d: d.get("slots", type=Map).__setitem__("eu", session(-1)))

    try:
        per_round = await _step1_rounds(apac, 7, change_after_sweep)
        assert set().union(*per_round[:3]) == set(state.replica.state_vectors)  # 3 x 512 >= 1500
        later = per_round[4:]
        assert later and all(len(r) <= 16 + 1 for r in later)  # not 1500 per round
        assert any("session/p42/g1" in r for r in later)
    finally:
        await apac.close()


def _from_peer(replica: Replica, name: str, peer: str, value: int, client_id: int) -> None:
    """`peer`'s write of its own slot in `name`, applied to `replica` as sent by `peer`."""
    source = Replica(peer, client_id, docs_live_max=10)
    source.install(name, [replica.diff_for(name, b"\x00")] if replica.live(name) is not None else [])
    update = source.write_local(name, lambda d: d.get("slots", type=Map).__setitem__(peer, value))
    if replica.live(name) is None:
        replica.install(name, [])
    assert replica.apply_remote(name, update, source=peer)[0]


def test_a_round_leaves_out_what_the_peer_holds_and_keeps_what_it_may_lack():
    r = _replica(10)
    rounds = PeerRounds(sweep_docs=1, catch_up_docs=10)
    rounds.next_round(r, 0.0)  # the first sweep
    sweep = rounds.next_round(r, 1.0)  # (one page of the slow sweep from now on)
    _from_peer(r, "bonus/p1", "us", 1, 21)  # only from us: us holds it
    _write(r, "bonus/p2", 2)  # only this edge's own write: pushed to us live
    _from_peer(r, "bonus/p3", "apac", 3, 31)  # from apac: us may lack it
    _from_peer(r, "bonus/p4", "us", 4, 22)
    _write(r, "bonus/p4", 4)  # us's update, then an own write: us holds both, but a run of own
    # writes that began after the round does not say what came before it: advertised (rare, harmless)
    _write(r, "bonus/p5", 5)
    _from_peer(r, "bonus/p5", "apac", 5, 32)  # an own write, then apac's: us may lack apac's
    trusting = PeerRounds(sweep_docs=1, catch_up_docs=10)
    trusting.position, trusting.catching_up = rounds.position, False
    names = trusting.next_round(r, 2.0, peer="us", trusts_pushes=True)
    assert [n for n in names if n not in sweep][:3] == ["bonus/p3", "bonus/p4", "bonus/p5"]
    assert {"bonus/p1", "bonus/p2"}.isdisjoint(names[:-1])
    # An older peer is not trusted to ask again for what it refused: own writes are advertised.
    names = rounds.next_round(r, 2.0, peer="us", trusts_pushes=False)
    assert names[:4] == ["bonus/p2", "bonus/p3", "bonus/p4", "bonus/p5"] and "bonus/p1" not in names[:-1]


def test_a_push_that_may_be_lost_and_a_document_asked_for_go_into_the_next_round():
    r = _replica(10)
    rounds = PeerRounds(sweep_docs=1, catch_up_docs=10)
    rounds.next_round(r, 0.0, peer="us", trusts_pushes=True)
    _write(r, "bonus/p2", 2)
    _write(r, "bonus/p3", 3)
    rounds.must_advertise(["bonus/p3"])  # its push was dropped (a full queue, no link)
    rounds.ask("jackpot/mega")  # refused for now, and unknown here: asked for whole
    names = rounds.next_round(r, 1.0, peer="us", trusts_pushes=True)
    assert names[0] == "bonus/p3" and names[-1] == "jackpot/mega" and "bonus/p2" not in names
    assert "jackpot/mega" not in rounds.next_round(r, 2.0, peer="us", trusts_pushes=True)  # asked once


async def _step1_rounds(peer: Hostile, rounds: int, on_round=None) -> list[set[str]]:
    """The documents each anti-entropy round advertised to `peer` (frames with STEP1 entries)."""
    per_round: list[set[str]] = []
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline and len(per_round) < rounds:
        assert peer.ws is not None
        msg = await asyncio.wait_for(peer.ws.receive(), 3)
        assert msg.type == aiohttp.WSMsgType.BINARY
        entries = protocol.decode_frame(msg.data, protocol.Limits())
        step1 = {n for n, m in entries if protocol.parse(m)[0] == YSyncMessageType.SYNC_STEP1}
        if step1:
            per_round.append(step1)
            if on_round is not None:
                on_round(len(per_round))
    return per_round


async def test_a_peer_of_sync_level_2_gets_own_writes_pushed_and_not_advertised_again(edges):
    e = await edges("apac", "eu")
    await e.stop("apac")
    await e.stop("eu")
    limits = dataclasses.replace(FAST, anti_entropy_sweep_docs=1, anti_entropy_catch_up_docs=20)
    state = (await e.start("eu", limits=limits)).app[SERVICE].state
    for i in range(20):
        name = f"session/p{i}/g1"
        await state.doc(name)
        state.write(name, lambda d, i=i: d.get("slots", type=Map).__setitem__("eu", session(i)))
    apac = Hostile("apac")
    assert await apac.connect(e.url("eu"), level=2) == "eu"

    def write_after_sweep(n: int) -> None:
        if n == 2:  # the first sweep is done: an own write of a new document, pushed live
            asyncio.get_running_loop().create_task(write_new())

    async def write_new() -> None:
        await state.doc("session/p99/g1")
        state.write("session/p99/g1", lambda d: d.get("slots", type=Map).__setitem__("eu", session(-1)))

    try:
        per_round = await _step1_rounds(apac, 6, write_after_sweep)
        assert len(per_round) == 6 and all(len(r) <= 2 for r in per_round[2:])  # the slow sweep from then on
        assert not any("session/p99/g1" in r for r in per_round[2:]), per_round  # pushed, not advertised
    finally:
        await apac.close()


async def test_an_update_refused_for_now_is_asked_for_in_the_next_round(edges):
    e = await edges("apac", "eu")
    await e.stop("apac")
    apac = Hostile("apac")
    assert await apac.connect(e.url("eu"), level=2) == "eu"
    try:
        doc = Doc(client_id=apac.client_id)
        doc.get("slots", type=Map)["apac"] = session(1)
        first = doc.get_state()
        doc.get("slots", type=Map)["apac"] = session(2)
        await apac.send([("session/p1/g1", protocol.update_message(doc.get_update(first)))])  # a gap: deferred
        per_round = await _step1_rounds(apac, 1)
        assert any("session/p1/g1" in r for r in per_round), per_round  # eu asks apac for it
        rejected = (
            e.servers["eu"]
            .app[REGISTRY_KEY]
            .get_sample_value("edge_sync_rejected_updates_total", {"peer": "apac", "reason": "unverified_gap"})
        )
        assert rejected == 1
    finally:
        await apac.close()


def test_a_run_from_the_peer_after_another_source_does_not_hide_that_other_change():
    """The peer's own update (or a pushed own write) on top of a third edge's change since the last
    round: the peer holds its own change but may lack the third edge's, so the document is advertised."""
    r = _replica(10)
    rounds = PeerRounds(sweep_docs=1, catch_up_docs=10)
    rounds.next_round(r, 0.0)  # the first sweep
    sweep = rounds.next_round(r, 1.0)
    _from_peer(r, "bonus/p6", "apac", 6, 31)
    _from_peer(r, "bonus/p6", "us", 6, 21)  # apac's change, then us's: us may lack apac's
    _from_peer(r, "bonus/p7", "apac", 7, 32)
    _write(r, "bonus/p7", 7)  # apac's change, then an own write pushed to us: us may lack apac's
    names = rounds.next_round(r, 2.0, peer="us", trusts_pushes=True)
    assert [n for n in names if n not in sweep][:2] == ["bonus/p6", "bonus/p7"], names
    # The round after: nothing changed since, and the runs now start before it: left out.
    _from_peer(r, "bonus/p6", "us", 8, 22)
    _write(r, "bonus/p7", 9)
    assert {"bonus/p6", "bonus/p7"}.isdisjoint(rounds.next_round(r, 3.0, peer="us", trusts_pushes=True)[:-1])


def test_a_slow_sweep_is_spread_over_at_least_its_rounds():
    """With few documents, a backstop page of `sweep_docs` re-advertised them all every round or
    two; spread over `sweep_rounds_min` rounds, a round carries a small page and the sweep still
    covers every document."""
    r = _replica(1400)
    rounds = PeerRounds(sweep_docs=1024, catch_up_docs=2048, sweep_rounds_min=60)
    assert len(rounds.next_round(r, 0.0)) == 1400  # the first sweep goes fast, as before
    seen: set[str] = set()
    for i in range(60):
        page = rounds.next_round(r, 1.0 + i)
        assert 1 <= len(page) <= 24  # ceil(1400 / 60), not 1024
        seen.update(page)
    assert seen == set(r.state_vectors)


def test_the_hub_spreads_a_slow_sweep_over_its_period():
    limits = dataclasses.replace(FAST, anti_entropy_interval_s=0.5, anti_entropy_sweep_period_s=30.0)
    hub = SyncHub("eu", (Peer("us", "http://127.0.0.1:9"),), "t", None, limits, None, None)  # type: ignore[arg-type]  # nothing started: no state, metrics or hint handler needed
    assert hub.rounds["us"].sweep_rounds_min == 60 and hub.rounds["us"].wait_until_quiet


def _quiet_rounds() -> tuple[Replica, PeerRounds]:
    r = _replica(10)
    rounds = PeerRounds(sweep_docs=1, catch_up_docs=10, wait_until_quiet=True)
    rounds.next_round(r, 0.0, peer="us", trusts_pushes=True)  # the first sweep
    return r, rounds


def test_a_change_the_peer_may_lack_waits_until_its_document_was_quiet_for_a_round():
    r, rounds = _quiet_rounds()
    _from_peer(r, "bonus/x1", "apac", 1, 31)  # from a third edge: us may lack it
    assert "bonus/x1" not in rounds.next_round(r, 1.0, peer="us", trusts_pushes=True)  # still changing
    _from_peer(r, "bonus/x1", "apac", 2, 31)
    assert "bonus/x1" not in rounds.next_round(r, 2.0, peer="us", trusts_pushes=True)
    assert "bonus/x1" in rounds.next_round(r, 3.0, peer="us", trusts_pushes=True)  # quiet for a round
    assert "bonus/x1" not in rounds.next_round(r, 4.0, peer="us", trusts_pushes=True)  # once
    # What the peer holds is still left out, and what it may have lost or was asked for is not held back.
    _from_peer(r, "bonus/x2", "us", 3, 21)
    _write(r, "bonus/x3", 3)
    rounds.must_advertise(["bonus/x3"])
    rounds.ask("bonus/x4")
    names = rounds.next_round(r, 5.0, peer="us", trusts_pushes=True)
    assert "bonus/x3" in names and "bonus/x4" in names and "bonus/x2" not in names
    assert "bonus/x2" not in rounds.next_round(r, 6.0, peer="us", trusts_pushes=True)


def test_a_change_the_peer_may_lack_waits_a_few_rounds_at_most_on_a_document_never_quiet():
    """A third edge's change to a document this edge then writes every round: it never goes quiet,
    and is advertised once it was held back QUIET_WAIT_ROUNDS_MAX rounds, not left to the slow sweep."""
    r, rounds = _quiet_rounds()
    rounds.next_round(r, 1.0, peer="us", trusts_pushes=True)  # the slow sweep from here on
    _from_peer(r, "bonus/x1", "apac", 1, 31)  # us may lack it
    advertised_at = None
    for i in range(1, 10):
        _write(r, "bonus/x1", 1 + i)  # an own write every round, pushed to us
        if "bonus/x1" in rounds.next_round(r, 1.0 + i, peer="us", trusts_pushes=True):
            advertised_at = i
            break
    assert advertised_at == QUIET_WAIT_ROUNDS_MAX + 1, advertised_at  # held back that many rounds, no more


def test_after_a_link_ended_nothing_waits():
    """What waited, and what changed shortly before the link ended, go out in the next link's first
    round even if still changing: a partition heals without waiting for quiet documents."""
    r, rounds = _quiet_rounds()
    rounds.next_round(r, 1.0, peer="us", trusts_pushes=True)  # the slow sweep from here on
    _from_peer(r, "bonus/x1", "apac", 1, 31)
    assert "bonus/x1" not in rounds.next_round(r, 2.0, peer="us", trusts_pushes=True)
    _from_peer(r, "bonus/x1", "apac", 2, 31)
    _from_peer(r, "bonus/x2", "apac", 2, 32)
    rounds.link_ended(last_heard=2.5, margin_s=0.0)
    names = rounds.next_round(r, 9.0, peer="us", trusts_pushes=True)
    assert {"bonus/x1", "bonus/x2"} <= set(names)


def test_nothing_waits_for_a_peer_that_does_not_ask_again_for_what_it_refused():
    """A level-1 peer relies on the rounds to bring again an update it refused for now."""
    r, rounds = _quiet_rounds()
    _from_peer(r, "bonus/x1", "apac", 1, 31)
    _write(r, "bonus/x2", 2)
    names = rounds.next_round(r, 1.0, peer="us", trusts_pushes=False)
    assert {"bonus/x1", "bonus/x2"} <= set(names)


def _owed_rounds() -> tuple[Replica, PeerRounds]:
    """A peer past its first sweep (slow pages of one document from now on)."""
    r = _replica(10)
    rounds = PeerRounds(sweep_docs=1, catch_up_docs=10, sweep_rounds_min=60, wait_until_quiet=True)
    rounds.next_round(r, 0.0, peer="us", trusts_pushes=True)
    rounds.next_round(r, 1.0, peer="us", trusts_pushes=True)
    rounds.next_round(r, 1.5, peer="us", trusts_pushes=True)  # (a rewind to here does not start a sweep again)
    return r, rounds


def test_an_own_write_advertised_instead_of_pushed_is_advertised_again_if_its_round_may_be_lost():
    """A write made while no link was up (or dropped from a full queue) goes out in a round, not a
    push: if that round went out shortly before the link ended, the peer may lack it, and its own
    write's streak (pushed-to-the-peer) no longer brings it back: the next link advertises it again."""
    r, rounds = _owed_rounds()
    _write(r, "bonus/p8", 33)
    rounds.must_advertise(["bonus/p8"])  # no link: not pushed
    assert "bonus/p8" in rounds.next_round(r, 2.0, peer="us", trusts_pushes=True)  # the next link's first round
    rounds.link_ended(last_heard=2.5, margin_s=1.0)  # that link ended soon after: the round may be lost
    assert "bonus/p8" in rounds.next_round(r, 3.0, peer="us", trusts_pushes=True)
    # Once advertised on a link that lasted, it is not advertised again.
    rounds.received(before=10.0)
    rounds.next_round(r, 11.0, peer="us", trusts_pushes=True)
    rounds.link_ended(last_heard=20.0, margin_s=1.0)
    assert "bonus/p8" not in rounds.next_round(r, 21.0, peer="us", trusts_pushes=True)


def test_a_document_asked_for_is_asked_again_if_its_round_may_be_lost():
    """An ask (an update refused for now) is not a change here: a rewind of the change log does not
    bring it back, and the peer pushed that update live (it does not advertise it again)."""
    r, rounds = _owed_rounds()
    rounds.ask("session/p1/g1")
    assert "session/p1/g1" in rounds.next_round(r, 2.0, peer="us", trusts_pushes=True)
    rounds.link_ended(last_heard=2.5, margin_s=1.0)
    assert "session/p1/g1" in rounds.next_round(r, 3.0, peer="us", trusts_pushes=True)
    # An ask whose round went out well before the peer was last heard from is not repeated.
    rounds.link_ended(last_heard=9.0, margin_s=1.0)
    assert "session/p1/g1" not in rounds.next_round(r, 10.0, peer="us", trusts_pushes=True)


def test_an_entry_for_a_document_evicted_between_load_and_handle_is_asked_for_in_the_next_round():
    """Loading the documents of a frame can evict one loaded before it (every other live document
    pinned by unstored writes). Its entry was skipped with nothing to bring it again: the peer had
    pushed the update live (it does not advertise it), and this edge's document did not change.
    Now `handle` reports it, and the hub has the next round ask the peer for it."""
    eu = Replica("eu", 11, docs_live_max=1, pinned=lambda name: name == "bonus/pinned")
    us = Replica("us", 21, docs_live_max=10)
    _write(us, "bonus/p1", 1)
    _write(us, "bonus/p2", 2)
    update = us.diff_for("bonus/p1", b"\x00")
    _write(eu, "bonus/p2", 0)  # eu holds what us lacks of p2
    eu.install("bonus/p1", [])
    eu.install("bonus/pinned", [])  # loading this one evicts p1 (p2 went when p1 was loaded)
    assert eu.live("bonus/p1") is None and eu.live("bonus/p2") is None
    handled = handle(eu, [("bonus/p1", protocol.update_message(update))], source="us")
    assert handled.evicted == ["bonus/p1"] and not handled.changes
    # A STEP1 the peer advertised, for a document this edge holds more of: not answered, reported.
    handled = handle(eu, [("bonus/p2", protocol.step1(b"\x00"))], source="us")
    assert handled.evicted == ["bonus/p2"] and not handled.replies
    rounds = PeerRounds(sweep_docs=1, catch_up_docs=10)
    for name in ("bonus/p1", "bonus/p2"):
        rounds.ask(name)
    asked = rounds.next_round(eu, 0.0, peer="us", trusts_pushes=True)
    assert {"bonus/p1", "bonus/p2"} <= set(asked)
