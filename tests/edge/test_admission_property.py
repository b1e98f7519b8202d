"""Property: no update honest edges exchange is refused as invalid: live pushes delivered late,
twice or never, anti-entropy STEP2 answers that relay other edges' items, documents rebuilt from
a compacted snapshot, and restarts with a fresh CRDT identity after losing unflushed writes. The
only refusal allowed is a deferral of a push that continues a dropped one; and the replicas still
converge to equal values after anti-entropy."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pycrdt import Doc

from edge.crdt import admission, protocol
from edge.crdt.identity import Owners, fresh_client_id
from edge.crdt.replica import Replica, compact
from edge.crdt.slots import (
    BonusSlot,
    JackpotSlot,
    SessionRecord,
    bonus_progress,
    bonus_slots,
    jackpot_slots,
    jackpot_view,
    session_latest,
    write_slot,
)
from tests.support.crdt_network import anti_entropy, deliver, ensure_live

JP, BONUS, SESSION = "jackpot/j", "bonus/p", "session/p/g"
NAMES = (JP, BONUS, SESSION)
SEED = 1000
EDGES = ("apac", "eu", "us", "latam", "mena")


class Facts:
    def __init__(self) -> None:
        self.epochs = {"j": 1}

    def epoch(self, jackpot_id: str) -> int | None:
        return self.epochs.get(jackpot_id)

    def missing(self, jackpot_id: str) -> bool:
        return False

    def asked_recently(self, jackpot_id: str) -> bool:
        return True


ops = st.one_of(
    st.tuples(st.just("jp"), st.integers(0, 4), st.integers(-50, 200)),
    st.tuples(st.just("payout"), st.integers(0, 4)),
    st.tuples(st.just("bonus"), st.integers(0, 4), st.sampled_from(["b1", "b2"]), st.integers(-20, 300)),
    st.tuples(st.just("session"), st.integers(0, 4), st.integers(0, 10**6)),
    st.tuples(st.just("deliver"), st.integers(0, 10**6), st.booleans()),
    st.tuples(st.just("drop"), st.integers(0, 10**6)),
    st.tuples(st.just("anti_entropy"), st.integers(0, 4), st.integers(0, 4)),
    st.tuples(st.just("compact"), st.integers(0, 4)),
    st.tuples(st.just("crash"), st.integers(0, 4), st.integers(0, 3)),
)


class Net:
    def __init__(self, n: int) -> None:
        self.ids = EDGES[:n]
        self.owners = Owners(self.ids)
        self.started = 0
        self.facts = Facts()
        self.reps = [self._replica(e, {}) for e in self.ids]
        self.disk: list[list[dict[str, bytes]]] = [[] for _ in self.ids]  # per edge: a snapshot per step
        self.flight: list[tuple[int, int, str, bytes]] = []
        self.clock = 0.0
        self.refused: list[tuple[str, admission.Verdict]] = []

    def _replica(self, edge: str, stored: dict[str, list[bytes]]) -> Replica:
        self.started += 1  # a later start: a later incarnation (0.1 s apart at least)
        r = Replica(edge, fresh_client_id(edge, 1.8e9 + self.started * 0.1), 16)
        for name in NAMES:
            r.install(name, stored.get(name, []))
        return r

    def admit(self, name: str, doc: Doc, update: bytes) -> admission.Verdict:
        rules = admission.Rules(
            self.owners, self.facts, doc_bytes_max=1 << 20, session_state_bytes_max=4096, now=self.clock + 1
        )
        verdict = admission.admit(name, doc, update, rules)
        if not verdict.admitted and not verdict.deferred:
            self.refused.append((name, verdict))
        if verdict.deferred:  # a live push that continues a dropped one: anti-entropy brings both
            assert verdict.reason == admission.UNVERIFIED_GAP, verdict
        return verdict

    def write(self, i: int, name: str, value: dict) -> None:
        r = self.reps[i]
        update = r.write_local(name, lambda d: write_slot(d, r.edge_id, value))
        self.flight += [(i, j, name, update) for j in range(len(self.reps)) if j != i]

    def step(self, op: tuple) -> None:
        n = len(self.reps)
        kind = op[0]
        self.clock += 1
        if kind in ("jp", "payout"):
            i = op[1] % n
            if kind == "payout":
                self.facts.epochs["j"] += 1
            epoch = self.facts.epochs["j"]
            r = self.reps[i]
            own = jackpot_slots(r.live(JP)).get(r.edge_id, JackpotSlot(epoch, 0, 0, SEED, "EUR", 0.0))
            self.write(i, JP, own.add(epoch, op[2] if kind == "jp" else 0, self.clock).encode())
        elif kind == "bonus":
            i, r = op[1] % n, self.reps[op[1] % n]
            own = bonus_slots(r.live(BONUS)).get(r.edge_id, BonusSlot({}, 0.0))
            self.write(i, BONUS, own.add({op[2]: op[3]}, self.clock).encode())
        elif kind == "session":
            self.write(op[1] % n, SESSION, SessionRecord(f'{{"v":{op[2]}}}', "t", self.clock).encode())
        elif kind in ("deliver", "drop") and self.flight:
            src, dst, name, update = self.flight[op[1] % len(self.flight)]
            if kind == "drop" or not op[2]:
                self.flight.remove((src, dst, name, update))
            if kind == "deliver":
                deliver(self.reps[dst], [(name, protocol.update_message(update))], self.admit)
        elif kind == "anti_entropy":
            i, j = op[1] % n, op[2] % n
            if i != j:
                anti_entropy(self.reps[i], self.reps[j], admit=self.admit)
        elif kind == "compact":  # the store's compaction: the document comes back as one snapshot
            i = op[1] % n
            r = self.reps[i]
            stored = {name: [compact(r.client_id, [r.live(name).get_update()])] for name in NAMES}
            self.reps[i] = self._replica(r.edge_id, stored)
        elif kind == "crash":  # the last `lost` steps never reached the disk (peers may hold their writes)
            i, lost = op[1] % n, op[2]
            del self.disk[i][max(0, len(self.disk[i]) - lost) :]
            last = self.disk[i][-1] if self.disk[i] else {}
            self.reps[i] = self._replica(self.ids[i], {name: [u] for name, u in last.items()})
        for r, disk in zip(self.reps, self.disk, strict=True):
            disk.append({name: r.live(name).get_update() for name in NAMES})


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(3, 5), steps=st.lists(ops, max_size=150))
def test_honest_updates_always_pass_admission_and_replicas_converge(n, steps):
    net = Net(n)
    for r in net.reps:
        ensure_live(r, list(NAMES))
    for op in steps:
        net.step(op)
    for _ in range(2):
        for i in range(n):
            for j in range(i + 1, n):
                anti_entropy(net.reps[i], net.reps[j], admit=net.admit)
    assert net.refused == []
    views = [
        (
            jackpot_view(jackpot_slots(r.live(JP))),
            bonus_progress(bonus_slots(r.live(BONUS))),
            session_latest(r.live(SESSION)),
        )
        for r in net.reps
    ]
    assert all(v == views[0] for v in views)
