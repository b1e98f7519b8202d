"""CRDT client ids that say which edge wrote an item, fresh at every start (pure: no I/O).

A Yjs/pycrdt client id is an unsigned integer below 2**53 (pycrdt refuses more). Ours are
`tag(edge id) << 32 | incarnation`: the high 21 bits are a hash of the edge id, so any replica
that knows the cluster's edge ids can tell the owning edge of every item, and the low 32 bits are
a random incarnation drawn at each start, so a restarted edge never reuses a (client id, clock)
pair that its peers may already hold from before a crash (even one whose last writes never
reached its disk). Configs refuse a cluster where two edges' tags collide.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

TAG_BITS = 21
INCARNATION_BITS = 32
CLIENT_ID_LIMIT = 1 << (TAG_BITS + INCARNATION_BITS)  # 2**53, pycrdt's bound


def tag(edge_id: str) -> int:
    digest = hashlib.sha256(b"croupier-crdt-client\x00" + edge_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % (1 << TAG_BITS)


def client_id(edge_id: str, incarnation: int) -> int:
    assert 0 <= incarnation < 1 << INCARNATION_BITS, incarnation
    return tag(edge_id) << INCARNATION_BITS | incarnation


def fresh_client_id(edge_id: str, randbits: Callable[[int], int]) -> int:
    """A client id for this start of `edge_id` (`randbits`: e.g. `secrets.randbits`)."""
    while True:
        cid = client_id(edge_id, randbits(INCARNATION_BITS))
        if cid >= 1:
            return cid


def check_distinct_tags(edge_ids: Iterable[str]) -> None:
    seen: dict[int, str] = {}
    for e in edge_ids:
        other = seen.setdefault(tag(e), e)
        if other != e:
            raise ValueError(f"edge ids {other!r} and {e!r} share a CRDT client tag: rename one")


class Owners:
    """client id -> owning edge id, for the edges of one cluster."""

    def __init__(self, edge_ids: Iterable[str]) -> None:
        ids = list(edge_ids)
        check_distinct_tags(ids)
        self._by_tag = {tag(e): e for e in ids}

    def owner(self, client: int) -> str | None:
        if not 0 <= client < CLIENT_ID_LIMIT:
            return None
        return self._by_tag.get(client >> INCARNATION_BITS)
