"""The facts a replica keeps per document for admission (edge.crdt.docfacts): kept by folding each
change in, they equal the facts read from scratch, and admission with them decides exactly as
admission reading the document does, after random sequences of honest and hostile updates."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Decoder, Doc, Encoder, Map

from edge.crdt import admission, docfacts, protocol, yupdate
from edge.crdt import replica as replica_module
from edge.crdt.exchange import handle
from edge.crdt.identity import Owners, fresh_client_id
from edge.crdt.replica import Replica, compact
from edge.crdt.slots import BonusSlot, SessionRecord, slot_items, write_slot

EDGES = ("apac", "eu", "us")
BONUS, SESSION = "bonus/p", "session/p/g"
NAMES = (BONUS, SESSION)
T0 = 1.8e9


class Confirmed:
    def epoch(self, jackpot_id: str) -> int | None:
        return 1

    def missing(self, jackpot_id: str) -> bool:
        return False

    def asked_recently(self, jackpot_id: str) -> bool:
        return True


def value(name: str, v: int, ts: float) -> dict:
    if name == BONUS:
        return BonusSlot({"b1": (v, 0)}, ts).encode()
    return SessionRecord(f'{{"v":{v}}}', "t", ts).encode()


def same_facts(kept: docfacts.DocFacts, fresh: docfacts.DocFacts) -> None:
    assert kept.state == fresh.state
    assert kept.clocks == fresh.clocks
    assert kept.values == fresh.values
    # every key read from scratch is kept (kept facts may know more: keys of items whose
    # origins a snapshot no longer shows), and no kept key contradicts one read from scratch
    for client, clock, length, key in fresh.key_ranges():
        for c in range(clock, clock + length):
            assert kept.key_of((client, c)) == key


def same_doc(a: Doc, b: Doc) -> None:
    """The same items, deletions and values (the encodings may order clients differently)."""
    assert yupdate.state_vector(a.get_state()) == yupdate.state_vector(b.get_state())
    assert slot_items(a) == slot_items(b)
    parsed_a, parsed_b = yupdate.parse(a.get_update()), yupdate.parse(b.get_update())
    assert sorted(parsed_a.deletes) == sorted(parsed_b.deletes)
    assert sorted((i.client, i.clock, i.length, i.deleted) for i in parsed_a.items) == sorted(
        (i.client, i.clock, i.length, i.deleted) for i in parsed_b.items
    )


class Net:
    def __init__(self) -> None:
        self.owners = Owners(EDGES)
        self.started = 0
        self.reps = [self._replica(e, {}) for e in EDGES]
        self.flight: list[tuple[int, str, bytes]] = []  # (destination, doc, update)
        self.clock = T0
        self.verdicts: list[str] = []

    def _replica(self, edge: str, stored: dict[str, list[bytes]]) -> Replica:
        self.started += 1
        r = Replica(edge, fresh_client_id(edge, T0 + self.started * 0.1), 16)
        for name in NAMES:
            r.install(name, stored.get(name, []))
            r.facts(name)  # kept from the start, as the sync receive path does
        return r

    def rules(self) -> admission.Rules:
        return admission.Rules(
            self.owners, Confirmed(), doc_bytes_max=1 << 20, session_state_bytes_max=4096, now=self.clock + 1
        )

    def admit_with(self, r: Replica):
        def admit(name: str, doc: Doc, update: bytes) -> admission.Verdict:
            # With the kept facts and the replica's twin of the document as the trial copy ...
            with_facts = admission.admit(name, doc, update, self.rules(), r.facts(name), lambda: r.scratch(name))
            # ... it decides as admission reading (and copying) the whole document does.
            from_scratch = admission.admit(name, doc, update, self.rules())
            assert (with_facts.update, with_facts.reason, with_facts.deferred) == (
                from_scratch.update,
                from_scratch.reason,
                from_scratch.deferred,
            )
            self.verdicts.append(with_facts.reason or "admitted")
            return with_facts

        return admit

    def write(self, i: int, name: str, v: int) -> None:
        r = self.reps[i]
        update = r.write_local(name, lambda d: write_slot(d, r.edge_id, value(name, v, self.clock)))
        self.flight += [(j, name, update) for j in range(len(self.reps)) if j != i]

    def deliver(self, dst: int, name: str, update: bytes) -> None:
        r = self.reps[dst]
        entries = [(name, protocol.update_message(update))]
        handle(r, entries, self.admit_with(r))

    def hostile(self, dst: int, src: int, name: str, how: str) -> bytes:
        """An update a lying peer `src` sends to `dst`."""
        r, liar = self.reps[dst], self.reps[src]
        doc = Doc(client_id=liar.client_id + 7)  # a later incarnation of the liar: a client id it owns
        doc.apply_update(r.live(name).get_update())
        before = doc.get_state()
        slots = doc.get("slots", type=Map)
        if how == "foreign_slot":  # writes the destination's own slot
            slots[r.edge_id] = value(name, 666, self.clock)
        elif how == "bad_value":
            slots[liar.edge_id] = {"state": 5, "ts": "x"}
        elif how == "future":
            slots[liar.edge_id] = value(name, 1, self.clock + 10**6)
        elif how == "blank":  # deletes every slot
            for key in list(slots.keys()):
                del slots[key]
        return doc.get_update(before)

    def check(self) -> None:
        for r in self.reps:
            for name in NAMES:
                kept = r.kept_facts(name)
                doc = r.live(name)
                assert kept is not None and doc is not None
                assert kept.state == doc.get_state()  # else `facts` would read them again
                assert r.facts(name) is kept
                same_facts(kept, docfacts.facts_of(doc))
                twin = r.twin(name)
                if twin is not None:  # kept equal to the document for admission's next trial
                    same_doc(twin, doc)


ops = st.one_of(
    st.tuples(st.just("write"), st.integers(0, 2), st.sampled_from(NAMES), st.integers(0, 10**6)),
    st.tuples(st.just("deliver"), st.integers(0, 10**6), st.booleans()),
    st.tuples(
        st.just("hostile"),
        st.integers(0, 2),
        st.integers(1, 2),
        st.sampled_from(NAMES),
        st.sampled_from(["foreign_slot", "bad_value", "future", "blank"]),
    ),
    st.tuples(st.just("junk"), st.integers(0, 2), st.binary(max_size=40)),
    st.tuples(st.just("anti_entropy"), st.integers(0, 2), st.integers(1, 2)),
    st.tuples(st.just("compact"), st.integers(0, 2)),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(ops, max_size=60))
def test_kept_facts_equal_facts_read_from_scratch(steps):
    net = Net()
    for op in steps:
        net.clock += 1
        kind = op[0]
        if kind == "write":
            net.write(op[1], op[2], op[3])
        elif kind == "deliver" and net.flight:
            dst, name, update = net.flight[op[1] % len(net.flight)]
            if op[2]:
                net.flight.remove((dst, name, update))
            net.deliver(dst, name, update)
        elif kind == "hostile":
            dst, src, name, how = op[1], (op[1] + op[2]) % 3, op[3], op[4]
            net.deliver(dst, name, net.hostile(dst, src, name, how))
        elif kind == "junk":
            net.deliver(op[1], SESSION, op[2])
        elif kind == "anti_entropy":  # each sends the other what it lacks, through admission
            a, b = net.reps[op[1]], net.reps[(op[1] + op[2]) % 3]
            for src, dst in ((a, b), (b, a)):
                for name in NAMES:
                    diff = src.diff_for(name, dst.state_vectors.get(name, b"\x00"))
                    net.deliver(net.reps.index(dst), name, diff)
        elif kind == "compact":  # reloaded from the store as one snapshot: facts read again
            i = op[1]
            r = net.reps[i]
            stored = {name: [compact(r.client_id, [r.live(name).get_update()])] for name in NAMES}
            net.reps[i] = net._replica(r.edge_id, stored)
        net.check()


def test_admission_with_facts_parses_only_the_update(monkeypatch):
    """The held document is not re-read per update (issue 12: that was most of admission's cost)."""
    here, peer = (Replica(e, fresh_client_id(e, T0 + k), 4) for k, e in enumerate(("eu", "apac")))
    for r in (here, peer):
        r.install(SESSION, [])
    for i in range(20):
        for r, other in ((here, peer), (peer, here)):
            other.apply_remote(
                SESSION, r.write_local(SESSION, lambda d, r=r, i=i: write_slot(d, r.edge_id, value(SESSION, i, T0)))
            )
    facts = here.facts(SESSION)
    update = peer.write_local(SESSION, lambda d: write_slot(d, "apac", value(SESSION, 99, T0 + 5)))
    parsed: list[int] = []
    real_parse = yupdate.parse
    monkeypatch.setattr(yupdate, "parse", lambda data: parsed.append(len(data)) or real_parse(data))
    rules = admission.Rules(Owners(EDGES), Confirmed(), 1 << 16, 4096, now=T0 + 1)
    verdict = admission.admit(SESSION, here.live(SESSION), update, rules, facts)
    assert verdict.admitted and parsed == [len(update)]
    changed, arrived = here.apply_remote(SESSION, verdict.update, verdict.after)
    assert changed and arrived == [("apac", T0 + 5)]
    assert here.kept_facts(SESSION) is facts and facts.values["apac"] == value(SESSION, 99, T0 + 5)
    assert parsed == [len(update)]  # applying it folded what admission found: nothing parsed again


def test_stale_facts_are_read_again():
    """Facts whose state vector is not the document's are never used."""
    r = Replica("eu", fresh_client_id("eu", T0), 4)
    doc = r.install(SESSION, [])
    facts = r.facts(SESSION)
    other = Doc(client_id=fresh_client_id("apac", T0))
    other.get("slots", type=Map)["apac"] = value(SESSION, 1, T0)
    doc.apply_update(other.get_update())  # behind the replica's back
    assert r.facts(SESSION) is not facts
    assert r.facts(SESSION).values == {"apac": value(SESSION, 1, T0)}


def test_a_twin_of_a_document_changed_behind_the_replicas_back_is_not_used():
    """Admission's trial copy is the kept twin only while it matches the document, as facts are."""
    r = Replica("eu", fresh_client_id("eu", T0), 4)
    doc = r.install(SESSION, [])
    r.write_local(SESSION, lambda d: write_slot(d, "eu", value(SESSION, 1, T0)))
    r.facts(SESSION)
    kept = r.scratch(SESSION)  # none kept yet: a copy
    r._twins[SESSION] = kept  # as `apply_remote` keeps an admitted trial
    assert r.scratch(SESSION) is kept  # handed out once
    r._twins[SESSION] = kept
    other = Doc(client_id=fresh_client_id("apac", T0))
    other.get("slots", type=Map)["apac"] = value(SESSION, 2, T0)
    doc.apply_update(other.get_update())  # behind the replica's back
    r.facts(SESSION)
    fresh = r.scratch(SESSION)
    assert fresh is not kept and slot_items(fresh) == slot_items(doc)


@pytest.mark.parametrize(
    ("adds", "ranges"),
    [
        ([(1, 0, 1, "a"), (1, 1, 1, "a"), (1, 2, 3, "a")], [(1, 0, 5, "a")]),
        ([(1, 0, 1, "a"), (1, 1, 1, "b"), (1, 2, 1, "a")], [(1, 0, 1, "a"), (1, 1, 1, "b"), (1, 2, 1, "a")]),
        ([(1, 4, 2, "a"), (1, 0, 2, "a"), (1, 2, 2, "a")], [(1, 0, 6, "a")]),
        ([(1, 0, 4, "a"), (1, 2, 4, "b")], [(1, 0, 4, "a"), (1, 4, 2, "b")]),  # held ids keep their key
        ([(1, 2, 2, "a"), (1, 0, 6, "b")], [(1, 0, 2, "b"), (1, 2, 2, "a"), (1, 4, 2, "b")]),
        ([(1, 0, 2, "a"), (2, 0, 2, "a")], [(1, 0, 2, "a"), (2, 0, 2, "a")]),
    ],
)
def test_key_ranges_merge_and_never_rewrite_a_known_id(adds, ranges):
    keys = docfacts.Keys()
    for add in adds:
        keys.add(*add)
    assert keys.ranges() == ranges
    for client, clock, length, key in ranges:
        assert [keys.key_of((client, c)) for c in range(clock, clock + length)] == [key] * length
    assert keys.key_of((3, 0)) is None and keys.key_of((1, 100)) is None


@given(st.lists(st.integers(0, 2**53 - 1), max_size=20))
def test_var_uints_read_the_same_whether_remembered_or_not(values):
    """The reader remembers eight-byte var_uints (client ids): a remembered one reads the same."""
    encoded = b"".join(yupdate._uint(v) for v in values)
    for _ in range(2):  # the second time, client-sized values come from what was remembered
        r = yupdate._Reader(encoded)
        assert [r.uint() for _ in values] == values and r.pos == len(encoded)


@pytest.mark.parametrize(
    ("data", "error"),
    [(b"\x80", "truncated"), (b"\xff" * 7, "truncated"), (b"\x80" * 8, "too long"), (b"\x80" * 9, "too long")],
)
def test_bad_var_uints_are_malformed(data, error):
    with pytest.raises(yupdate.MalformedUpdate, match=error):
        yupdate._Reader(data).uint()


@given(st.dictionaries(st.integers(0, 2**53 - 1), st.integers(0, 2**40), max_size=8))
def test_state_vectors_read_as_pycrdt_writes_them(clocks):
    """`protocol.decode_state_vector` (now the Yjs reader's) reads what pycrdt's Encoder writes."""
    encoder = Encoder()
    encoder.write_var_uint(len(clocks))
    for client, clock in clocks.items():
        encoder.write_var_uint(client)
        encoder.write_var_uint(clock)
    assert protocol.decode_state_vector(encoder.to_bytes()) == clocks


@pytest.mark.parametrize("bad", [b"", b"\x02\x01\x01", b"\x01\x80", b"\x01" + b"\xff" * 9 + b"\x01\x00"])
def test_malformed_state_vectors_are_protocol_errors(bad):
    with pytest.raises(protocol.ProtocolError):
        protocol.decode_state_vector(bad)


def test_a_real_state_vector_reads_as_before():
    doc = Doc(client_id=fresh_client_id("eu", T0))
    doc.get("slots", type=Map)["eu"] = value(SESSION, 1, T0)
    decoder = Decoder(doc.get_state())
    expected = {}
    for _ in range(decoder.read_var_uint()):
        client = decoder.read_var_uint()
        expected[client] = decoder.read_var_uint()
    assert protocol.decode_state_vector(doc.get_state()) == expected == {fresh_client_id("eu", T0): 1}


def test_an_admitted_update_s_facts_are_adopted_not_read_again(monkeypatch):
    """Admission's scratch copy encodes the same state vector as the live document with its clients
    in another order: compared as bytes, the facts it saw were never adopted, and every admitted
    update was parsed and its document's values read a second time (`docfacts.changed`)."""
    owners = Owners(EDGES)
    reps = {e: Replica(e, fresh_client_id(e, T0 + k), docs_live_max=10) for k, e in enumerate(EDGES)}
    for r in reps.values():
        r.install(SESSION, [])
    rules = admission.Rules(owners, Confirmed(), doc_bytes_max=1 << 16, session_state_bytes_max=4096, now=T0 + 100)
    eu = reps["eu"]
    reads_again = []
    monkeypatch.setattr(docfacts, "changed", lambda *a: reads_again.append(a) or pytest.fail("read again"))
    for i in range(12):
        writer = reps[EDGES[i % 3]]
        update = writer.write_local(
            SESSION, lambda d, w=writer.edge_id, i=i: write_slot(d, w, value(SESSION, i, T0 + i))
        )
        for other in reps.values():
            if other is writer:
                continue
            verdict = admission.admit(SESSION, other.live(SESSION), update, rules, other.facts(SESSION))
            assert verdict.update is not None, verdict
            other.apply_remote(SESSION, verdict.update, verdict.after)
    assert not reads_again
    doc = eu.live(SESSION)
    assert doc is not None
    same_facts(eu.facts(SESSION), docfacts.facts_of(doc))


def test_a_local_write_keeps_the_values_fresh_and_the_next_read_of_them_reads_nothing(monkeypatch):
    """After a local write the kept values are the document's: a session save reads the latest
    record from them, and admission does not read them again."""
    r = Replica("eu", fresh_client_id("eu", T0), 4)
    r.install(SESSION, [])
    facts = r.facts(SESSION)
    r.write_local(SESSION, lambda d: write_slot(d, "eu", value(SESSION, 1, T0)))
    assert not facts.values_stale and facts.values == slot_items(r.live(SESSION))
    reads: list[int] = []
    real = replica_module.slot_items
    monkeypatch.setattr(replica_module, "slot_items", lambda doc: reads.append(1) or real(doc))
    assert r.slot_values(SESSION) == {"eu": value(SESSION, 1, T0)} and reads == []
    same_facts(r.facts(SESSION), docfacts.facts_of(r.live(SESSION)))
