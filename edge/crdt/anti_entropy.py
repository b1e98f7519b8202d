"""Which documents one anti-entropy round advertises to one peer (pure: no I/O, no clock of its own).

A round used to send every document's state vector to every peer: with a million documents that
is a million STEP1 entries per peer per second. `PeerRounds` keeps, per peer and across that
peer's links, what it still has to advertise:

- the documents whose state vector changed since the peer's last round (the replica's change log,
  `Replica.changed_since`): a round costs what changed;
- a sweep over every known document, in pages: the first sweep after this edge starts (or after it
  lost track of the peer) goes fast (`catch_up_docs` per round), since the peer may lack anything
  this edge stored before it restarted; later sweeps go slowly (`sweep_docs` per round at most, and
  spread over at least `sweep_rounds_min` rounds) and are a backstop only (a peer restored from an
  old backup, a bug). Spreading matters for an edge with few documents: a page of 1,024 per round
  re-advertised all of 1,400 documents every round and a half, and each advertisement of a document
  whose live push was still in flight drew an answer that duplicated the push
  (docs/decisions/anti-entropy-sweep-paced-by-period.md).

When a link ends, what was sent in its last moments may be lost (a blackholed link is noticed only
by its heartbeat; a peer may crash before storing what it received). `link_ended` rewinds the
peer's change-log position to where it stood `margin_s` before the peer was last heard from, so the
next link advertises those documents again. Rounds remember where they started in a bounded history;
a rewind older than that history starts a full sweep again. The own writes (`must_advertise`) and
asks (`ask`) a round carried are remembered with it until the peer is heard from well after it
(`received`), and a link that ends hands back those of the rounds it may have lost: a rewind of the
change log alone would not bring them back, since an own write's streak says it was pushed and an
ask is no change here (docs/decisions/anti-entropy-repeats-owed-rounds-a-link-may-have-lost.md).

A round also leaves out what the peer holds already (docs/decisions/anti-entropy-skips-what-the-peer-holds.md):
a document whose every change since the peer's last round came from that peer (it holds what it
sent), and, when the peer asks for what it refused (`trusts_pushes`: a peer of sync level 2 or
more), a document whose every change since then is this edge's own write, pushed live on the link.
A write whose push may not have arrived (dropped on a full queue, made while no link was up, left
in the queue or sent shortly before a link ended) is handed back with `must_advertise`, and a
document the peer refused for now (or whose update it could not take) is asked for with `ask`:
both go into the next round. Without these, most advertisements at a high write rate were of
updates the live push had just delivered, and most answers to them were duplicates.

With `wait_until_quiet` (what the sync hub uses), a document with such a change (from a third
edge, or of unknown origin, or mixed with this edge's writes) is advertised only once it did not
change for a whole round, or once it waited `QUIET_WAIT_ROUNDS_MAX` rounds (a document written every
round is not left to the slow sweep): the peer most likely got the change from its author directly meanwhile,
and an advertisement of a document still changing crosses live pushes and draws duplicate answers
(docs/decisions/anti-entropy-waits-for-quiet-documents.md). Own pushes that may be lost and
documents asked for are not held back, and neither is anything in the first round after a link
ended (what it may have lost, and what waited, goes out at once: a partition heals fast), nor
anything for a peer that does not ask again for what it refused (`trusts_pushes` false: an older
edge relies on the rounds to bring it again).

The wire format is unchanged (STEP1 entries as before), so an edge of an older version still
converges with this one: it keeps sending all of its state vectors, this edge answers them, and
this edge keeps advertising its own writes to it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from edge.crdt.replica import LOCAL, Replica

HISTORY_ROUNDS_MAX = 4096  # rounds remembered per peer (about an hour at one round a second)
# A change the peer may lack waits for its document to be quiet at most this many rounds: a document
# written every round is advertised anyway, not left to the slow sweep.
QUIET_WAIT_ROUNDS_MAX = 3


@dataclass(frozen=True)
class _Round:
    at: float
    position: int  # change-log position the round advertised up to (exclusive of later changes)
    catching_up: bool
    sweep_id: int
    cursor: int


class PeerRounds:
    def __init__(
        self, sweep_docs: int, catch_up_docs: int, sweep_rounds_min: int = 1, *, wait_until_quiet: bool = False
    ) -> None:
        assert sweep_docs >= 1 and catch_up_docs >= sweep_docs and sweep_rounds_min >= 1
        self.sweep_docs = sweep_docs
        self.catch_up_docs = catch_up_docs
        self.sweep_rounds_min = sweep_rounds_min  # a slow sweep takes at least this many rounds
        # Changes the peer may lack wait until their document was quiet for a whole round.
        self.wait_until_quiet = wait_until_quiet
        # Documents with such changes, not advertised yet: the round each started waiting.
        self._waiting: dict[str, int] = {}
        self._rounds = 0  # rounds taken so far
        self._rewound = False  # a link ended: the next round holds nothing back
        self.position: int | None = None  # None: nothing known of the peer yet (full sweep first)
        self.catching_up = True
        self._sweep: list[str] = []
        self._sweep_id = 0
        self._cursor = 0
        self._history: deque[_Round] = deque(maxlen=HISTORY_ROUNDS_MAX)
        self._history_truncated = False
        self._must: dict[str, None] = {}  # own writes whose live push may not have arrived
        self._asked: dict[str, None] = {}  # documents to ask the peer for (known here or not)
        # (round start, its own writes to advertise, its asks) of recent rounds that had any, until
        # the peer is known to have received them: a rewind of the change log does not bring these
        # back (an own write's streak says "pushed", an ask is no change here). Bounded like the
        # history: a peer silent for longer than that is swept again whole by a rewind anyway.
        self._owed: deque[tuple[float, dict[str, None], dict[str, None]]] = deque(maxlen=HISTORY_ROUNDS_MAX)

    def must_advertise(self, names: Iterable[str]) -> None:
        """Documents whose live push to the peer may be lost: advertised next round."""
        self._must.update(dict.fromkeys(names))

    def ask(self, name: str) -> None:
        """A document the peer sent an update of that was refused for now: next round advertises
        this edge's state of it (empty if it holds none), and the peer answers with what it lacks."""
        self._asked[name] = None

    def next_round(
        self, replica: Replica, now: float, peer: str | None = None, trusts_pushes: bool = False
    ) -> list[str]:
        """The documents to advertise this round (each once; changed ones first). `peer`: the
        documents whose every change since its last round came from it are left out; with
        `trusts_pushes`, so are those whose every change since then is this edge's own write."""
        if self.position is None:
            self._restart_sweep(replica, catching_up=True)
            self.position = replica.position
        if len(self._history) == self._history.maxlen:
            self._history_truncated = True
        self._history.append(_Round(now, self.position, self.catching_up, self._sweep_id, self._cursor))
        names: dict[str, None] = {}
        changed = replica.changed_since(self.position)
        # A peer that does not ask again for what it refused (level 1) relies on these rounds for
        # it: nothing is held back from it.
        hold_back = self.wait_until_quiet and trusts_pushes and not self._rewound
        self._rounds += 1
        if self._waiting:  # those that did not change since the last round are quiet now
            still = set(changed) if hold_back else set()
            overdue = self._rounds - QUIET_WAIT_ROUNDS_MAX
            quiet = [name for name, since in self._waiting.items() if name not in still or since <= overdue]
            for name in quiet:
                del self._waiting[name]
            names.update(dict.fromkeys(quiet))
        self._rewound = False
        for name in changed:
            source, before = replica.streak(name)
            if (
                before <= self.position
                and source is not None
                and (source == peer or (trusts_pushes and source == LOCAL))
            ):
                continue  # every change since the peer's last round came from it, or was pushed to it
            if not hold_back:
                names[name] = None
            elif name not in names:  # advertised this round already: no wait
                self._waiting.setdefault(name, self._rounds)
        must, self._must = self._must, {}
        names.update(must)
        self.position = replica.position
        if self._cursor >= len(self._sweep):
            self._restart_sweep(replica, catching_up=False)
        page = self.catch_up_docs if self.catching_up else self._slow_page()
        for name in self._sweep[self._cursor : self._cursor + page]:
            names.setdefault(name)
        self._cursor += page
        asked, self._asked = self._asked, {}
        if must or asked:
            self._owed.append((now, must, asked))
        return [n for n in names if replica.known(n) and n not in asked] + list(asked)

    def received(self, before: float) -> None:
        """The peer received what rounds that started before `before` sent (it was heard from well
        after them): their own writes and asks need not go out again if the link ends."""
        while self._owed and self._owed[0][0] < before:
            self._owed.popleft()

    def link_ended(self, last_heard: float, margin_s: float) -> None:
        """Rewind to the round that started `margin_s` before the peer was last heard from (the
        caller passes the link's start when it never was)."""
        self._rewound = True  # what the link may have lost goes out at once on the next one
        target = last_heard - margin_s
        for at, must, asked in self._owed:  # own writes and asks of rounds that may be lost: again
            if at > target:
                self._must.update(must)
                self._asked.update(asked)
        self._owed.clear()
        if not self._history:
            return
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

    def _slow_page(self) -> int:
        """Documents per round of a slow sweep: `sweep_docs` at most, fewer when the documents
        known are few enough to be swept in `sweep_rounds_min` rounds (at least one)."""
        spread = -(-len(self._sweep) // self.sweep_rounds_min)  # ceiling
        return max(1, min(self.sweep_docs, spread))

    @property
    def swept(self) -> bool:
        """The first (fast) sweep is complete."""
        return not self.catching_up

    def _restart_sweep(self, replica: Replica, catching_up: bool) -> None:
        self._sweep = list(replica.state_vectors)
        self._sweep_id += 1
        self._cursor = 0
        self.catching_up = catching_up
