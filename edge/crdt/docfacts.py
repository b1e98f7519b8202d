"""What admission needs to know about a held document, kept up to date per change (pure: no I/O).

Checking a peer's update against a document needs three facts about what is held: the slot key
of every held item (an overwrite names its predecessor as origin, and inherits its key), the
current slot values (only slots whose value changes are decoded and checked), and the state
vector (deletions of items not seen yet are dropped). Reading them from scratch means encoding
the whole document and parsing it in Python for every update; instead `facts_of` reads them once
(the first time admission asks about a live document), and every later change is folded in:

- an admitted update (`adopt`): admission resolved the keys of its items and saw, on its scratch
  copy, the values and state vector after it (`After`);
- a peer's update admission did not see (`changed`): its own bytes are parsed;
- a local write (`written`): its bytes are kept and its items' keys read only when a key is asked
  for that is not known (`DocFacts.key_of`: a peer's item rarely continues one of this edge's),
  and the values are read again only when next needed (`values_stale`).

Every fact records the state vector it describes (`state`): facts that do not match the
document's state vector are stale (the document changed behind the replica's back) and are
recomputed, so they can cost time but never let an unchecked key through. An id that has a key
keeps it, and a change's items are recorded only beyond the state vector before it, so a
duplicate of a held item cannot relabel it.
`tests/edge/test_docfacts.py` checks that the facts kept by folding equal the facts read from
scratch after random sequences of local writes and admitted (and refused) peer updates.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge.crdt import yupdate
from edge.crdt.slots import SLOTS, SlotDoc, slot_items

KeyRange = tuple[int, int, int, str]  # (client, first clock, length, slot key)


class Keys:
    """Slot key of every item by id range: client -> sorted, disjoint [start, end) ranges."""

    def __init__(self) -> None:
        self._starts: dict[int, list[int]] = {}
        self._ranges: dict[int, list[tuple[int, int, str]]] = {}  # client -> [(start, end, key)]

    def add(self, client: int, clock: int, length: int, key: str) -> None:
        """Record `key` for ids [clock, clock + length) of `client`; ids already recorded keep
        their key (an item's id names one item: a later claim to it is not believed)."""
        starts = self._starts.setdefault(client, [])
        ranges = self._ranges.setdefault(client, [])
        start, end = clock, clock + length
        i = bisect_right(starts, start)
        if i and ranges[i - 1][1] > start:  # starts inside the range before: keep its ids
            start = ranges[i - 1][1]
        while start < end:
            # ranges[i] is the first range starting after `start`: fill the gap up to it
            gap_end = min(end, ranges[i][0]) if i < len(ranges) else end
            if gap_end > start:
                i = self._insert(client, i, start, gap_end, key)
            if i < len(ranges) and ranges[i][0] <= gap_end:
                start = ranges[i][1]
                i += 1
            else:
                start = gap_end

    def _insert(self, client: int, i: int, start: int, end: int, key: str) -> int:
        """Put [start, end) -> key (a gap) before ranges[i], merged with neighbours of the same
        key; the index of the first range after it."""
        starts, ranges = self._starts[client], self._ranges[client]
        if i and ranges[i - 1][1] == start and ranges[i - 1][2] == key:
            start = ranges[i - 1][0]
            del ranges[i - 1], starts[i - 1]
            i -= 1
        if i < len(ranges) and ranges[i][0] == end and ranges[i][2] == key:
            end = ranges[i][1]
            del ranges[i], starts[i]
        ranges.insert(i, (start, end, key))
        starts.insert(i, start)
        return i + 1

    def key_of(self, item_id: tuple[int, int]) -> str | None:
        client, clock = item_id
        starts = self._starts.get(client)
        if not starts:
            return None
        i = bisect_right(starts, clock)
        if i == 0:
            return None
        _, end, key = self._ranges[client][i - 1]
        return key if clock < end else None

    def ranges(self) -> list[KeyRange]:
        return sorted((c, s, e - s, k) for c, rs in self._ranges.items() for s, e, k in rs)

    def copy(self) -> Keys:
        out = Keys()
        out._starts = {c: list(s) for c, s in self._starts.items()}
        out._ranges = {c: list(r) for c, r in self._ranges.items()}
        return out


class KeyLookup(Protocol):
    def key_of(self, item_id: tuple[int, int]) -> str | None: ...


def resolve(items: list[yupdate.Item], known: KeyLookup) -> tuple[list[KeyRange], list[yupdate.Item]]:
    """Keys of `items` (written, or inherited from their origins among them or in `known`); and
    the items whose origin is in neither."""
    keys, found, todo = Keys(), [], []
    for item in items:
        if item.origin is None and item.right_origin is None:
            if item.root == SLOTS and item.key is not None:
                keys.add(item.client, item.clock, item.length, item.key)
                found.append((item.client, item.clock, item.length, item.key))
            # else: not a slot (another root, a nested type, no key): left unresolved
        else:
            todo.append(item)
    progress = True
    while todo and progress:  # origins may come later in the update: repeat until nothing resolves
        progress, rest = False, []
        for item in todo:
            origin = item.origin or item.right_origin
            assert origin is not None
            key = keys.key_of(origin) or known.key_of(origin)
            if key is None:
                rest.append(item)
            else:
                keys.add(item.client, item.clock, item.length, key)
                found.append((item.client, item.clock, item.length, key))
                progress = True
        todo = rest
    return found, todo


def slot_values(doc: SlotDoc) -> dict[str, Any]:
    return slot_items(doc)


@dataclass(frozen=True)
class After:
    """A document as it will be once an admitted update is applied (what admission saw on its
    scratch copy): the replica folds it into the document's facts instead of reading them again."""

    state: bytes
    clocks: dict[int, int]
    values: dict[str, Any]
    new_keys: list[KeyRange]  # keys of the update's items


@dataclass
class DocFacts:
    state: bytes  # the document's state vector these facts describe
    clocks: dict[int, int]  # the same, decoded: client -> next clock
    values: dict[str, Any]  # slot key -> current value (stale while `values_stale`)
    keys: Keys = field(default_factory=Keys)  # of every held item whose key is known...
    local: list[bytes] = field(default_factory=list)  # ...but the items of these local writes
    values_stale: bool = False  # a local write changed the values since they were read

    def key_of(self, item_id: tuple[int, int]) -> str | None:
        """The key of a held item; the keys of local writes are read only when one is asked for
        (a peer's item rarely continues one of this edge's)."""
        key = self.keys.key_of(item_id)
        if key is None and self.local:
            self.settle()
            key = self.keys.key_of(item_id)
        return key

    def settle(self) -> None:
        """Record the keys of the local writes not read yet."""
        local, self.local = self.local, []
        for diff in local:
            try:
                items = yupdate.parse(diff).items
            except ValueError:  # not from pycrdt as we use it: its items stay unresolved
                continue
            for key_range in resolve(items, self)[0]:
                self.keys.add(*key_range)

    def key_ranges(self) -> list[KeyRange]:
        self.settle()
        return self.keys.ranges()

    def keys_from(self, new_keys: list[KeyRange]) -> None:
        """Record the keys of a change's items, before `state` moves past them: ids held already
        keep the key they have."""
        for client, clock, length, key in new_keys:
            start = max(clock, self.clocks.get(client, 0))
            if clock + length > start:
                self.keys.add(client, start, clock + length - start, key)


def facts_of(doc: SlotDoc) -> DocFacts:
    """The facts of `doc` read from scratch (parses the whole document)."""
    with doc.transaction():
        held, state, values = doc.get_update(), doc.get_state(), slot_values(doc)
    out = DocFacts(state, yupdate.state_vector(state), values)
    try:
        items = yupdate.parse(held).items
    except ValueError:  # held from before admission existed: origins into it count as unresolved
        items = []
    for client, clock, length, key in resolve(items, Keys())[0]:
        out.keys.add(client, clock, length, key)
    return out


def written(facts: DocFacts, state: bytes, diff: bytes, values: dict[str, Any] | None = None) -> None:
    """`facts` (updated in place) after a local write changed the document by `diff` to `state`:
    its items' keys are read when needed; the values are `values` (read in the write's wake), or
    read when next needed."""
    facts.local.append(diff)
    facts.state = state
    facts.clocks = yupdate.state_vector(state)
    if values is None:
        facts.values_stale = True
    else:
        facts.values, facts.values_stale = values, False


def changed(facts: DocFacts, doc: SlotDoc, diff: bytes) -> DocFacts:
    """`facts` (updated in place) after `doc` changed by a peer's `diff` admission did not see."""
    try:
        items = yupdate.parse(diff).items
    except ValueError:
        return facts_of(doc)
    facts.keys_from(resolve(items, facts)[0])
    facts.state = doc.get_state()
    facts.clocks = yupdate.state_vector(facts.state)
    facts.values, facts.values_stale = slot_values(doc), False
    return facts


def same_vector(after: After, state: bytes) -> bool:
    """Is `state` (a live document's state vector) the one `after` saw on admission's scratch copy?
    Compared as vectors: the two documents encode the same vector with its clients in different
    orders more often than not (byte equality missed every time in bench/admission.py's shape)."""
    return after.state == state or after.clocks == yupdate.state_vector(state)


def adopt(facts: DocFacts, after: After, state: bytes) -> None:
    """`facts` (updated in place) once the update `after` describes is applied; `state` is the
    document's state vector as it encodes it (`same_vector(after, state)`)."""
    facts.keys_from(after.new_keys)
    facts.state, facts.clocks = state, after.clocks
    facts.values, facts.values_stale = after.values, False
