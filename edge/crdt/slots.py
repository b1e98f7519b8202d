"""Owned-slot CRDT values inside pycrdt documents (pure: no I/O, no awaits).

Every document has one root Map, `slots`, keyed by edge id. Only the owning edge writes its key
and always as one whole value, so the same client rewrites the same key (pycrdt collects the
overwritten item) and concurrent writers never touch the same key (no lost increments).
Each value carries `ts`, the origin write time (seconds since the epoch, from an injected clock),
which the receiving edge uses to measure sync lag.

Document kinds (one document per key, so that no document grows without bound):

- `jackpot/<jackpot_id>`: {"epoch", "p", "n", "seed", "currency", "ts"[, "high"]}; display = seed
  of the highest epoch + sum over slots of that epoch of (p - n).
- `bonus/<player_id>`: {"w": {bonus_id: [p, n, ...]}, "ts"}; progress = sum over slots of (p - n).
- `session/<player_id>/<client_id>/<game_id>`: {"state" (JSON text), "updated_at", "ts"}; last
  writer wins by (ts, edge id). `client_id` names the game server that saved it: no other one
  reads or overwrites it. `session/<player_id>/<game_id>`: the same, saved by an earlier release
  (shared by every game server), still read.

pycrdt returns integers as floats and panics far above 2**53: `as_int` converts on read and
`check_int` bounds every value on write. A counter (p or n) may still grow past 2**53 (ten bets of
10**15 wager 10**16): it is written as several p/n pairs, digits in base 2**53 (`split_pairs`), each
exact. A value below 2**53 is one pair, so documents look as before; a jackpot slot keeps its
lowest pair in "p"/"n" and any higher pairs in "high" (absent when there are none).

Values come from peers too, so `decode` is strict (`BadSlot` for anything of the wrong shape, type
or range) and every reader skips a slot that does not decode instead of failing: a bad value is
refused at the door (`edge.crdt.admission`), and one that got in anyway never breaks a read.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias, TypeVar

import orjson
from pycrdt import Doc, Map

from shared.ids import is_id

# A replicated document: its one root is the SLOTS map (owner edge -> that edge's slot).
SlotDoc: TypeAlias = Doc[Map[Any]]

SLOTS = "slots"
INT_ABS_MAX = 2**53 - 1  # exact in a float, far below pycrdt's panic threshold
JACKPOT, BONUS, SESSION = "jackpot", "bonus", "session"


def doc_name(kind: str, *parts: str) -> str:
    # "/" is outside the id alphabet ([A-Za-z0-9._:-]), so names split back unambiguously.
    return "/".join((kind, *parts))


def doc_kind(name: str) -> str:
    return name.split("/", 1)[0]


CURRENCY_RE = re.compile(r"[A-Z]{3}")
BONUSES_PER_SLOT_MAX = 256
UPDATED_AT_CHARS_MAX = 64
T = TypeVar("T")


class BadSlot(ValueError):
    """A slot value of the wrong shape, type or range."""


def as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"not a number: {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise ValueError(f"not an integer: {value!r}")
    return int(value)


def check_int(value: int) -> int:
    if not isinstance(value, int) or abs(value) > INT_ABS_MAX:
        raise ValueError(f"not an integer within +-(2**53 - 1): {value!r}")
    return value


PAIR_BASE = INT_ABS_MAX + 1  # 2**53: every digit of a split counter is exact in a float
PAIRS_MAX = 4  # counters below 2**212: far beyond any sum of 64-bit ledger amounts


def split_pairs(p: int, n: int) -> list[int]:
    """[p0, n0, p1, n1, ...]: the base-2**53 digits of two non-negative counters, lowest first;
    one pair when both are below 2**53."""
    if p < 0 or n < 0:
        raise ValueError(f"counters are non-negative: {p}, {n}")
    out = [p % PAIR_BASE, n % PAIR_BASE]
    p, n = p // PAIR_BASE, n // PAIR_BASE
    while p or n:
        out += [p % PAIR_BASE, n % PAIR_BASE]
        p, n = p // PAIR_BASE, n // PAIR_BASE
    return out


def join_pairs(values: list[Any]) -> tuple[int, int]:
    """(p, n) from the digits `split_pairs` wrote (or a plain [p, n] pair)."""
    if len(values) < 2 or len(values) % 2:
        raise ValueError(f"p/n pairs are needed, not {values!r}")
    p = n = 0
    for i in range(len(values) // 2 - 1, -1, -1):
        p = p * PAIR_BASE + as_int(values[2 * i])
        n = n * PAIR_BASE + as_int(values[2 * i + 1])
    return p, n


def count_in(value: Any, lo: int = 0) -> int:
    """An integer in lo..INT_ABS_MAX, else BadSlot."""
    try:
        n = as_int(value)
    except ValueError as e:
        raise BadSlot(str(e)) from None
    if not lo <= n <= INT_ABS_MAX:
        raise BadSlot(f"out of range: {n}")
    return n


def origin_time(value: Any) -> float:
    """A write time: a finite, non-negative number of seconds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise BadSlot(f"not a write time: {value!r}")
    return float(value)


