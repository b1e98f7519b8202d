"""Which keys storage may hold: Bloom filters over the keys of the tables the writer creates rows in.

A fresh bet needs rows that almost never exist (its idempotency rows `idem` and `bets`, its round
of `client_rounds` when it opens one, and the unscoped `rounds` row of the same id). Asking the store
for them costs the group a hop to the loader thread and back. `KeyFilter` answers "certainly absent"
without asking: `may_hold(table, key)` is False only for a key that was never `add`ed, so a key
storage holds is never skipped; a false positive (about 1 in 600 at full capacity) only costs the
lookup the writer would have made anyway.

It stays exact for "absent" as long as every key written to storage is added: the overlay makes it
before the first write, adds the keys of every group's rows before they are committed, and fills
it with what the store held in the background (see core_ledger/overlay.py).

Per table a list of layers: the first holds what the store held at start and a quarter more (at
least 64 Ki keys), and when the last is full a new one twice the size of all before it is added,
so the layers stay few; a key that is absent is usually told so by the first bit looked at in each.

Python's `hash` of a tuple of strings is stable within one process (which is all this needs: the
filter is never stored). A key with a part that is not a string is never called absent (a number
and its text would find the same row in SQL but hash apart here).

Pure: no I/O; see docs/decisions/writer-key-filter.md for what it costs and earns.
"""

from __future__ import annotations

from collections.abc import Iterable

from core_ledger.domain.state import Key

BITS_PER_KEY = 24
# Three bits a key (set and tested inline below): with 24 bits a key, a false positive about 1 in
# 600 once a layer is full (fewer before). More hashes would cut that, but each costs every key
# added when the ledger starts (about 1 µs a key here, most of it these bit operations).
CAPACITY_MIN = 1 << 16  # keys of the smallest layer (192 KiB)


class _Layer:
    __slots__ = ("bits", "capacity", "count", "size")

    def __init__(self, capacity: int) -> None:
        self.bits = bytearray(capacity * BITS_PER_KEY // 8)
        self.size = len(self.bits) * 8  # bits
        self.capacity = capacity
        self.count = 0

    def add_all(self, keys: list[Key]) -> None:
        """Set the bits of each key (positions h, h + g, h + 2g: double hashing, g odd)."""
        bits, size = self.bits, self.size
        for key in keys:
            h = hash(key)
            g = (h >> 32) | 1
            p = h % size
            bits[p >> 3] |= 1 << (p & 7)
            p = (h + g) % size
            bits[p >> 3] |= 1 << (p & 7)
            p = (h + 2 * g) % size
            bits[p >> 3] |= 1 << (p & 7)
        self.count += len(keys)

    def holds(self, h: int) -> bool:
        bits, size, g = self.bits, self.size, (h >> 32) | 1
        p = h % size
        if not bits[p >> 3] & (1 << (p & 7)):
            return False
        p = (h + g) % size
        if not bits[p >> 3] & (1 << (p & 7)):
            return False
        p = (h + 2 * g) % size
        return bool(bits[p >> 3] & (1 << (p & 7)))


class KeyFilter:
    def __init__(self, tables: Iterable[str]) -> None:
        """One filter per table, each empty."""
        self._layers: dict[str, list[_Layer]] = {table: [_Layer(CAPACITY_MIN)] for table in tables}

    @property
    def tables(self) -> frozenset[str]:
        return frozenset(self._layers)

    def expect(self, table: str, count: int) -> None:
        """About `count` keys are about to be added to `table` (which holds none yet): its first
        layer is sized for them and a quarter more, so a full store's keys fill one layer."""
        layers = self._layers[table]
        if len(layers) == 1 and layers[0].count == 0:
            layers[0] = _Layer(max(CAPACITY_MIN, count + count // 4))

    def add(self, table: str, key: Key) -> None:
        self.add_all(table, [key])

    def add_all(self, table: str, keys: Iterable[Key]) -> None:
        layers, pending = self._layers[table], list(keys)
        while pending:
            layer = layers[-1]
            if layer.count >= layer.capacity:
                layer = _Layer(2 * sum(each.capacity for each in layers))
                layers.append(layer)
            room = layer.capacity - layer.count
            layer.add_all(pending[:room])
            pending = pending[room:]

    def may_hold(self, table: str, key: Key) -> bool:
        """False only if `key` was never added to `table` (True for a table not filtered)."""
        layers = self._layers.get(table)
        if layers is None:
            return True
        for part in key:
            if type(part) is not str:
                return True
        h = hash(key)
        return any(layer.holds(h) for layer in layers)

    def keys_added(self) -> dict[str, int]:
        return {table: sum(layer.count for layer in layers) for table, layers in self._layers.items()}

    def size_bytes(self) -> int:
        return sum(len(layer.bits) for layers in self._layers.values() for layer in layers)
