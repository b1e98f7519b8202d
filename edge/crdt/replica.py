"""One edge's set of pycrdt documents: lazy, bounded in memory, observer-free (pure: no I/O).

Documents are loaded by the caller (from the local store) and installed here; at most
`docs_live_max` stay live, least recently used first out. A document with writes not yet on disk
is pinned by the caller's `pinned` predicate and never evicted (reloading it would lose them).

Changes are captured by state-vector difference instead of observers (an observer that is never
unobserved keeps its Doc alive): `write_local` and `apply_remote` return exactly the bytes that
changed this replica, ready to persist and to push. `apply_remote` also reports which remote-owned
slots changed and their origin write times, for the sync-lag metric.

For admission, the replica also keeps per live document the facts it checks peer updates against
(`facts`, see edge/crdt/docfacts.py): read once, then kept by folding each change in (an admitted
update's `After`, a local write's bytes), and read again if the document's state vector is not the
one they describe. Slot write times for the sync-lag metric come from the same kept values.

Every state-vector change is also numbered in a change log (`position`, `changed_since`), so
anti-entropy can advertise only the documents that changed since a peer's last round: its cost
follows what changed, not how many documents the edge holds (edge/crdt/anti_entropy.py). The log
also keeps, per document, where its latest run of changes came from (`streak`: this edge's own
writes, or one peer's updates) and the document's last change before that run, so a round can
leave out a document whose every change since the peer's last round the peer holds already.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

from pycrdt import Doc

from edge.crdt import docfacts, yupdate
from edge.crdt.docfacts import After, DocFacts
from edge.crdt.slots import SlotDoc, slot_items, slot_times, times_of

EMPTY_UPDATE = b"\x00\x00"
EMPTY_STATE_VECTOR = b"\x00"
LOCAL = ""  # the source of this edge's own writes in the change log (a peer's is its edge id)
UNKNOWN = None  # a change of unknown origin (a document installed from the store)


def new_doc(client_id: int, updates: Iterable[bytes] = ()) -> SlotDoc:
    doc: SlotDoc = Doc(client_id=client_id)
    for update in updates:
        doc.apply_update(update)
    return doc


def compact(client_id: int, updates: Iterable[bytes]) -> bytes:
    """One update equivalent to `updates` (apply and re-encode: fast, and collects garbage)."""
    return new_doc(client_id, updates).get_update()


class Replica:
    def __init__(
        self, edge_id: str, client_id: int, docs_live_max: int, pinned: Callable[[str], bool] = lambda name: False
    ) -> None:
        assert 1 <= client_id < 2**53 and docs_live_max >= 1
        self.edge_id = edge_id
        self.client_id = client_id
        self.docs_live_max = docs_live_max
        self._pinned = pinned
        self._live: OrderedDict[str, SlotDoc] = OrderedDict()
        self._facts: dict[str, DocFacts] = {}  # of live documents that admission asked about
        # Per live document admission checked an update of: a copy kept equal to it, for the next trial.
        self._twins: dict[str, SlotDoc] = {}
        self.state_vectors: dict[str, bytes] = {}  # every known doc, live or on disk
        self.position = 0  # of the last state-vector change in the change log
        self._changes: OrderedDict[str, int] = OrderedDict()  # doc -> position of its last change, in order
        # doc -> (source of its latest run of changes, position of the run's first change)
        self._streaks: dict[str, tuple[str | None, int]] = {}

    def known(self, name: str) -> bool:
        return name in self.state_vectors

    def live(self, name: str) -> SlotDoc | None:
        doc = self._live.get(name)
        if doc is not None:
            self._live.move_to_end(name)
        return doc

    def install(self, name: str, updates: Iterable[bytes]) -> SlotDoc:
        """Make a document live from its stored updates (or empty)."""
        assert name not in self._live, name
        doc = new_doc(self.client_id, updates)
        self._live[name] = doc
        state = doc.get_state()
        if state != EMPTY_STATE_VECTOR and self.state_vectors.get(name) != state:
            self.state_vectors[name] = state  # an empty document is not "known": nothing to advertise
            self._log_change(name, UNKNOWN)
        self._evict(keep=name)
        return doc

    def note_state(self, name: str, state_vector: bytes) -> None:
        """Record a stored (not live) document's state vector, at start-up."""
        self.state_vectors[name] = state_vector

    def write_local(self, name: str, write: Callable[[SlotDoc], None]) -> bytes:
        doc = self._live[name]
        with doc.transaction(origin=self.edge_id):  # the state before, read in the write's transaction
            before = doc.get_state()
            write(doc)
        facts = self._facts.get(name)
        values: dict[str, Any] | None = None
        with doc.transaction():  # one transaction for every read after the write
            after = doc.get_state()
            if after == before:
                changed = b""
            else:
                changed = doc.get_update(before)
                if facts is not None:  # kept fresh: admission and the next write read them
                    values = slot_items(doc)
        if changed:
            self._record(name, after, LOCAL)
        self._follow(name, changed)
        if facts is not None:
            if changed:
                docfacts.written(facts, after, changed, values)
            else:  # deletions only: the same items, perhaps other values
                facts.values_stale = True
        return changed

    def slot_values(self, name: str) -> dict[str, Any]:
        """Every slot's value of the live document `name` (owner edge -> raw value): the kept
        facts' when they are fresh, else read (one transaction)."""
        facts = self._facts.get(name)
        if facts is not None and not facts.values_stale and facts.state == self.state_vectors.get(name):
            return facts.values
        return slot_items(self._live[name])

    def facts(self, name: str) -> DocFacts:
        """What admission needs to know of the live document `name` (`edge.crdt.docfacts`): kept
        up to date by every change made through this replica, read from scratch the first time
        (or if the document changed behind the replica's back)."""
        doc = self._live[name]
        facts = self._facts.get(name)
        if facts is None or facts.state != doc.get_state():
            facts = self._facts[name] = docfacts.facts_of(doc)
        elif facts.values_stale:
            facts.values, facts.values_stale = docfacts.slot_values(doc), False
        return facts

    def twin(self, name: str) -> SlotDoc | None:
        """The twin kept of `name`, if any (for tests)."""
        return self._twins.get(name)

    def kept_facts(self, name: str) -> DocFacts | None:
        """The facts kept of `name` as they are, unchecked (for tests)."""
        return self._facts.get(name)

    def scratch(self, name: str) -> SlotDoc:
        """A copy of the live document `name` for admission's trial to change: the twin kept equal
        to it (handed out once), else one rebuilt from its encoding. A twin whose state vector is
        not the document's (it changed behind the replica's back) is not used, as stale facts are
        not."""
        doc = self._live[name]
        twin = self._twins.pop(name, None)
        if twin is not None:
            facts = self._facts.get(name)
            held = facts.clocks if facts is not None and facts.state == doc.get_state() else None
            if held is not None and yupdate.state_vector(twin.get_state()) == held:
                return twin
        scratch: SlotDoc = Doc()
        scratch.apply_update(doc.get_update())
        return scratch

    def apply_remote(
        self,
        name: str,
        update: bytes,
        after: After | None = None,
        source: str | None = UNKNOWN,
        trial: SlotDoc | None = None,
    ) -> tuple[bytes, list[tuple[str, float]]]:
        """Apply a peer's update; the bytes that changed us, and (origin edge, write time) per
        remote-owned slot that changed. `after` is what admission found the document will be once
        `update` is applied: it is folded into the document's facts when it matches. `source` is
        the peer that sent it (it holds what it sent), for the change log. `trial` is admission's
        trial copy, the document with `update` applied already: kept as its twin; with it (and
        `after`), the bytes returned are the update itself (it brings items not held here)."""
        doc = self._live[name]
        if update == EMPTY_UPDATE:
            return b"", []
        self._twins.pop(name, None)  # kept again below only if `trial` is the document once applied
        # With `after`, admission just read the facts through `facts`, and nothing changed since.
        facts = self._facts.get(name) if after is not None or name not in self._facts else self.facts(name)
        if trial is not None and after is not None and facts is not None:
            return self._apply_admitted(name, doc, update, after, facts, source, trial)
        before_sv = doc.get_state()
        before_ts = times_of(facts.values) if facts is not None else slot_times(doc)
        doc.apply_update(update)
        if trial is not None and trial.get_state() == doc.get_state():  # it ended where the document did
            self._twins[name] = trial
        changed = self._changed(name, doc, before_sv, source)
        if not changed:
            if facts is not None:  # deletions only: the same items, perhaps other values
                facts.values_stale = True
            return b"", []
        if facts is None:
            after_ts = slot_times(doc)
        elif after is not None and docfacts.same_vector(after, self.state_vectors[name]):
            docfacts.adopt(facts, after, self.state_vectors[name])
            after_ts = times_of(facts.values)
        else:
            facts = self._facts[name] = docfacts.changed(facts, doc, changed)
            after_ts = times_of(facts.values)
        arrived = [(edge, ts) for edge, ts in after_ts.items() if edge != self.edge_id and before_ts.get(edge) != ts]
        return changed, arrived

    def _apply_admitted(
        self, name: str, doc: SlotDoc, update: bytes, after: After, facts: DocFacts, source: str | None, trial: SlotDoc
    ) -> tuple[bytes, list[tuple[str, float]]]:
        """`apply_remote` of an update admission tried on `trial` (it brings items not held here:
        admission answers "nothing new" otherwise): what changed is the update itself, and the
        facts after it are the trial's, so no diff is encoded and nothing is read again. Should the
        document not end where the trial did (never expected), what changed is read from it."""
        before_sv, before_ts = facts.state, times_of(facts.values)
        doc.apply_update(update)
        state = doc.get_state()
        if state == before_sv:
            facts.values_stale = True
            return b"", []
        self._record(name, state, source)
        if docfacts.same_vector(after, state):
            self._twins[name] = trial
            docfacts.adopt(facts, after, state)
            changed = update
        else:
            changed = doc.get_update(before_sv)
            facts = self._facts[name] = docfacts.changed(facts, doc, changed)
        after_ts = times_of(facts.values)
        arrived = [(edge, ts) for edge, ts in after_ts.items() if edge != self.edge_id and before_ts.get(edge) != ts]
        return changed, arrived

    def changed_since(self, position: int) -> list[str]:
        """Documents whose state vector changed after change-log `position`, oldest change first
        (cost: the number of such documents)."""
        out = []
        for name in reversed(self._changes):
            if self._changes[name] <= position:
                break
            out.append(name)
        out.reverse()
        return out

    def streak(self, name: str) -> tuple[str | None, int]:
        """(source, before) of the latest run of changes of `name` that all came from one source
        (`LOCAL`, a peer's edge id, or `UNKNOWN`), where `before` is the change-log position of the
        document's last change before that run (0: none). Every change after a position p came from
        `source` exactly when `before <= p`. (UNKNOWN, 0) if it never changed here."""
        return self._streaks.get(name, (UNKNOWN, 0))

    def _follow(self, name: str, changed: bytes) -> None:
        """Keep the twin of `name` equal to it after a local write that changed it by `changed`
        (b"": nothing the bytes would carry, perhaps deletions only: the twin is dropped)."""
        twin = self._twins.get(name)
        if twin is None:
            return
        if changed:
            twin.apply_update(changed)
        else:
            del self._twins[name]

    def diff_for(self, name: str, remote_state_vector: bytes) -> bytes:
        return self._live[name].get_update(remote_state_vector)

    def _changed(self, name: str, doc: SlotDoc, before: bytes, source: str | None) -> bytes:
        with doc.transaction():  # one transaction for both reads
            after = doc.get_state()
            if after == before:
                return b""
            changed = doc.get_update(before)
        self._record(name, after, source)
        return changed

    def _record(self, name: str, state_vector: bytes, source: str | None) -> None:
        self.state_vectors[name] = state_vector
        self._log_change(name, source)

    def _log_change(self, name: str, source: str | None) -> None:
        previous = self._changes.get(name, 0)
        self.position += 1
        self._changes[name] = self.position
        self._changes.move_to_end(name)
        if source is UNKNOWN:
            self._streaks.pop(name, None)  # the default: nothing is known of its source
            return
        streak = self._streaks.get(name)
        if streak is None or streak[0] != source:
            self._streaks[name] = (source, previous)

    def _evict(self, keep: str) -> None:
        """Down to `docs_live_max` live documents, least recently used first, never a pinned one
        nor `keep` (the one just installed, which its caller is about to use): while every other
        one is pinned, the limit is overshot until they are not."""
        if len(self._live) <= self.docs_live_max:
            return  # (not a copy of every live name per install)
        for name in list(self._live):
            if len(self._live) <= self.docs_live_max:
                return
            if name != keep and not self._pinned(name):
                del self._live[name]
                self._facts.pop(name, None)
                self._twins.pop(name, None)
