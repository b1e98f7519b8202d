"""Which documents one anti-entropy round advertises to one peer (pure: no I/O, no clock of its own).

A round used to send every document's state vector to every peer: with a million documents that
is a million STEP1 entries per peer per second. `PeerRounds` keeps, per peer and across that
peer's links, what it still has to advertise:

- the documents whose state vector changed since the peer's last round (the replica's change log,
  `Replica.changed_since`): a round costs what changed;
- a sweep over every known document, in pages: the first sweep after this edge starts (or after it
  lost track of the peer) goes fast (`catch_up_docs` per round), since the peer may lack anything
  this edge stored before it restarted; later sweeps go slowly (`sweep_docs` per round) and are a
  backstop only (a peer restored from an old backup, a bug).

When a link ends, what was sent in its last moments may be lost (a blackholed link is noticed only
by its heartbeat; a peer may crash before storing what it received). `link_ended` rewinds the
peer's change-log position to where it stood `margin_s` before the peer was last heard from, so the
next link advertises those documents again. Rounds remember where they started in a bounded history;
a rewind older than that history starts a full sweep again.

The wire format is unchanged (STEP1 entries as before), so an edge of an older version still
converges with this one: it keeps sending all of its state vectors, this edge answers them.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from edge.crdt.replica import Replica

HISTORY_ROUNDS_MAX = 4096  # rounds remembered per peer (about an hour at one round a second)


@dataclass(frozen=True)
class _Round:
    at: float
    position: int  # change-log position the round advertised up to (exclusive of later changes)
    catching_up: bool
    sweep_id: int
    cursor: int


class PeerRounds:
    def __init__(self, sweep_docs: int, catch_up_docs: int) -> None:
        assert sweep_docs >= 1 and catch_up_docs >= sweep_docs
        self.sweep_docs = sweep_docs
        self.catch_up_docs = catch_up_docs
        self.position: int | None = None  # None: nothing known of the peer yet (full sweep first)
        self.catching_up = True
        self._sweep: list[str] = []
        self._sweep_id = 0
        self._cursor = 0
        self._history: deque[_Round] = deque(maxlen=HISTORY_ROUNDS_MAX)
        self._history_truncated = False

    def next_round(self, replica: Replica, now: float) -> list[str]:
        """The documents to advertise this round (each once; changed ones first)."""
        if self.position is None:
            self._restart_sweep(replica, catching_up=True)
            self.position = replica.position
        if len(self._history) == self._history.maxlen:
            self._history_truncated = True
        self._history.append(_Round(now, self.position, self.catching_up, self._sweep_id, self._cursor))
        names = dict.fromkeys(replica.changed_since(self.position))
        self.position = replica.position
        if self._cursor >= len(self._sweep):
            self._restart_sweep(replica, catching_up=False)
        page = self.catch_up_docs if self.catching_up else self.sweep_docs
        for name in self._sweep[self._cursor : self._cursor + page]:
            names.setdefault(name)
        self._cursor += page
        return [n for n in names if replica.known(n)]

    def link_ended(self, last_heard: float, margin_s: float) -> None:
        """Rewind to the round that started `margin_s` before the peer was last heard from (the
        caller passes the link's start when it never was)."""
        if not self._history:
            return
        target = last_heard - margin_s
        found = self._history[0]
        for record in reversed(self._history):
            if record.at <= target:
                found = record
                break
        if found.at > target and self._history_truncated:
            self.position = None  # older than what is remembered: advertise everything again
            return
        if found.position < (self.position or 0):
            self.position = found.position
        if found.catching_up:
            if self.catching_up and found.sweep_id == self._sweep_id:
                self._cursor = min(self._cursor, found.cursor)
            else:
                self.position = None  # the catch-up it was part of ended meanwhile: do it again

    @property
    def swept(self) -> bool:
        """The first (fast) sweep is complete."""
        return not self.catching_up

    def _restart_sweep(self, replica: Replica, catching_up: bool) -> None:
        self._sweep = list(replica.state_vectors)
        self._sweep_id += 1
        self._cursor = 0
        self.catching_up = catching_up
