"""Admission of single peer updates (pure): each hostile shape is refused with its reason and
changes nothing; deletions that would blank another edge's slot are dropped from the update."""

from __future__ import annotations

import pytest
from pycrdt import Doc, Map

from edge.crdt import admission
from edge.crdt.identity import Owners, fresh_client_id

OWNERS = Owners(("apac", "eu", "us"))
T0 = 1.8e9


class Facts:
    def __init__(self, epoch: int | None = 1, recently: bool = True, missing: bool = False) -> None:
        self._epoch, self._recently, self._missing = epoch, recently, missing

    def epoch(self, jackpot_id: str) -> int | None:
        return self._epoch

    def missing(self, jackpot_id: str) -> bool:
        return self._missing

    def asked_recently(self, jackpot_id: str) -> bool:
        return self._recently


def rules(facts: Facts | None = None, doc_bytes_max: int = 1 << 16) -> admission.Rules:
    return admission.Rules(
        OWNERS, facts or Facts(), doc_bytes_max=doc_bytes_max, session_state_bytes_max=4096, now=T0 + 100
    )


def jp(epoch: int = 1, p: int = 5, ts: float = T0) -> dict:
    return {"epoch": epoch, "p": p, "n": 0, "seed": 1000, "currency": "EUR", "ts": ts}


def edit(doc: Doc, change) -> bytes:
    before = doc.get_state()
    change(doc.get("slots", type=Map))
    return doc.get_update(before)


def writer(edge: str, offset: float = 0.0, held: Doc | None = None) -> Doc:
    doc = Doc(client_id=fresh_client_id(edge, T0 + offset))
    if held is not None:
        doc.apply_update(held.get_update())
    return doc


def receiver() -> Doc:
    """eu's replica, holding eu's and us's slots."""
    doc = Doc(client_id=fresh_client_id("eu", T0 + 50))
    doc.apply_update(edit(writer("eu", 1), lambda s: s.__setitem__("eu", jp(p=10))))
    doc.apply_update(edit(writer("us", 2), lambda s: s.__setitem__("us", jp(p=20))))
    return doc


def admit(doc: Doc, update: bytes, name: str = "jackpot/mega", **kw) -> admission.Verdict:
    return admission.admit(name, doc, update, rules(**kw))


def test_an_edge_writing_its_own_slot_is_admitted():
    doc = receiver()
    verdict = admit(doc, edit(writer("apac", 3), lambda s: s.__setitem__("apac", jp(p=7))))
    assert verdict.admitted and verdict.update is not None
    doc.apply_update(verdict.update)
    assert sorted(doc.get("slots", type=Map).to_py()) == ["apac", "eu", "us"]


@pytest.mark.parametrize("key", ["zzz", "eu"])
def test_writing_another_slot_is_refused(key):
    verdict = admit(receiver(), edit(writer("apac", 3), lambda s: s.__setitem__(key, jp(p=99))))
    assert (verdict.admitted, verdict.reason) == (False, "foreign_author")


def test_a_client_id_of_no_edge_in_the_cluster_is_refused():
    verdict = admit(receiver(), edit(Doc(client_id=12345), lambda s: s.__setitem__("apac", jp())))
    assert verdict.reason == "foreign_author"


def test_a_delete_of_another_edges_current_value_is_dropped_from_the_update():
    doc = receiver()
    hostile = writer("apac", 3, held=doc)
    verdict = admit(doc, edit(hostile, lambda s: s.pop("eu")))
    assert verdict.admitted and verdict.update is not None
    doc.apply_update(verdict.update)
    assert doc.get("slots", type=Map).to_py()["eu"]["p"] == 10


def test_a_delete_of_items_not_seen_yet_is_dropped_and_never_applied_later():
    doc = receiver()
    eu_later = writer("eu", 1, held=doc)
    newer = edit(eu_later, lambda s: s.__setitem__("eu", jp(p=11)))  # not delivered yet
    hostile = writer("apac", 3, held=eu_later)
    verdict = admit(doc, edit(hostile, lambda s: s.pop("eu")))
    assert verdict.admitted and verdict.update is not None
    doc.apply_update(verdict.update)
    assert admit(doc, newer).admitted
    doc.apply_update(newer)
    assert doc.get("slots", type=Map).to_py()["eu"]["p"] == 11  # not deleted on arrival


def test_a_nested_type_is_unsupported_and_garbage_is_malformed():
    nested = edit(writer("apac", 3), lambda s: s.__setitem__("apac", Map({"a": 1})))
    assert admit(receiver(), nested).reason == "unsupported"
    assert admit(receiver(), b"\x01\xff\xff").reason == "malformed"
    good = edit(writer("apac", 3), lambda s: s.__setitem__("apac", jp()))
    assert admit(receiver(), good[:-3]).reason == "malformed"


def test_an_update_continuing_an_unseen_item_is_deferred_not_left_pending():
    apac = writer("apac", 3)
    edit(apac, lambda s: s.__setitem__("apac", jp(p=1)))  # never delivered
    second = edit(apac, lambda s: s.__setitem__("apac", jp(p=2)))
    verdict = admit(receiver(), second)
    assert (verdict.admitted, verdict.reason, verdict.deferred) == (False, "unverified_gap", True)


