"""CRDT client ids that say which edge wrote an item, fresh at every start (pure: no I/O).

A Yjs/pycrdt client id is an unsigned integer below 2**53 (pycrdt refuses more). Ours are
`tag(edge id) << 37 | incarnation`: the high 16 bits are a hash of the edge id, so any replica
that knows the cluster's edge ids can tell the owning edge of every item, and the low 37 bits are
the start time in tenths of a second since 2024 (good for four centuries), so a restarted edge
never reuses a (client id, clock) pair that its peers may already hold from before a crash (even
one whose last writes never reached its disk). An incarnation is also kept above every one of the
same edge found in the local store (`after_stored`), for a clock stepped back or a fast restart. A later
incarnation also has the higher client id, and Yjs lets the higher client id win between
concurrent writes of the same key: a write made after a crash wins over the lost one that peers
still hold. Configs refuse a cluster where two edges' tags collide.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

TAG_BITS = 16
INCARNATION_BITS = 37
CLIENT_ID_LIMIT = 1 << (TAG_BITS + INCARNATION_BITS)  # 2**53, pycrdt's bound
INCARNATION_EPOCH_S = 1_704_067_200.0  # 2024-01-01T00:00:00Z
INCARNATIONS_PER_S = 10


def tag(edge_id: str) -> int:
    digest = hashlib.sha256(b"croupier-crdt-client\x00" + edge_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") % (1 << TAG_BITS)


def client_id(edge_id: str, incarnation: int) -> int:
    assert 0 <= incarnation < 1 << INCARNATION_BITS, incarnation
    return tag(edge_id) << INCARNATION_BITS | incarnation


def fresh_client_id(edge_id: str, now: float) -> int:
    """The client id of `edge_id` started at wall time `now` (seconds since the Unix epoch)."""
    incarnation = round((now - INCARNATION_EPOCH_S) * INCARNATIONS_PER_S)
    return client_id(edge_id, min(max(incarnation, 1), (1 << INCARNATION_BITS) - 1))


def after_stored(client: int, stored_clients: Iterable[int]) -> int:
    """`client`, or a later incarnation of the same edge if the local store already holds items
    of an incarnation at or after it (a clock stepped back, or a restart within 0.1 s)."""
    same_edge = [c for c in stored_clients if c >> INCARNATION_BITS == client >> INCARNATION_BITS]
    latest = max(same_edge, default=0)
    if latest < client:
        return client
    assert latest + 1 < CLIENT_ID_LIMIT and (latest + 1) >> INCARNATION_BITS == client >> INCARNATION_BITS
    return latest + 1


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
