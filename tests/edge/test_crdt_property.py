"""Property: 3-5 replicas applying random owned-slot operations, exchanging updates with
reordering, duplication, drops and partitions, hold equal (and correct) values after a final
anti-entropy round."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.crdt import protocol
from edge.crdt.replica import Replica
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
SEED = 1000

ops = st.one_of(
    st.tuples(st.just("jp"), st.integers(0, 4), st.integers(-50, 200)),
    st.tuples(st.just("payout"), st.integers(0, 4)),
    st.tuples(st.just("bonus"), st.integers(0, 4), st.sampled_from(["b1", "b2"]), st.integers(-20, 300)),
    st.tuples(st.just("session"), st.integers(0, 4), st.integers(0, 10**6)),
    st.tuples(st.just("deliver"), st.integers(0, 10**6), st.booleans()),
    st.tuples(st.just("drop"), st.integers(0, 10**6)),
    st.tuples(st.just("cut"), st.integers(0, 4)),
    st.tuples(st.just("heal")),
    st.tuples(st.just("anti_entropy"), st.integers(0, 4), st.integers(0, 4)),
)


class Net:
    def __init__(self, n: int) -> None:
        self.reps = [Replica(f"e{i}", i + 1, 16) for i in range(n)]
        for r in self.reps:
            ensure_live(r, [JP, BONUS, SESSION])
        self.flight: list[tuple[int, int, str, bytes]] = []  # (src, dst, doc, update)
        self.cut: set[int] = set()
        self.epoch, self.clock = 1, 0.0
        self.contrib: dict[tuple[int, int], int] = {}  # (epoch, replica) -> net contributions
        self.wagered: dict[str, int] = {}
        self.last_state: str | None = None

    def write(self, i: int, name: str, value: dict) -> None:
        r = self.reps[i]
        update = r.write_local(name, lambda d: write_slot(d, r.edge_id, value))
        self.flight += [(i, j, name, update) for j in range(len(self.reps)) if j != i]

    def jackpot(self, i: int, amount: int, epoch: int) -> None:
        r = self.reps[i]
        own = jackpot_slots(r.live(JP)).get(r.edge_id, JackpotSlot(epoch, 0, 0, SEED, "EUR", 0.0))
        self.clock += 1
        self.write(i, JP, own.add(epoch, amount, self.clock).encode())
        self.contrib[(epoch, i)] = self.contrib.get((epoch, i), 0) + amount

    def step(self, op: tuple) -> None:
        n = len(self.reps)
        kind = op[0]
        if kind == "jp":
            self.jackpot(op[1] % n, op[2], self.epoch)
        elif kind == "payout":
            self.epoch += 1
            self.jackpot(op[1] % n, 0, self.epoch)
        elif kind == "bonus":
            i, r = op[1] % n, self.reps[op[1] % n]
            own = bonus_slots(r.live(BONUS)).get(r.edge_id, BonusSlot({}, 0.0))
            self.clock += 1
            self.write(i, BONUS, own.add({op[2]: op[3]}, self.clock).encode())
            self.wagered[op[2]] = self.wagered.get(op[2], 0) + op[3]
        elif kind == "session":
            self.clock += 1
            self.last_state = f'{{"v":{op[2]}}}'
            self.write(op[1] % n, SESSION, SessionRecord(self.last_state, "t", self.clock).encode())
        elif kind in ("deliver", "drop") and self.flight:
            src, dst, name, update = self.flight[op[1] % len(self.flight)]
            if kind == "drop" or not (kind == "deliver" and op[2]):
                self.flight.remove((src, dst, name, update))
            if kind == "deliver" and not {src, dst} & self.cut:
                deliver(self.reps[dst], [(name, protocol.update_message(update))])
        elif kind == "cut":
            self.cut.add(op[1] % n)
        elif kind == "heal":
            self.cut.clear()
        elif kind == "anti_entropy":
            i, j = op[1] % n, op[2] % n
            if i != j and not {i, j} & self.cut:
                anti_entropy(self.reps[i], self.reps[j])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(3, 5), steps=st.lists(ops, max_size=60))
def test_replicas_converge_to_the_true_values_after_anti_entropy(n, steps):
    net = Net(n)
    for op in steps:
        net.step(op)
    net.cut.clear()
    for _ in range(2):
        for i in range(n):
            for j in range(i + 1, n):
                anti_entropy(net.reps[i], net.reps[j])
    views = [
        (
            jackpot_view(jackpot_slots(r.live(JP))),
            bonus_progress(bonus_slots(r.live(BONUS))),
            session_latest(r.live(SESSION)),
        )
        for r in net.reps
    ]
    assert all(v == views[0] for v in views)
    jp, bonus, session = views[0]
    if jp is not None:
        assert jp.epoch == net.epoch
        assert jp.display_minor == SEED + sum(v for (e, _), v in net.contrib.items() if e == net.epoch)
    assert {b: sum(by_edge.values()) for b, by_edge in bonus.items()} == net.wagered
    assert (session[1].state_json if session else None) == net.last_state
