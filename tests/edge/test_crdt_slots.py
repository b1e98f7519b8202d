"""Owned-slot values, exactly-once effects and reconciliation (pure, in memory)."""

import pytest
from pycrdt import Array, Doc, Map

from edge.crdt import protocol
from edge.crdt.effects import Effect, EffectBook, JackpotTruth, reconcile_bonus, reconcile_jackpot
from edge.crdt.replica import Replica, compact
from edge.crdt.slots import (
    BONUSES_PER_SLOT_MAX,
    ROOT_ATTRIBUTE,
    BonusSlot,
    JackpotSlot,
    SessionRecord,
    SlotDoc,
    as_int,
    bonus_progress,
    bonus_slots,
    jackpot_slots,
    jackpot_view,
    session_latest,
    slot_items,
    slots,
    write_slot,
)
from tests.support.crdt_network import anti_entropy, deliver, ensure_live

JP = "jackpot/mega"


def test_ints_come_back_exact_and_non_integers_are_refused():
    assert as_int(5.0) == 5 and type(as_int(5.0)) is int
    for bad in (5.5, True, "5", None):
        with pytest.raises(ValueError):
            as_int(bad)


def test_jackpot_display_is_seed_plus_current_epoch_contributions():
    s = JackpotSlot(1, 0, 0, 1000, "EUR", 0.0).add(1, 50, 1.0).add(1, -20, 2.0)
    assert (s.p, s.n) == (50, 20)
    other = JackpotSlot(1, 7, 0, 1000, "EUR", 0.5)
    view = jackpot_view({"eu": s, "us": other})
    assert view.display_minor == 1000 + 30 + 7 and view.by_edge == {"eu": 30, "us": 7}
    # a payout (epoch 2) reaches "us": the old epoch no longer shows anywhere
    paid = other.add(2, 3, 3.0)
    view = jackpot_view({"eu": s, "us": paid})
    assert (view.display_minor, view.epoch, view.by_edge) == (1003, 2, {"us": 3})
    assert s.add(0, 99, 4.0) == s  # a late contribution to an older epoch is ignored


def test_the_displayed_seed_and_currency_are_this_edges_own_once_it_holds_a_slot():
    """They came from the lowest edge id's slot: a peer named "a..." holding a credential could
    show every player its own seed and currency."""
    own = JackpotSlot(1, 5, 0, 1000, "EUR", 1.0)
    liar = JackpotSlot(1, 0, 0, 999_999_999, "USD", 1.0)
    view = jackpot_view({"aa-liar": liar, "eu": own}, own="eu")
    assert (view.seed_minor, view.currency, view.display_minor) == (1000, "EUR", 1005)
    # Until this edge holds a slot of the current epoch, a peer's is the best guess.
    view = jackpot_view({"aa-liar": liar, "eu": JackpotSlot(0, 5, 0, 1000, "EUR", 1.0)}, own="eu")
    assert view.seed_minor == 999_999_999


def test_replica_slots_round_trip_through_pycrdt():
    r = Replica("eu", 1, 8)
    r.install(JP, [])
    r.install("bonus/p1", [])
    r.write_local(JP, lambda d: write_slot(d, "eu", JackpotSlot(3, 10**15, 2, 5, "EUR", 1.5).encode()))
    r.write_local("bonus/p1", lambda d: write_slot(d, "eu", BonusSlot({"w1": (9, 1)}, 2.0).encode()))
    assert jackpot_slots(r.live(JP)) == {"eu": JackpotSlot(3, 10**15, 2, 5, "EUR", 1.5)}
    assert bonus_progress(bonus_slots(r.live("bonus/p1"))) == {"w1": {"eu": 8}}


