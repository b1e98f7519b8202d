"""A reader for Yjs v1 update binaries (pure): which client wrote which struct where, and the
delete set, so that a peer's update can be checked before it is applied.

Only what Croupier documents hold is decoded in full: items whose content is `Any` (a slot value)
or `Deleted` (an overwritten one). Any other struct or content kind (GC, Skip, strings, nested
types, sub-documents...) is refused as `UnsupportedUpdate`: honest edges never write them.
Every count, length and nesting depth is bounded by the input, so hostile bytes cannot make the
reader loop, recurse or allocate beyond the update's own size. Eight-byte var_uints (client ids:
a few per cluster, in every struct header and delete set) are remembered once decoded, in a table of
bounded size, as the byte string that encodes them.

Layout (lib0 encoding, Yjs `encodeStateAsUpdate` v1):
    structs:    var_uint clients; per client: var_uint n, var_uint client, var_uint clock, n structs
    struct:     info byte; ref = info & 0x1f; 0 GC / 10 Skip: var_uint length; else an item:
                [origin id if info & 0x80] [right origin id if info & 0x40]
                if neither: var_uint 1 + var_string root name | var_uint 0 + parent id;
                            then var_string key if info & 0x20
                content (ref 1 Deleted: var_uint length; ref 8 Any: var_uint n, n any values)
    delete set: var_uint clients; per client: var_uint client, var_uint n, n x (var_uint clock, var_uint length)
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

ID = tuple[int, int]  # (client, clock)

CONTENT_DELETED, CONTENT_ANY = 1, 8
STRUCT_GC, STRUCT_SKIP = 0, 10
ANY_DEPTH_MAX = 8
VAR_UINT_BYTES_MAX = 8  # 56 bits: client ids are below 2**53
LONG_UINTS_MAX = 4096  # eight-byte var_uints (client ids) remembered decoded; forgotten all at once when full
_LONG_UINTS: dict[bytes, int] = {}  # the complete eight bytes of a var_uint -> its value


class MalformedUpdate(ValueError):
    """Not a Yjs v1 update (truncated, overlong or inconsistent)."""


class UnsupportedUpdate(ValueError):
    """A well-formed update with structs no Croupier document holds."""


@dataclass(frozen=True)
class Item:
    client: int
    clock: int
    length: int
    origin: ID | None
    right_origin: ID | None
    root: str | None  # root type name, when the parent is written (no origins)
    parent_item: ID | None  # a nested type as parent (never in Croupier documents)
    key: str | None  # parentSub: the map key, when written
    deleted: bool  # content Deleted
    values: tuple[Any, ...]  # content Any


@dataclass
class Update:
    items: list[Item] = field(default_factory=list)
    deletes: list[tuple[int, int, int]] = field(default_factory=list)  # (client, clock, length)
    delete_set_offset: int = 0  # where the delete set starts in the binary


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise MalformedUpdate("truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise MalformedUpdate("truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self) -> int:
        # The hot path of the reader: most values take one byte, and client ids take eight and
        # repeat (a few per document): those are looked up once decoded.
        data, pos = self.data, self.pos
        if pos < len(data) and data[pos] < 0x80:
            self.pos = pos + 1
            return data[pos]
        long_value = _LONG_UINTS.get(data[pos : pos + VAR_UINT_BYTES_MAX])
        if long_value is not None:
            self.pos = pos + VAR_UINT_BYTES_MAX
            return long_value
        end = min(pos + VAR_UINT_BYTES_MAX, len(data))
        value, shift = 0, 0
        while pos < end:
            b = data[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                if pos - self.pos == VAR_UINT_BYTES_MAX:
                    if len(_LONG_UINTS) >= LONG_UINTS_MAX:
                        _LONG_UINTS.clear()
                    _LONG_UINTS[data[self.pos : pos]] = value
                self.pos = pos
                return value
            shift += 7
        if end < self.pos + VAR_UINT_BYTES_MAX:
            raise MalformedUpdate("truncated")
        raise MalformedUpdate("var_uint too long")

    def count(self) -> int:
        """A count of things that each take at least one byte: never more than what is left."""
        n = self.uint()
        if n > len(self.data) - self.pos:
            raise MalformedUpdate("count beyond the data")
        return n

    def signed(self) -> int:  # lib0 var_int: sign in bit 6 of the first byte
        b = self.byte()
        value, negative, shift = b & 0x3F, b & 0x40, 6
        while b & 0x80:
            if shift > 7 * VAR_UINT_BYTES_MAX:
                raise MalformedUpdate("var_int too long")
            b = self.byte()
            value |= (b & 0x7F) << shift
            shift += 7
        return -value if negative else value

    def string(self) -> str:
        try:
            return self.take(self.count()).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedUpdate("string is not UTF-8") from None

    def any(self, depth: int = 0) -> Any:
        if depth > ANY_DEPTH_MAX:
            raise UnsupportedUpdate("value nested too deep")
        t = self.byte()
        if t == 127 or t == 126:
            return None
        if t == 125:
            return self.signed()
        if t == 124:
            return struct.unpack(">f", self.take(4))[0]
        if t == 123:
            return struct.unpack(">d", self.take(8))[0]
        if t == 122:
            return struct.unpack(">q", self.take(8))[0]
        if t == 121:
            return False
        if t == 120:
            return True
        if t == 119:
            return self.string()
        if t == 118:
            return {self.string(): self.any(depth + 1) for _ in range(self.count())}
        if t == 117:
            return [self.any(depth + 1) for _ in range(self.count())]
        if t == 116:
            return self.take(self.count())
        raise MalformedUpdate(f"unknown value type {t}")


def parse(update: bytes) -> Update:
    r = _Reader(update)
    out = Update()
    for _ in range(r.count()):
        n, client, clock = r.count(), r.uint(), r.uint()
        for _ in range(n):
            item = _struct(r, client, clock)
            out.items.append(item)
            clock += item.length
    out.delete_set_offset = r.pos
    for _ in range(r.count()):
        client = r.uint()
        for _ in range(r.count()):
            clock, length = r.uint(), r.uint()
            if length == 0:
                raise MalformedUpdate("empty delete range")
            out.deletes.append((client, clock, length))
    if r.pos != len(update):
        raise MalformedUpdate("trailing bytes")
    return out


def state_vector(encoded: bytes, trailing: bool = False) -> dict[int, int]:
    """client id -> clock, from an encoded state vector (var_uint n, n x (client, clock)); bytes
    after it are refused unless `trailing`."""
    r = _Reader(encoded)
    out = {}
    for _ in range(r.count()):
        client = r.uint()
        out[client] = r.uint()
    if r.pos != len(encoded) and not trailing:
        raise MalformedUpdate("trailing bytes")
    return out


def _struct(r: _Reader, client: int, clock: int) -> Item:
    info = r.byte()
    ref = info & 0x1F
    if ref in (STRUCT_GC, STRUCT_SKIP):
        raise UnsupportedUpdate("GC or Skip struct")
    origin = (r.uint(), r.uint()) if info & 0x80 else None
    right = (r.uint(), r.uint()) if info & 0x40 else None
    root = parent_item = key = None
    if origin is None and right is None:
        if r.uint() == 1:
            root = r.string()
        else:
            parent_item = (r.uint(), r.uint())
        if info & 0x20:
            key = r.string()
    if ref == CONTENT_DELETED:
        length = r.uint()
        if length == 0:
            raise MalformedUpdate("empty deleted content")
        return Item(client, clock, length, origin, right, root, parent_item, key, True, ())
    if ref == CONTENT_ANY:
        values = tuple(r.any() for _ in range(r.count()))
        if not values:
            raise MalformedUpdate("empty content")
        return Item(client, clock, len(values), origin, right, root, parent_item, key, False, values)
    raise UnsupportedUpdate(f"content kind {ref}")


def _uint(value: int) -> bytes:
    out = bytearray()
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def with_deletes(update: bytes, parsed: Update, deletes: list[tuple[int, int, int]]) -> bytes:
    """`update` with its delete set replaced by `deletes` (its structs unchanged)."""
    by_client: dict[int, list[tuple[int, int]]] = {}
    for client, clock, length in deletes:
        by_client.setdefault(client, []).append((clock, length))
    out = bytearray(update[: parsed.delete_set_offset])
    out += _uint(len(by_client))
    for client, ranges in by_client.items():
        out += _uint(client) + _uint(len(ranges))
        for clock, length in ranges:
            out += _uint(clock) + _uint(length)
    return bytes(out)
