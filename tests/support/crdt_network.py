"""An in-memory network of replicas for CRDT tests: local writes, lossy delivery, anti-entropy."""

from __future__ import annotations

from edge.crdt import protocol
from edge.crdt.exchange import Admit, docs_to_load, handle, state_entries
from edge.crdt.replica import Replica

LIMITS = protocol.Limits()


def ensure_live(replica: Replica, names: list[str]) -> None:
    for name in names:
        if replica.live(name) is None:
            replica.install(name, [])


def deliver(replica: Replica, entries: list[tuple[str, bytes]], admit: Admit | None = None) -> list[tuple[str, bytes]]:
    """Feed one frame to `replica` through the real codec (updates checked by `admit` if given);
    return its replies."""
    entries = protocol.decode_frame(protocol.encode_frame(entries), LIMITS)
    ensure_live(replica, docs_to_load(replica, entries))
    return handle(replica, entries, admit).replies


def anti_entropy(a: Replica, b: Replica, rounds_max: int = 6, admit: Admit | None = None) -> None:
    """State-vector exchange both ways until nobody answers (bounded)."""
    for starter, other in ((a, b), (b, a)):
        sender, receiver = starter, other
        frame = state_entries(sender, sorted(sender.state_vectors))
        for _ in range(rounds_max):
            if not frame:
                break
            replies = deliver(receiver, frame, admit)
            sender, receiver, frame = receiver, sender, replies
        assert not frame, "anti-entropy did not settle"