def test_slot_items_reads_what_the_public_map_api_reads():
    # slot_items reads through pycrdt internals in one transaction (pinned pycrdt < 0.15): it must
    # give exactly what Map.items() gives, for every kind of slot value an edge writes or a peer sends.
    r = Replica("eu", 1, 8)
    r.install(JP, [])
    r.write_local(JP, lambda d: write_slot(d, "eu", JackpotSlot(3, 10**15, 2, 5, "EUR", 1.5).encode()))
    r.write_local(JP, lambda d: write_slot(d, "us", BonusSlot({"w1": (9, 1)}, 2.0).encode()))
    r.write_local(JP, lambda d: slots(d).__setitem__("odd", "text"))
    r.write_local(JP, lambda d: slots(d).__setitem__("n", 7))
    doc = r.live(JP)
    assert slot_items(doc) == dict(slots(doc).items())
    assert set(slot_items(doc)) == {"eu", "us", "odd", "n"}


def test_session_last_writer_wins_by_origin_time_then_edge():
    a, b = Replica("eu", 1, 8), Replica("us", 2, 8)
    name = "session/p1/g1"
    ensure_live(a, [name]), ensure_live(b, [name])
    ua = a.write_local(name, lambda d: write_slot(d, "eu", SessionRecord('{"x":1}', "t1", 10.0).encode()))
    ub = b.write_local(name, lambda d: write_slot(d, "us", SessionRecord('{"x":2}', "t2", 11.0).encode()))
    a.apply_remote(name, ub), b.apply_remote(name, ua)
    assert session_latest(a.live(name)) == session_latest(b.live(name)) == ("us", SessionRecord('{"x":2}', "t2", 11.0))


def test_remote_apply_reports_origin_write_times_once():
    a, b = Replica("eu", 1, 8), Replica("us", 2, 8)
    ensure_live(a, [JP]), ensure_live(b, [JP])
    u = a.write_local(JP, lambda d: write_slot(d, "eu", JackpotSlot(1, 5, 0, 0, "EUR", 42.0).encode()))
    changed, arrived = b.apply_remote(JP, u)
    assert changed and arrived == [("eu", 42.0)]
    assert b.apply_remote(JP, u) == (b"", [])  # a duplicate changes nothing and is not re-measured


def test_effects_apply_once_and_never_at_or_below_the_watermark():
    book = EffectBook()
    assert book.should_apply(JP, 10)
    book.record(Effect(JP, 10, {"epoch": 1, "amount_minor": 5}))
    assert not book.should_apply(JP, 10)  # a retry or replay of the same transaction
    assert book.raise_watermark(JP, 12)
    assert not book.should_apply(JP, 11)  # inside the ledger truth read at 12
    assert book.should_apply(JP, 13)
    assert not book.raise_watermark(JP, 11)  # an older read cannot lower the watermark


def test_reconciliation_race_counts_each_transaction_once():
    """An effect applied before the read (seq 15 > as_of 14) is added on top of the truth; an answer
    in flight during the read (seq 13 <= as_of 14) is inside the truth and is then refused."""
    book = EffectBook()
    book.record(Effect(JP, 11, {"epoch": 1, "amount_minor": 4}))
    book.record(Effect(JP, 15, {"epoch": 1, "amount_minor": 6}))
    truth = JackpotTruth(epoch=1, seed_minor=100, currency="EUR", mine_minor=4 + 9, pool_minor=0, as_of=14)
    slot = reconcile_jackpot(truth, book.after(JP, truth.as_of), ts=1.0)
    assert book.raise_watermark(JP, truth.as_of)
    assert slot.p - slot.n == 4 + 9 + 6
    assert not book.should_apply(JP, 13)  # the in-flight answer (9, seq 13) arrives late: skipped
    assert book.after(JP, 0) == [(15, {"epoch": 1, "amount_minor": 6})]  # the book forgot seq 11


def test_reconciliation_follows_a_payout_newer_than_the_read():
    truth = JackpotTruth(epoch=1, seed_minor=100, currency="EUR", mine_minor=50, pool_minor=0, as_of=20)
    slot = reconcile_jackpot(truth, [(21, {"epoch": 2, "amount_minor": 3})], ts=1.0)
    assert (slot.epoch, slot.p, slot.n) == (2, 3, 0)


