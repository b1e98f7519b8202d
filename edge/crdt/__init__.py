"""CRDT state of an edge (pure, no I/O): owned-slot values, documents, effects, sync protocol."""

from edge.crdt.effects import Effect, EffectBook, JackpotTruth, reconcile_bonus, reconcile_jackpot
from edge.crdt.protocol import FrameBuilder, Limits, ProtocolError
from edge.crdt.replica import Replica, compact
from edge.crdt.slots import (
    BONUS,
    JACKPOT,
    SESSION,
    BonusSlot,
    JackpotSlot,
    JackpotView,
    SessionRecord,
    doc_name,
)

__all__ = [
    "BONUS",
    "JACKPOT",
    "SESSION",
    "BonusSlot",
    "Effect",
    "EffectBook",
    "FrameBuilder",
    "JackpotSlot",
    "JackpotTruth",
    "JackpotView",
    "Limits",
    "ProtocolError",
    "Replica",
    "SessionRecord",
    "compact",
    "doc_name",
    "reconcile_bonus",
    "reconcile_jackpot",
]
