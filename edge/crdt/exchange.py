"""What a replica does with a peer's sync entries (pure: every document it touches is live).

The transport first asks `docs_to_load` which documents must be live, loads them from the store,
then calls `handle`: updates are applied (reporting what changed, for persistence and lag), and
each STEP1 is answered per `protocol.answer_step1`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pycrdt import YSyncMessageType

from edge.crdt import protocol
from edge.crdt.admission import Verdict
from edge.crdt.replica import EMPTY_UPDATE, Replica
from edge.crdt.slots import SlotDoc

Admit = Callable[[str, SlotDoc, bytes], Verdict]  # (document, its live Doc, a peer's update) -> verdict


@dataclass
class Handled:
    replies: list[tuple[str, bytes]] = field(default_factory=list)
    changes: list[tuple[str, bytes]] = field(default_factory=list)  # (doc, bytes that changed us)
    arrived: list[tuple[str, float]] = field(default_factory=list)  # (origin edge, origin write time)
    differing: int = 0  # documents whose state vectors differed from the peer's
    refused: list[tuple[str, Verdict]] = field(default_factory=list)  # (doc, why), nothing applied
    # Documents evicted between load and handle (every other live one pinned): their entries were
    # not handled, and the transport asks the peer for them in its next round.
    evicted: list[str] = field(default_factory=list)


def docs_to_load(replica: Replica, entries: list[tuple[str, bytes]]) -> list[str]:
    names = []
    for name, message in entries:
        kind, payload = protocol.parse(message)
        if kind != YSyncMessageType.SYNC_STEP1 or (
            replica.known(name) and protocol.answer_step1(replica.state_vectors[name], payload).send_diff
        ):
            names.append(name)
    return list(dict.fromkeys(names))


def handle(
    replica: Replica, entries: list[tuple[str, bytes]], admit: Admit | None = None, source: str | None = None
) -> Handled:
    """With `admit`, every update is checked before it is applied (a refused one changes nothing).
    `source`: the peer the entries came from (recorded in the replica's change log)."""
    out = Handled()
    for name, message in entries:
        kind, payload = protocol.parse(message)
        if kind == YSyncMessageType.SYNC_STEP1:
            local_sv = replica.state_vectors.get(name, protocol.EMPTY_STATE_VECTOR)
            answer = protocol.answer_step1(local_sv, payload)
            if answer.send_diff:
                if replica.live(name) is not None:
                    out.replies.append((name, protocol.step2(replica.diff_for(name, payload))))
                else:  # evicted meanwhile: the next round advertises this state, the peer asks back
                    out.evicted.append(name)
            if answer.ask:
                out.replies.append((name, protocol.step1(local_sv)))
            out.differing += answer.send_diff or answer.ask
            continue
        doc = replica.live(name)
        if doc is None:  # evicted between load and handle (all others pinned): asked for next round
            out.evicted.append(name)
            continue
        after, trial = None, None
        if admit is not None and payload != EMPTY_UPDATE:
            verdict = admit(name, doc, payload)
            if verdict.update is None:
                out.refused.append((name, verdict))
                continue
            payload, after, trial = verdict.update, verdict.after, verdict.trial
        changed, arrived = replica.apply_remote(name, payload, after, source, trial)
        if changed:
            out.changes.append((name, changed))
            out.arrived.extend(arrived)
    return out


def state_entries(replica: Replica, names: list[str]) -> list[tuple[str, bytes]]:
    """STEP1 entries advertising our state of `names` (anti-entropy); an unknown one's is the
    empty state vector (asking the peer for all of it)."""
    empty = protocol.EMPTY_STATE_VECTOR
    return [(n, protocol.step1(replica.state_vectors.get(n, empty))) for n in names]
