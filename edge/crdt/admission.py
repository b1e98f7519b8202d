"""Admission of a peer's CRDT update (pure: no I/O): checked whole before it is applied.

Peers are hostile until checked. An update is admitted only if all of these hold:

- the document is of a known kind with well-formed ids (`jackpot/<id>`, `bonus/<player>`,
  `session/<player>/<game server>/<game>`, or `session/<player>/<game>` as saved by earlier
  releases), and a jackpot document names a jackpot the ledger confirmed;
- it parses as a Yjs v1 update holding only slot values (`edge.crdt.yupdate`);
- every item sits under the root map `slots` at the key of the edge that authored it, the owner
  of its client id (`edge.crdt.identity`); an item that continues another (a map overwrite names
  its predecessor as origin) sits at its origin's key, and when that origin is not here yet it
  must at least share its owner. Items of other edges relayed by this peer pass like their own.
- its delete set is trimmed before it is applied: deletions of items not seen yet are dropped
  (pycrdt would keep them pending and apply them later, unchecked; anti-entropy resends them with
  their items), and so are deletions that would leave a slot without a value (see `admit`): a
  peer cannot blank another edge's slot (short of forging that edge's items, see below);
- an update whose every item is held here already is admitted as the empty update without further
  checks: it brings nothing, and its deletions alone could only blank slots, which is never let
  happen (this is the common duplicate: a live push and an anti-entropy answer that crossed);
- applied to a scratch copy, all of it is integrated (nothing left pending for later, unchecked),
  every changed slot decodes strictly (`edge.crdt.slots`) with a write time not ahead of `now` by more
  than the allowed skew, a jackpot slot's epoch is not beyond the ledger's, and the document's
  encoded size stays within the quota.

What this cannot stop: client ids are not signed, so a peer holding a valid credential can still
forge items under another edge's client id (relays must pass). Such forgeries are bounded by the
value checks (types, ranges, an epoch the ledger confirmed, write times) and reconciliation
rewrites an edge's own slot from the ledger; signing updates is the next step if that matters.

Where the facts come from (docs/decisions/admission-from-kept-document-facts.md): only the update is
parsed; what is held (the slot key of every held item, the current slot values, the state vector)
comes from the `DocFacts` the replica keeps per document (`edge.crdt.docfacts`), or is read from the
document when none are given. The trial apply on a scratch copy proves "nothing pending" and gives
the values and size after; an admitted verdict hands them back (`Verdict.after`) so the replica
folds them into its facts instead of reading them again. Each changed slot is decoded once.

A refusal names a stable `reason` (a metric label). A refusal that is `deferred` is not the peer's
fault: this edge lacks a ledger fact to decide (a jackpot not confirmed yet, an epoch newer than the
one it knows); the caller asks the ledger and anti-entropy brings the update again.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pycrdt import Doc

from shared.ids import is_id

from edge.crdt import docfacts, yupdate
from edge.crdt.identity import Owners
from edge.crdt.slots import (
    BONUS,
    JACKPOT,
    SESSION,
    BadSlot,
    BonusSlot,
    JackpotSlot,
    SessionRecord,
    SlotDoc,
)

# Parts of a name after its kind: a session is `session/<player>/<game server>/<game>` (its game
# server's own), or `session/<player>/<game>` as saved before states were kept apart by game server.
PARTS = {JACKPOT: (1,), BONUS: (1,), SESSION: (2, 3)}
NOTHING_NEW = b"\x00\x00"  # the empty update: what an update whose every item is held here comes to

# Stable reasons (metric label values).
UNKNOWN_DOC = "unknown_doc"
UNKNOWN_JACKPOT = "unknown_jackpot"
MALFORMED = "malformed"
UNSUPPORTED = "unsupported"
FOREIGN_AUTHOR = "foreign_author"
INVALID_VALUE = "invalid_value"
TS_AHEAD = "ts_ahead"  # a write time further ahead than the skew allowed: the peer's clock, most often
EPOCH_AHEAD = "epoch_ahead"
DOC_QUOTA = "doc_quota"
PEER_QUOTA = "peer_quota"
UNVERIFIED_JACKPOT = "unverified_jackpot"  # deferred
UNVERIFIED_EPOCH = "unverified_epoch"  # deferred
UNVERIFIED_GAP = "unverified_gap"  # deferred
REASONS = (
    UNKNOWN_DOC,
    UNKNOWN_JACKPOT,
    MALFORMED,
    UNSUPPORTED,
    FOREIGN_AUTHOR,
    INVALID_VALUE,
    TS_AHEAD,
    EPOCH_AHEAD,
    DOC_QUOTA,
    PEER_QUOTA,
    UNVERIFIED_JACKPOT,
    UNVERIFIED_EPOCH,
    UNVERIFIED_GAP,
)


class JackpotFacts(Protocol):
    """What this edge learned from the ledger about jackpots."""

    def epoch(self, jackpot_id: str) -> int | None:
        """The ledger's current epoch of a confirmed jackpot; None if not confirmed (yet)."""

    def missing(self, jackpot_id: str) -> bool:
        """The ledger said it has no such jackpot."""

    def asked_recently(self, jackpot_id: str) -> bool:
        """The epoch was read from the ledger just now: a slot beyond it is the peer's fault."""


