"""Which copy of the ledger is right: the highest epoch, then the longest chain that verifies.

`compare_stores` reads two stores (offline copies, or a backup and a live copy) and reports, for
each, its epoch, head, fence and how far its chain verifies; which one wins; and whether the
loser is a prefix of the winner or where they diverge (the first sequence whose hashes differ),
with a one-sentence `verdict` for the operator. A diverged tail is reported, never merged: its
entries were never acknowledged by a synchronous primary, and an operator decides what to do with
them; a diverged copy cannot tail the winner (it refuses it as `replica_diverged`) until rebuilt.
"""

from __future__ import annotations

from typing import Any

import orjson

from core_ledger.domain import require
from core_ledger.journal_checks import verify_store
from core_ledger.store import Store

PAGE = 1000  # journal rows read per store per step


async def describe(store: Store) -> dict[str, Any]:
    head, report = await store.head(), await verify_store(store)
    verified = report["head_sequence"] if report["ok"] else (report["first_bad_sequence"] or 1) - 1
    return {
        "epoch": head.epoch,
        "head_sequence": head.sequence,
        "head_hash": head.hash,
        "fenced_by_epoch": (await store.fenced_by()) or None,
        "verifies": report["ok"],
        "verified_sequence": verified,
        "first_bad_sequence": report["first_bad_sequence"],
    }


async def first_divergence(a: Store, b: Store) -> int | None:
    """The first sequence present in both journals whose hashes differ; None if one is a prefix of
    the other (or both are equal). Reads both journals in step, a page at a time."""
    after = 0
    while True:
        rows_a, rows_b = await a.journal(after, PAGE), await b.journal(after, PAGE)
        for (seq_a, text_a), (seq_b, text_b) in zip(rows_a, rows_b, strict=False):  # pages may differ in length
            require(seq_a == seq_b, "journals are gapless from 1")
            if orjson.loads(text_a)["hash"] != orjson.loads(text_b)["hash"]:
                return seq_a
        if len(rows_a) < PAGE or len(rows_b) < PAGE:
            return None
        after = rows_a[-1][0]


def _rank(copy: dict[str, Any]) -> tuple[int, int]:
    return (copy["epoch"], copy["verified_sequence"])


async def compare_stores(a: Store, b: Store, names: tuple[str, str] = ("a", "b")) -> dict[str, Any]:
    copies = {names[0]: await describe(a), names[1]: await describe(b)}
    first = await first_divergence(a, b)
    ranked = sorted(copies, key=lambda n: _rank(copies[n]), reverse=True)
    tie = _rank(copies[ranked[0]]) == _rank(copies[ranked[1]])
    winner, loser = ranked
    loser_head = copies[loser]["head_sequence"]
    extra = 0 if first is None else loser_head - first + 1
    decided = None if tie and first is not None else winner
    return {
        "winner": decided,
        "same": first is None and copies[winner]["head_sequence"] == loser_head,
        "loser_is_prefix": first is None,
        "diverged": first is not None,
        "divergence_sequence": first,
        # Entries of the loser the winner does not hold: reported, never merged.
        "loser_extra_entries": extra,
        "rule": "highest epoch, then the longest chain that verifies",
        "verdict": _verdict(decided, loser, first, extra),
        "copies": copies,
    }


def _verdict(winner: str | None, loser: str, first: int | None, extra: int) -> str:
    """What an operator reads first: which copy serves, and what the other one may do."""
    if winner is None:
        return (
            f"the copies diverge at sequence {first} and neither ranks higher: an operator must decide which one serves"
        )
    if first is None:
        return f"{loser} is a prefix of {winner}: it may tail {winner} as its standby"
    return (
        f"{loser} DIVERGED from {winner} at sequence {first} ({extra} entries {winner} does not hold, never "
        f"acknowledged by a synchronous primary): it cannot tail {winner} (the primary refuses it as "
        f"replica_diverged); rebuild it from a backup of {winner} and report its tail, never merge it"
    )