def test_bonus_reconciliation_adds_pending_effects_per_bonus():
    slot = reconcile_bonus({"w1": 100, "w2": 0}, [(7, {"w1": 5}), (8, {"w1": -2, "w2": 3})], ts=1.0)
    assert {b: p - n for b, (p, n) in slot.wagered.items()} == {"w1": 103, "w2": 3}


def test_an_own_bonus_slot_holds_no_more_offers_than_a_slot_may_so_it_reads_back_and_stays_put():
    """A player with 257 offers: reconciliation wrote an entry for each, `decode` refuses more than
    256, so the edge saw no own slot, rebuilt and rewrote it every round, and peers refused it."""
    mine = {f"w{i:03d}": 0 for i in range(257)} | {"w256": 500}  # one offer wagered on, 256 not
    slot = reconcile_bonus(mine, [], ts=1.0)
    assert len(slot.wagered) == BONUSES_PER_SLOT_MAX and slot.wagered["w256"] == (500, 0)  # wagering kept first
    assert BonusSlot.decode(slot.encode()).wagered == slot.wagered
    assert reconcile_bonus(mine, [], ts=2.0).wagered == slot.wagered  # the next round writes nothing new
    grown = slot.add({"w999": 7}, ts=3.0)
    assert len(grown.wagered) == BONUSES_PER_SLOT_MAX and grown.wagered["w999"] == (7, 0)


def test_out_of_order_delivery_can_drop_keys_and_a_state_vector_exchange_repairs_it():
    """Regression (pycrdt 0.14): updates applied out of order can lose a map key for good (here one
    client writes k0, k1, k0 and the first write arrives last); anti-entropy by state vectors repairs it."""
    a, b, c = Replica("eu", 1, 8), Replica("us", 2, 8), Replica("apac", 3, 8)
    ensure_live(a, [JP]), ensure_live(b, [JP]), ensure_live(c, [JP])

    def put(r, key, value):
        return r.write_local(JP, lambda d: slots(d).__setitem__(key, value))

    ups = [put(a, "k0", {"x": 1}), put(b, "b", 1), put(a, "k1", {"x": 2}), put(a, "k0", {"y": 3})]
    for i in (1, 2, 3, 0):
        c.apply_remote(JP, ups[i])
    assert "k0" not in slots(c.live(JP)).to_py(), "pycrdt no longer drops the key: keep the repair, update this test"
    anti_entropy(a, c), anti_entropy(b, c)
    assert (
        slots(c.live(JP)).to_py()
        == slots(a.live(JP)).to_py() | {"b": 1.0}
        == {"k0": {"y": 3.0}, "k1": {"x": 2.0}, "b": 1.0}
    )


def test_compaction_re_encodes_to_the_same_state():
    r = Replica("eu", 1, 8)
    ensure_live(r, [JP])
    ups = [
        r.write_local(JP, lambda d, i=i: write_slot(d, "eu", JackpotSlot(1, i, 0, 0, "EUR", 0.0).encode()))
        for i in range(200)
    ]
    snapshot = compact(1, ups)
    assert len(snapshot) < sum(map(len, ups)) / 20
    d = Doc()
    d.apply_update(snapshot)
    assert jackpot_slots(d)["eu"].p == 199


def test_frames_round_trip_and_malformed_frames_are_refused():
    limits = protocol.Limits(frame_bytes_max=64, entries_per_frame_max=2)
    assert protocol.decode_frame(protocol.encode_frame([("a", b"\x00\x01\x00")]), limits) == [("a", b"\x00\x01\x00")]
    for bad in (b"\x05ab", b"\x01a\x09", b"x" * 65):
        with pytest.raises(protocol.ProtocolError):
            protocol.decode_frame(bad, limits)
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_frame(protocol.encode_frame([("a", b"1")] * 3), limits)
    b = protocol.FrameBuilder(limits)
    for i in range(5):
        b.add(f"d{i}", b"\x00\x01\x00")
    b.flush()
    assert sum(len(protocol.decode_frame(f, limits)) for f in b.frames) == 5