@dataclass(frozen=True)
class Rules:
    owners: Owners
    jackpots: JackpotFacts
    doc_bytes_max: int
    session_state_bytes_max: int
    now: float
    ts_skew_s: float = 300.0  # write times further in the future are refused (session last-writer-wins)
    # This edge's own client id, with which only it writes (a fresh one each start): a peer's new
    # item under it is forged. None: no such check (a replica that never writes).
    own_client: int | None = None


@dataclass(frozen=True)
class Verdict:
    update: bytes | None  # what to apply (unseen deletions dropped); None: refused
    reason: str = ""
    detail: str = ""
    deferred: bool = False
    after: docfacts.After | None = None  # of an admitted update: the document once it is applied
    trial: SlotDoc | None = None  # of an admitted update: the trial copy, equal to the document once applied

    @property
    def admitted(self) -> bool:
        return self.update is not None


def refuse(reason: str, detail: str, deferred: bool = False) -> Verdict:
    return Verdict(None, reason, detail, deferred)


@functools.lru_cache(maxsize=65536)
def check_name(name: str) -> Verdict | None:
    """A refusal for a document name of no known kind, else None (remembered: every update of a
    document asks again, and the verdicts are immutable)."""
    kind, _, rest = name.partition("/")
    parts = rest.split("/")
    if kind not in PARTS or len(parts) not in PARTS[kind] or not all(is_id(p) for p in parts):
        return refuse(UNKNOWN_DOC, f"no such document kind or malformed name: {name[:80]!r}")
    return None


def check_jackpot_missing(name: str, facts: JackpotFacts) -> Verdict | None:
    """A refusal for a jackpot document the ledger said does not exist, else None."""
    kind, _, jackpot_id = name.partition("/")
    if kind == JACKPOT and facts.missing(jackpot_id):
        return refuse(UNKNOWN_JACKPOT, f"the ledger has no jackpot {jackpot_id!r}")
    return None


def check_jackpot(name: str, facts: JackpotFacts) -> Verdict | None:
    kind, _, jackpot_id = name.partition("/")
    if kind != JACKPOT:
        return None
    if facts.missing(jackpot_id):
        return refuse(UNKNOWN_JACKPOT, f"the ledger has no jackpot {jackpot_id!r}")
    if facts.epoch(jackpot_id) is None:
        return refuse(UNVERIFIED_JACKPOT, f"jackpot {jackpot_id!r} not confirmed by the ledger yet", deferred=True)
    return None


