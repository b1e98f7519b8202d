"""The writer stores the text `sealed` builds from the encoding it hashed: it must be exactly the
canonical text of the sealed entry (`entry_text`), whose hash verifies, for any transaction."""

from __future__ import annotations

from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from core_ledger.domain.journal import GENESIS_HASH, ChainCheck, chain_hash, entry_text, seal, sealed
from core_ledger.domain.records import Posting, Transaction

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**62), 2**62), st.text(max_size=12))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)


@settings(max_examples=200, deadline=None)
@given(
    fields=st.dictionaries(st.text(max_size=10), values, max_size=6),
    amount=st.integers(1, 10**12),
    sequence=st.integers(1, 10**9),
    epoch=st.integers(1, 10**6),
    prev=st.binary(min_size=32, max_size=32),
)
def test_sealed_text_is_the_canonical_text_of_the_sealed_entry(
    fields: dict[str, Any], amount: int, sequence: int, epoch: int, prev: bytes
) -> None:
    tx = cast(Transaction, {**fields, "type": "bet", "outcome": "committed", "result": {"é": "ü\u2028"}})
    postings = cast(
        list[Posting],
        [
            {"account": "a", "currency": "EUR", "amount_minor": amount},
            {"account": "b", "currency": "EUR", "amount_minor": -amount},
        ],
    )
    entry, text = sealed(tx, postings, sequence=sequence, epoch=epoch, prev_hash=prev.hex())
    assert text == entry_text(entry)
    body = {k: v for k, v in entry.items() if k != "hash"}
    assert entry["hash"] == chain_hash(prev.hex(), body)
    assert seal(tx, postings, sequence=sequence, epoch=epoch, prev_hash=prev.hex()) == entry


def test_a_chain_of_sealed_texts_verifies() -> None:
    check, prev = ChainCheck(), GENESIS_HASH
    rows = []
    for sequence in range(1, 6):
        postings = cast(
            list[Posting],
            [
                {"account": "a", "currency": "EUR", "amount_minor": sequence},
                {"account": "b", "currency": "EUR", "amount_minor": -sequence},
            ],
        )
        entry, text = sealed(
            cast(Transaction, {"type": "bet", "id": f"b{sequence}"}),
            postings,
            sequence=sequence,
            epoch=2,
            prev_hash=prev,
        )
        rows.append((sequence, text))
        prev = entry["hash"]
    assert check.feed(rows) and check.head_hash == prev