def test_a_document_known_only_to_the_peer_is_pulled_by_its_state_vector():
    a, b = Replica("eu", 1, 8), Replica("us", 2, 8)
    ensure_live(a, ["bonus/p9"])
    a.write_local("bonus/p9", lambda d: write_slot(d, "eu", BonusSlot({"w": (1, 0)}, 1.0).encode()))
    replies = deliver(b, [("bonus/p9", protocol.step1(a.state_vectors["bonus/p9"]))])
    assert [protocol.parse(m)[0] for _, m in replies] == [0]  # b asks with its (empty) state
    deliver(b, deliver(a, replies))
    assert bonus_progress(bonus_slots(b.live("bonus/p9"))) == {"w": {"eu": 1}}


def test_counters_past_2_53_are_split_into_exact_pairs_and_small_ones_stay_one_pair():
    from edge.crdt.slots import INT_ABS_MAX, join_pairs, split_pairs

    assert split_pairs(5, 7) == [5, 7] and split_pairs(INT_ABS_MAX, 0) == [INT_ABS_MAX, 0]
    for p, n in ((10**16, 3), (2**53, 2**53 + 1), (2**70 + 11, 0), (0, 10**17)):
        digits = split_pairs(p, n)
        assert len(digits) > 2 and all(0 <= d <= INT_ABS_MAX for d in digits)
        assert join_pairs([float(d) for d in digits]) == (p, n)  # as pycrdt hands them back
    with pytest.raises(ValueError):
        join_pairs([1, 2, 3])
    doc = Doc()
    big = 10 * 10**15
    write_slot(doc, "eu", BonusSlot({"w": (big, 1)}, 1.0).encode())
    write_slot(doc, "us", JackpotSlot(1, big + 5, 2, 100, "EUR", 1.0).encode())
    copy = Doc()
    copy.apply_update(doc.get_update())
    assert slots(copy)["eu"]["w"]["w"] == [float(big - 2**53), 1.0, 1.0, 0.0]
    assert BonusSlot.decode(slots(copy)["eu"]).wagered == {"w": (big, 1)}
    assert JackpotSlot.decode(slots(copy)["us"]) == JackpotSlot(1, big + 5, 2, 100, "EUR", 1.0)
    assert "high" not in JackpotSlot(1, 5, 2, 100, "EUR", 1.0).encode()


def test_a_documents_root_map_is_made_once_and_stays_valid_across_updates():
    doc: SlotDoc = Doc(client_id=1)
    root = slots(doc)
    assert slots(doc) is root  # not a new wrapper integrated in a transaction of its own per call
    peer: SlotDoc = Doc(client_id=2)
    write_slot(peer, "us", {"ts": 1.0})
    doc.apply_update(peer.get_update())
    write_slot(doc, "eu", {"ts": 2.0})
    assert slots(doc) is root and dict(root.items()) == {"us": {"ts": 1.0}, "eu": {"ts": 2.0}}


def test_a_document_read_once_gets_no_root_wrapper_and_reads_what_map_items_reads():
    source: SlotDoc = Doc(client_id=3)
    write_slot(source, "eu", {"ts": 1.0, "n": 2})
    scratch: SlotDoc = Doc()
    scratch.apply_update(source.get_update())
    assert slot_items(scratch) == {"eu": {"ts": 1.0, "n": 2.0}}
    assert ROOT_ATTRIBUTE not in scratch.__dict__  # read through the integrated map only
    assert slot_items(scratch) == dict(scratch.get("slots", type=Map).items())
    slots(source)["us"] = Array([1, 2])  # a nested shared type (admission refuses it; reads still wrap it)
    nested: SlotDoc = Doc()
    nested.apply_update(source.get_update())
    values = slot_items(nested)
    assert isinstance(values["us"], Array) and list(values["us"]) == [1.0, 2.0]