def admit(
    name: str,
    doc: SlotDoc,
    update: bytes,
    rules: Rules,
    facts: docfacts.DocFacts | None = None,
    scratch_of: Callable[[], SlotDoc] | None = None,
) -> Verdict:
    """Check `update` for the live document `name` (`doc` is not changed). `facts` are what the
    replica knows of `doc` (`edge.crdt.docfacts`), as `Replica.facts` hands them out just before
    (it checks them against the document); without them they are read from `doc`. `scratch_of`
    hands out a copy of `doc` that the trial may change (`Replica.scratch`: a twin kept equal to
    it, so the trial does not rebuild the document from its encoding); without it the copy is
    rebuilt. An admitted verdict hands back the trial copy (`Verdict.trial`): it equals `doc`
    once `Verdict.update` is applied."""
    refused = check_name(name) or check_jackpot(name, rules.jackpots)
    if refused is not None:
        return refused
    try:
        parsed = yupdate.parse(update)
    except yupdate.MalformedUpdate as e:
        return refuse(MALFORMED, str(e))
    except yupdate.UnsupportedUpdate as e:
        return refuse(UNSUPPORTED, str(e))
    if facts is None:  # (given ones are the replica's, checked against `doc` by `Replica.facts`)
        facts = docfacts.facts_of(doc)
    if all(i.clock + i.length <= facts.clocks.get(i.client, 0) for i in parsed.items):
        # Nothing new (a live push and an anti-entropy answer crossed): applying it could only
        # delete, and no deletion is let to blank a slot, so it would change nothing.
        return Verdict(NOTHING_NEW)
    if rules.own_client is not None and any(
        i.client == rules.own_client and i.clock + i.length > facts.clocks.get(i.client, 0) for i in parsed.items
    ):  # an honest peer only ever hands back what this edge wrote, which it holds
        return refuse(FOREIGN_AUTHOR, "an item under this edge's own client id that it never wrote")
    new_keys, refused = _check_authors(parsed, facts, rules.owners)
    if refused is not None:
        return refused
    # Yjs sends a document's whole delete set with every diff. Deletions of items not seen here yet
    # are dropped (pycrdt would keep them pending and apply them later, unchecked; anti-entropy
    # resends them with their items). And an honest edge that saw eu's newer value "deletes" eu's
    # older one, which may still be eu's current value here while the newer one is not (or cannot
    # yet be integrated): such deletions are dropped too, so no update ever blanks a slot.
    # Nothing is lost: integrating an overwrite deletes its predecessor.
    deletes = _reachable_deletes(parsed, facts.clocks)
    before = docfacts.slot_values(doc) if facts.values_stale else facts.values
    try:
        trimmed = update if deletes == parsed.deletes else yupdate.with_deletes(update, parsed, deletes)
        scratch = _trial(scratch_of() if scratch_of is not None else _copy(doc), trimmed)
        after = docfacts.slot_values(scratch)
        blanked = set(before) - set(after)
        if blanked:
            held_bytes = doc.get_update()
            held = _held(held_bytes)
            current = {
                (i.client, i.clock)
                for i in held.items
                if not i.deleted and i.length == 1 and facts.key_of((i.client, i.clock)) in blanked
            }
            deletes = _sparing(deletes, current)
        if deletes != parsed.deletes:
            update = yupdate.with_deletes(update, parsed, deletes)
            if blanked:
                scratch = _trial(_copy(doc), update)
                after = docfacts.slot_values(scratch)
    except yupdate.MalformedUpdate as e:
        return refuse(MALFORMED, str(e))
    with scratch.transaction():  # one transaction for these reads
        state, size = scratch.get_state(), len(scratch.get_update())
    integrated = yupdate.state_vector(state)
    if any(i.clock + i.length > integrated.get(i.client, 0) for i in parsed.items):
        # Items that continue items not here yet would stay pending and be integrated later, when
        # their predecessors arrive, without being checked: the whole update waits for them.
        return refuse(UNVERIFIED_GAP, "the update continues items not received yet", deferred=True)
    refused = _check_values(name, before, after, rules)
    if refused is not None:
        return refused
    if size > rules.doc_bytes_max:
        return refuse(DOC_QUOTA, f"{name} would hold {size} bytes (quota {rules.doc_bytes_max})")
    return Verdict(update, after=docfacts.After(state, integrated, after, new_keys), trial=scratch)


# --- authors ----------------------------------------------------------------------------------


def _held(held: bytes) -> yupdate.Update:
    try:
        return yupdate.parse(held)
    except ValueError:  # held from before admission existed: origins into it count as unresolved
        return yupdate.Update()