@pytest.mark.parametrize(
    "value, reason",
    [
        ({**jp(), "epoch": "x"}, "invalid_value"),
        ({**jp(), "ts": "abc"}, "invalid_value"),
        ({**jp(), "ts": T0 + 10**6}, "ts_ahead"),  # a clock ahead, told apart from a forged value
        ({**jp(), "p": -1}, "invalid_value"),
        ({**jp(), "extra": 1}, "invalid_value"),
        (jp(epoch=1_000_000), "epoch_ahead"),
    ],
)
def test_bad_jackpot_values_are_refused(value, reason):
    verdict = admit(receiver(), edit(writer("apac", 3), lambda s: s.__setitem__("apac", value)))
    assert (verdict.admitted, verdict.reason) == (False, reason)


def test_unconfirmed_jackpots_and_epochs_are_deferred_and_missing_ones_refused():
    update = edit(writer("apac", 3), lambda s: s.__setitem__("apac", jp(epoch=2)))
    assert admit(receiver(), update, facts=Facts(recently=False)).reason == "unverified_epoch"
    assert admit(receiver(), update, facts=Facts(epoch=None)).reason == "unverified_jackpot"
    assert admit(receiver(), update, facts=Facts(missing=True)).reason == "unknown_jackpot"
    assert admit(receiver(), update, facts=Facts(epoch=2)).admitted


def test_documents_of_unknown_kinds_and_oversized_documents_are_refused():
    update = edit(writer("apac", 3), lambda s: s.__setitem__("apac", jp()))
    for name in ("nonsense/x", "jackpot/a/b", "jackpot/", "session/p1", "session/p1/gs/g1/x", "session/p1//g1"):
        assert admit(receiver(), update, name=name).reason == "unknown_doc"
    assert admit(receiver(), update, doc_bytes_max=100).reason == "doc_quota"


def test_counters_past_2_53_split_into_pairs_are_admitted_and_read_back_exactly():
    """Displays stay exact past 2**53 (several p/n pairs); a peer's slot in that shape passes
    admission and decodes to the same sums, while a malformed pair list is refused."""
    from edge.crdt.slots import BonusSlot, JackpotSlot

    big = 10 * 10**15 + 7  # ten bets of 10**15 and a bit: beyond 2**53
    jackpot = JackpotSlot(1, big, 3, 1000, "EUR", T0)
    assert "high" in jackpot.encode() and JackpotSlot.decode(jackpot.encode()) == jackpot
    doc = receiver()
    verdict = admit(doc, edit(writer("apac", 3), lambda s: s.__setitem__("apac", jackpot.encode())))
    assert verdict.admitted, verdict.reason
    bonus = BonusSlot({"welcome": (big, 1)}, T0)
    assert BonusSlot.decode(bonus.encode()) == bonus
    bonus_doc = Doc(client_id=fresh_client_id("eu", T0 + 50))
    verdict = admit(
        bonus_doc, edit(writer("apac", 3), lambda s: s.__setitem__("apac", bonus.encode())), name="bonus/p1"
    )
    assert verdict.admitted, verdict.reason
    odd = {"w": {"welcome": [1, 2, 3]}, "ts": T0}
    verdict = admit(
        Doc(client_id=fresh_client_id("eu", T0 + 50)),
        edit(writer("apac", 3), lambda s: s.__setitem__("apac", odd)),
        name="bonus/p1",
    )
    assert (verdict.admitted, verdict.reason) == (False, "invalid_value")


def slot_values(doc: Doc) -> dict:
    return doc.get("slots", type=Map).to_py()


def test_an_update_whose_items_are_all_held_is_admitted_as_nothing_and_changes_nothing():
    """The duplicate a live push and an anti-entropy answer make when they cross: no trial apply."""
    doc = receiver()
    apac = writer("apac", 3, held=doc)
    update = edit(apac, lambda s: s.__setitem__("apac", jp(p=7)))
    first = admit(doc, update)
    assert first.update is not None and first.update != admission.NOTHING_NEW
    doc.apply_update(first.update)
    held = slot_values(doc)
    again = admit(doc, apac.get_update(doc.get_state()))  # what apac's anti-entropy would send now
    assert (again.admitted, again.update) == (True, admission.NOTHING_NEW)
    assert admit(doc, update).update == admission.NOTHING_NEW
    doc.apply_update(admission.NOTHING_NEW)
    assert slot_values(doc) == held


def test_a_lying_duplicate_can_neither_relabel_a_held_item_nor_blank_a_slot():
    doc = receiver()
    held = slot_values(doc)
    # An item under an id held here (eu's first write), claiming other content in another slot.
    forged = edit(writer("eu", 1), lambda s: s.__setitem__("apac", jp(p=99)))
    # Deletions only, of every held item: the whole document blanked if applied unchecked.
    blanking = edit(writer("apac", 3, held=doc), lambda s: [s.pop(k) for k in list(s.keys())])
    for update in (forged, blanking):
        verdict = admit(doc, update)
        assert verdict.update == admission.NOTHING_NEW
        doc.apply_update(verdict.update)
    assert slot_values(doc) == held


def test_held_items_do_not_carry_a_new_foreign_one_past_the_checks():
    doc = receiver()
    hostile = writer("apac", 3, held=doc)
    edit(hostile, lambda s: s.__setitem__("eu", jp(p=66)))
    everything = hostile.get_update()  # all that is held here, and one new item writing eu's slot
    verdict = admit(doc, everything)
    assert (verdict.admitted, verdict.reason) == (False, "foreign_author")
    assert admit(doc, doc.get_update()).update == admission.NOTHING_NEW
