"""Live pushes a peer may not have received yet, per link (pure: no I/O, the caller's clock).

An anti-entropy round advertises the documents that changed; at the rates an edge takes, many of
them changed by a write this edge pushed to the peer moments ago. If the peer's state vector
reached this edge before the push reached the peer, the answer (a STEP2 with the same items) and
the push cross, and one of them arrives as a duplicate: at 500 updates/s, 88% of STEP2 answers
were duplicates, three for every live update. `InFlight` says which answers to hold back instead:
those that would give the peer only this edge's own items of a document pushed on this link within
`window_s`, unless an answer was already held back at the same point of the peer's (the peer did
not move on: the push was lost or refused, answer now). A held-back document is advertised again
next round (`PeerRounds.again`), so a lost push costs one round, never more.
"""

from __future__ import annotations


class InFlight:
    def __init__(self, window_s: float, held_back_s: float) -> None:
        assert 0 < window_s <= held_back_s
        self.window_s = window_s
        self.held_back_s = held_back_s
        self._pushed: dict[str, float] = {}  # document -> when last pushed, oldest first
        self._held_back: dict[str, tuple[int, float]] = {}  # document -> (peer's clock, when)

    def pushed(self, name: str, now: float) -> None:
        self._pushed.pop(name, None)  # re-inserted last: the dict stays oldest first
        self._pushed[name] = now

    def hold_back(self, name: str, their_clock: int, now: float) -> bool:
        """Hold back an answer giving the peer this edge's items of `name` from `their_clock` on?"""
        pushed = self._pushed.get(name)
        if pushed is None or now - pushed > self.window_s:
            return False
        held = self._held_back.get(name)
        if held is not None and held[0] >= their_clock:
            return False  # held back before at this point already: the push did not arrive
        self._held_back[name] = (their_clock, now)
        return True

    def forget(self, now: float) -> None:
        """Drop what is too old to matter (call once a round: the cost is what was pushed since)."""
        for name, at in list(self._pushed.items()):
            if now - at <= self.window_s:
                break
            del self._pushed[name]
        for name, (_, at) in list(self._held_back.items()):
            if now - at > self.held_back_s:
                del self._held_back[name]

    def __len__(self) -> int:
        return len(self._pushed) + len(self._held_back)