def _check_authors(
    parsed: yupdate.Update, known: docfacts.KeyLookup, owners: Owners
) -> tuple[list[docfacts.KeyRange], Verdict | None]:
    """The keys of the update's items, and a refusal if any is not its author's."""
    found, unresolved = docfacts.resolve(parsed.items, known)
    keys = docfacts.Keys()
    for key_range in found:
        keys.add(*key_range)
    unresolved_ids = {(i.client, i.clock) for i in unresolved}
    for item in parsed.items:
        author = owners.owner(item.client)
        if author is None:
            return found, refuse(FOREIGN_AUTHOR, f"client {item.client} belongs to no edge of this cluster")
        if (item.client, item.clock) in unresolved_ids:
            origin = item.origin or item.right_origin
            if origin is None:
                return found, refuse(UNSUPPORTED, "an item outside the slots map")
            if owners.owner(origin[0]) != author:
                return found, refuse(FOREIGN_AUTHOR, f"{author}'s item continues an unseen item of another edge")
            continue
        key = keys.key_of((item.client, item.clock))
        if key is None:
            return found, refuse(UNSUPPORTED, "an item outside the slots map")
        if key != author:
            return found, refuse(FOREIGN_AUTHOR, f"{author}'s item writes the slot {str(key)[:40]!r}")
    return found, None


def _reachable_deletes(parsed: yupdate.Update, state: dict[int, int]) -> list[tuple[int, int, int]]:
    """Deletions clipped to the items held here or brought by the update."""
    reach = dict(state)
    for item in parsed.items:
        reach[item.client] = max(reach.get(item.client, 0), item.clock + item.length)
    kept = []
    for client, clock, length in parsed.deletes:
        end = min(clock + length, reach.get(client, 0))
        if end > clock:
            kept.append((client, clock, end - clock))
    return kept


def _sparing(deletes: list[tuple[int, int, int]], spared: set[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """`deletes` without the single item ids in `spared`."""
    out = []
    for client, start, length in deletes:
        end = start + length
        clock = start  # the first item not yet copied or cut
        for cut in sorted(c for (cl, c) in spared if cl == client and start <= c < end):
            if cut > clock:
                out.append((client, clock, cut - clock))
            clock = cut + 1
        if end > clock:
            out.append((client, clock, end - clock))
    return out


def _copy(doc: SlotDoc) -> SlotDoc:
    """A scratch copy of `doc` (rebuilt from its encoding)."""
    scratch: SlotDoc = Doc()
    scratch.apply_update(doc.get_update())
    return scratch


def _trial(scratch: SlotDoc, update: bytes) -> SlotDoc:
    """`scratch` (a copy of the held document) with `update` applied."""
    try:
        scratch.apply_update(update)
    except BaseException as e:  # pycrdt raises a BaseException (a Rust panic) on some bad input
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise yupdate.MalformedUpdate(f"pycrdt refused it: {type(e).__name__}") from None
    return scratch


# --- values ---------------------------------------------------------------------------------


def _check_values(name: str, before: dict[str, Any], after: dict[str, Any], rules: Rules) -> Verdict | None:
    """Every slot whose value changes decodes strictly (each value once), with a write time not
    too far ahead and, for a jackpot, an epoch the ledger confirmed."""
    kind, _, key = name.partition("/")
    for edge, value in after.items():
        if edge in before and before[edge] == value:
            continue
        try:
            slot = _decode(kind, value, rules)
        except BadSlot as e:
            return refuse(INVALID_VALUE, f"slot {edge!r}: {e}")
        ts = slot.ts
        if not math.isfinite(ts):
            return refuse(INVALID_VALUE, f"slot {edge!r}: write time {ts} is not a time")
        if ts > rules.now + rules.ts_skew_s:  # its own reason: a skewed clock is no attack
            return refuse(
                TS_AHEAD, f"slot {edge!r}: write time {ts} is {ts - rules.now:.0f} s ahead of this edge's clock"
            )
        if isinstance(slot, JackpotSlot):
            epoch = slot.epoch
            known = rules.jackpots.epoch(key)
            if known is None:
                return refuse(UNVERIFIED_JACKPOT, f"jackpot {key!r} not confirmed", deferred=True)
            if epoch > known and rules.jackpots.asked_recently(key):
                return refuse(EPOCH_AHEAD, f"slot {edge!r}: epoch {epoch} beyond the ledger's {known}")
            if epoch > known:
                return refuse(
                    UNVERIFIED_EPOCH,
                    f"slot {edge!r}: epoch {epoch} beyond the ledger's {known} known here",
                    deferred=True,
                )
    return None


def _decode(kind: str, value: Any, rules: Rules) -> JackpotSlot | BonusSlot | SessionRecord:
    if kind == JACKPOT:
        return JackpotSlot.decode(value)
    if kind == BONUS:
        return BonusSlot.decode(value)
    record = SessionRecord.decode(value, state_bytes_max=rules.session_state_bytes_max)
    return record
