"""Effects and reconciliation watermarks are ordered by (ledger epoch, sequence): after a failover,
two ledger copies may hold different entries at one sequence (the old primary's diverged tail), and
a plain sequence would let a read of the diverged copy hide the new primary's truth and effects."""

from __future__ import annotations

import pytest

from edge.crdt.effects import Effect, EffectBook, position

DOC = "bonus/p1"


def test_positions_order_like_epoch_then_sequence() -> None:
    assert position(1, 7228) < position(2, 7227) < position(2, 7228) < position(3, 1)
    assert position(0, 5) == 5  # a ledger that sends no epoch: plain sequences, as before
    with pytest.raises(ValueError, match="not a journal position"):
        position(1, -1)


def test_a_read_of_a_diverged_old_primary_does_not_hide_the_new_primarys_truth_or_effects() -> None:
    book = EffectBook()
    # The old primary (epoch 1) with a diverged tail answered up to 7228: the edge reconciled there.
    assert book.raise_watermark(DOC, position(1, 7228))
    # After the failover the new primary (epoch 2) holds 7227 entries: its truth is newer, not older.
    assert book.raise_watermark(DOC, position(2, 7227))
    # Its next entry reuses sequence 7228: an effect the edge must apply, not take as already counted.
    assert book.should_apply(DOC, position(2, 7228))
    book.record(Effect(DOC, position(2, 7228), {"welcome": 1}))
    assert book.after(DOC, position(2, 7227)) == [(position(2, 7228), {"welcome": 1})]
    # A stale read from the old copy never lowers the watermark again.
    assert not book.raise_watermark(DOC, position(1, 9999))


def test_with_plain_sequences_the_same_history_would_lose_the_effect() -> None:
    """What the positions fix: by sequence alone, the new primary's truth looks older than the
    diverged read, and its entry 7228 looks already counted."""
    book = EffectBook()
    book.raise_watermark(DOC, 7228)
    assert not book.raise_watermark(DOC, 7227) and not book.should_apply(DOC, 7228)