def fields(value: Any, required: frozenset[str], optional: frozenset[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(value, dict) or not required <= set(value) <= required | optional:
        raise BadSlot(f"expected the fields {sorted(required)} (and optionally {sorted(optional)})")
    return value


def counter_pairs(values: Any) -> tuple[int, int]:
    """(p, n) from a strict list of base-2**53 digits [p0, n0, p1, n1, ...] (see `split_pairs`)."""
    if not isinstance(values, list) or not 2 <= len(values) <= 2 * PAIRS_MAX or len(values) % 2:
        raise BadSlot(f"expected 1 to {PAIRS_MAX} p/n pairs")
    return join_pairs([count_in(d) for d in values])


def decoded(doc: SlotDoc, decode: Callable[[Any], T]) -> tuple[dict[str, T], list[str]]:
    """(owner edge -> value) of the slots that decode, and the owners of those that do not."""
    return decoded_values(slot_items(doc), decode)


def decoded_values(values: dict[str, Any], decode: Callable[[Any], T]) -> tuple[dict[str, T], list[str]]:
    """`decoded` of slot values read already (owner edge -> raw value)."""
    good, bad = {}, []
    for edge, value in values.items():
        try:
            good[edge] = decode(value)
        except BadSlot:
            bad.append(edge)
    return good, bad


ROOT_ATTRIBUTE = "_croupier_slots_root"


def slots(doc: SlotDoc) -> Map[Any]:
    """The document's root map. Made once per document and kept on it: `Doc.get` builds a new
    wrapper and integrates it as a root in a transaction of its own at every call (the largest
    single cost of a local write). A root's integrated object lives as long as its document."""
    root: Map[Any] | None = doc.__dict__.get(ROOT_ATTRIBUTE)
    if root is None:
        root = doc.get(SLOTS, type=Map)
        doc.__dict__[ROOT_ATTRIBUTE] = root
    return root


PLAIN_VALUES = (dict, list, str, float, int, bool, type(None))  # what a slot's value reads as


def slot_items(doc: SlotDoc) -> dict[str, Any]:
    """Every slot's value, read in one transaction through the map's integrated (Rust) object:
    `Map.items()` opens and commits a transaction per key, twice the time for a three-slot
    document, on every peer update admitted. Values are what `Map.__getitem__` returns.
    A document read once (admission's scratch copy) gets no root wrapper: building one costs
    more than the read."""
    root: Map[Any] | None = doc.__dict__.get(ROOT_ATTRIBUTE)
    with doc.transaction() as txn:
        read = txn._txn
        assert read is not None
        raw: Any = root.integrated if root is not None else doc._doc.get_or_insert_map(read, SLOTS)
        values = {key: raw.get(read, key) for key in raw.keys(read)}
    if all(isinstance(v, PLAIN_VALUES) for v in values.values()):
        return values
    wrapper = slots(doc)  # a nested shared type (never admitted): as `Map.__getitem__` wraps it
    return {key: v if isinstance(v, PLAIN_VALUES) else wrapper._maybe_as_type_or_doc(v) for key, v in values.items()}


def raw_slots(doc: SlotDoc) -> dict[str, dict[str, Any]]:
    return {edge: value for edge, value in slot_items(doc).items() if isinstance(value, dict)}


def slot_times(doc: SlotDoc) -> dict[str, float]:
    """Origin write time of every slot that has a valid one, by owner edge."""
    return times_of(raw_slots(doc))


def times_of(values: dict[str, Any]) -> dict[str, float]:
    """Origin write time of every slot value (owner edge -> raw value) that has a valid one."""
    out = {}
    for edge, v in values.items():
        if isinstance(v, dict):
            with contextlib.suppress(BadSlot):
                out[edge] = origin_time(v.get("ts"))
    return out


def write_slot(doc: SlotDoc, edge: str, value: dict[str, Any]) -> None:
    slots(doc)[edge] = value


# --- jackpots ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class JackpotSlot:
    epoch: int
    p: int
    n: int
    seed_minor: int
    currency: str
    ts: float

    def encode(self) -> dict[str, Any]:
        pairs = [check_int(v) for v in split_pairs(self.p, self.n)]
        out = {
            "epoch": check_int(self.epoch),
            "p": pairs[0],
            "n": pairs[1],
            "seed": check_int(self.seed_minor),
            "currency": self.currency,
            "ts": self.ts,
        }
        if len(pairs) > 2:
            out["high"] = pairs[2:]
        return out

    FIELDS = frozenset({"epoch", "p", "n", "seed", "currency", "ts"})

    @staticmethod
    def decode(value: Any) -> JackpotSlot:
        v = fields(value, JackpotSlot.FIELDS, frozenset({"high"}))
        currency = v["currency"]
        if not isinstance(currency, str) or not (currency == "" or CURRENCY_RE.fullmatch(currency)):
            raise BadSlot(f"not a currency: {currency!r}")  # "" until the ledger told the seed's currency
        high = v.get("high", [])
        if not isinstance(high, list) or (len(high) == 0 and "high" in v):
            raise BadSlot("high must hold the higher p/n pairs")
        p, n = counter_pairs([v["p"], v["n"], *high])
        return JackpotSlot(count_in(v["epoch"], 1), p, n, count_in(v["seed"]), currency, origin_time(v["ts"]))

    def add(self, epoch: int, amount_minor: int, ts: float, seed_minor: int | None = None) -> JackpotSlot:
        """This slot after one contribution (negative: a reversal) tagged with its epoch; a newer
        epoch (a payout happened) starts from zero, with its seed when known."""
        if epoch < self.epoch:
            return self  # a contribution to a paid-out epoch no longer shows anywhere
        seed = self.seed_minor if seed_minor is None else seed_minor
        base = self if epoch == self.epoch else JackpotSlot(epoch, 0, 0, seed, self.currency, ts)
        p, n = (base.p + amount_minor, base.n) if amount_minor >= 0 else (base.p, base.n - amount_minor)
        return JackpotSlot(epoch, p, n, base.seed_minor, base.currency, ts)


@dataclass(frozen=True)
class JackpotView:
    display_minor: int
    epoch: int
    seed_minor: int
    currency: str
    by_edge: dict[str, int]
    as_of_ts: float


def jackpot_slots(doc: SlotDoc) -> dict[str, JackpotSlot]:
    return decoded(doc, JackpotSlot.decode)[0]


def jackpot_view(all_slots: dict[str, JackpotSlot], own: str | None = None) -> JackpotView | None:
    """The display: the current epoch's seed and every edge's contribution to it. Seed and
    currency are those of `own`'s slot when it is at that epoch (this edge's own slot, written
    from the ledger's answer): a peer's slot, which any peer holding a credential can fill with
    another seed or currency, is the best guess only until this edge holds one."""
    if not all_slots:
        return None
    epoch = max(s.epoch for s in all_slots.values())
    current = {e: s for e, s in all_slots.items() if s.epoch == epoch}
    first = current[own if own in current else min(current)]
    by_edge = {e: s.p - s.n for e, s in sorted(current.items())}
    return JackpotView(
        first.seed_minor + sum(by_edge.values()),
        epoch,
        first.seed_minor,
        first.currency,
        by_edge,
        max(s.ts for s in all_slots.values()),
    )


# --- bonus wagering progress ------------------------------------------------------------------


@dataclass(frozen=True)
class BonusSlot:
    wagered: dict[str, tuple[int, int]]  # bonus_id -> (p, n)
    ts: float

    def encode(self) -> dict[str, Any]:
        return {
            "w": {b: [check_int(d) for d in split_pairs(p, n)] for b, (p, n) in self.wagered.items()},
            "ts": self.ts,
        }

    FIELDS = frozenset({"w", "ts"})

    @staticmethod
    def decode(value: Any) -> BonusSlot:
        v = fields(value, BonusSlot.FIELDS)
        w = v["w"]
        if not isinstance(w, dict) or len(w) > BONUSES_PER_SLOT_MAX:
            raise BadSlot("w must map at most 256 bonus ids to [p, n]")
        wagered = {}
        for bonus_id, pn in w.items():
            if not is_id(bonus_id):
                raise BadSlot(f"not a bonus id: {bonus_id!r}")
            wagered[bonus_id] = counter_pairs(pn)
        return BonusSlot(wagered, origin_time(v["ts"]))

    def add(self, deltas: dict[str, int], ts: float) -> BonusSlot:
        """With `deltas` added: at most BONUSES_PER_SLOT_MAX entries, as `decode` reads no more (an
        own slot it could not read back was rebuilt and rewritten at every reconciliation, and
        refused by every peer). Over the bound, entries with wagering are kept first, then by id:
        a player with more offers than that sees some without this edge's count."""
        wagered = dict(self.wagered)
        for bonus_id, amount in deltas.items():
            p, n = wagered.get(bonus_id, (0, 0))
            wagered[bonus_id] = (p + amount, n) if amount >= 0 else (p, n - amount)
        if len(wagered) > BONUSES_PER_SLOT_MAX:
            kept = sorted(wagered.items(), key=lambda item: (item[1][0] == item[1][1], item[0]))
            wagered = dict(kept[:BONUSES_PER_SLOT_MAX])
        return BonusSlot(wagered, ts)


def bonus_slots(doc: SlotDoc) -> dict[str, BonusSlot]:
    return decoded(doc, BonusSlot.decode)[0]


def bonus_progress(all_slots: dict[str, BonusSlot]) -> dict[str, dict[str, int]]:
    """bonus_id -> {edge: net wagered} over every edge's slot."""
    out: dict[str, dict[str, int]] = {}
    for edge, slot in sorted(all_slots.items()):
        for bonus_id, (p, n) in slot.wagered.items():
            out.setdefault(bonus_id, {})[edge] = p - n
    return out


# --- game-session records ---------------------------------------------------------------------


@dataclass(frozen=True)
class SessionRecord:
    state_json: str  # kept as text: JSON numbers round-trip exactly, no float conversion
    updated_at: str
    ts: float

    def encode(self) -> dict[str, Any]:
        return {"state": self.state_json, "updated_at": self.updated_at, "ts": self.ts}

    FIELDS = frozenset({"state", "updated_at", "ts"})

    @staticmethod
    def decode(value: Any, state_bytes_max: int | None = None) -> SessionRecord:
        """Strictly; with `state_bytes_max`, a larger state is refused before it is parsed."""
        v = fields(value, SessionRecord.FIELDS)
        state, updated_at = v["state"], v["updated_at"]
        if not isinstance(state, str) or not isinstance(updated_at, str) or len(updated_at) > UPDATED_AT_CHARS_MAX:
            raise BadSlot("state and updated_at must be text")
        if state_bytes_max is not None and len(state.encode()) > state_bytes_max:
            raise BadSlot(f"state larger than {state_bytes_max} bytes")
        try:
            if not isinstance(orjson.loads(state), dict):
                raise BadSlot("state must be a JSON object")
        except orjson.JSONDecodeError:
            raise BadSlot("state is not JSON") from None
        return SessionRecord(state, updated_at, origin_time(v["ts"]))


def session_latest(doc: SlotDoc) -> tuple[str, SessionRecord] | None:
    """The last writer's record and its edge: highest origin time, ties broken by edge id."""
    return latest_session(slot_items(doc))


def latest_session(values: dict[str, Any]) -> tuple[str, SessionRecord] | None:
    """`session_latest` of slot values read already (owner edge -> raw value)."""
    records = decoded_values(values, SessionRecord.decode)[0]
    if not records:
        return None
    edge = max(records, key=lambda e: (records[e].ts, e))
    return edge, records[edge]
