"""Crossing answers: an anti-entropy answer that would only repeat this edge's own live push, sent
moments ago on the same link, is held back and the document advertised again next round; a push
that was lost is answered at the latest one round later; a peer cannot use the rule to keep other
edges' items from it."""

from __future__ import annotations

from pycrdt import Map, YSyncMessageType

from edge.crdt import protocol
from edge.crdt.anti_entropy import PeerRounds
from edge.crdt.exchange import handle
from edge.crdt.in_flight import InFlight
from edge.crdt.replica import Replica

NAME = "bonus/p1"


def write(replica: Replica, edge: str, value: int) -> bytes:
    if replica.live(NAME) is None:
        replica.install(NAME, [])
    return replica.write_local(NAME, lambda d: d.get("slots", type=Map).__setitem__(edge, value))


def answers(replica: Replica, peer_sv: bytes, in_flight: InFlight | None, now: float = 0.0):
    entries = [(NAME, protocol.step1(peer_sv))]
    hold = None if in_flight is None else (lambda name, clock: in_flight.hold_back(name, clock, now))
    handled = handle(replica, entries, None, hold)
    return [protocol.parse(m)[0] for _, m in handled.replies], handled.held_back


def test_an_answer_repeating_a_push_still_in_flight_is_held_back_once_then_sent():
    eu, us = Replica("eu", 11, 10), Replica("us", 22, 10)
    us.install(NAME, [])
    write(eu, "eu", 1)
    us.apply_remote(NAME, eu.diff_for(NAME, b"\x00"))
    write(eu, "eu", 2)  # pushed to us, not there yet
    flight = InFlight(window_s=1.0, held_back_s=4.0)
    flight.pushed(NAME, now=0.0)
    us_sv = us.state_vectors[NAME]
    assert answers(eu, us_sv, None) == ([YSyncMessageType.SYNC_STEP2], [])  # before: a duplicate
    assert answers(eu, us_sv, flight, now=0.2) == ([], [NAME])
    # Next round us still lacks it at the same clock: the push was lost, the answer goes now.
    assert answers(eu, us_sv, flight, now=0.9) == ([YSyncMessageType.SYNC_STEP2], [])


def test_only_a_recent_push_on_this_link_holds_an_answer_back():
    eu = Replica("eu", 11, 10)
    write(eu, "eu", 1)
    flight = InFlight(window_s=1.0, held_back_s=4.0)
    assert answers(eu, protocol.EMPTY_STATE_VECTOR, flight) == ([YSyncMessageType.SYNC_STEP2], [])  # never pushed
    flight.pushed(NAME, now=0.0)
    assert answers(eu, protocol.EMPTY_STATE_VECTOR, flight, now=1.5) == ([YSyncMessageType.SYNC_STEP2], [])
    flight.forget(now=1.5)
    assert len(flight) == 0


def test_a_peer_lacking_other_edges_items_gets_them_at_once():
    eu, apac = Replica("eu", 11, 10), Replica("apac", 33, 10)
    apac.install(NAME, [])
    eu.install(NAME, [])
    eu.apply_remote(NAME, write(apac, "apac", 7))  # apac's item, relayed by eu (a partition heals)
    write(eu, "eu", 1)
    flight = InFlight(window_s=1.0, held_back_s=4.0)
    flight.pushed(NAME, now=0.0)
    assert answers(eu, protocol.EMPTY_STATE_VECTOR, flight, now=0.1) == ([YSyncMessageType.SYNC_STEP2], [])


def test_a_held_back_document_is_advertised_next_round_though_unchanged():
    eu = Replica("eu", 11, 100)
    names = [f"bonus/d{i}" for i in range(50)]
    for name in names:
        eu.install(name, [])
        eu.write_local(name, lambda d: d.get("slots", type=Map).__setitem__("eu", 1))
    rounds = PeerRounds(sweep_docs=1, catch_up_docs=50)
    assert len(rounds.next_round(eu, 0.0)) == 50  # the first sweep
    assert rounds.next_round(eu, 1.0) == [names[0]]  # nothing changed: one backstop page
    rounds.again([names[40]])
    assert rounds.next_round(eu, 2.0) == [names[40], names[1]]
    assert rounds.next_round(eu, 3.0) == [names[2]]
