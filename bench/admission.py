"""Micro-benchmark of admitting a peer's CRDT update (no I/O, no network): CPU per admission.

One edge (eu) holds session and bonus documents shaped as the edges hold them: three edges'
slots, each rewritten `--history` times already (overwritten values stay as deleted items in the
document). A peer (apac) then rewrites its own slot once per update, and eu admits and applies each
update through its replica, the way the sync receive path does (`edge.sync`); every other update
eu also writes its own slot (an edge writes about a third of the updates and admits the rest).
The same updates are applied to a twin replica without any check: the ratio of the two is the
price of admission.

    .venv/bin/python bench/admission.py [--updates 2000] [--history 50] [--docs 20]

Prints one JSON line, per document kind: `admit_us` (CPU per admission, admission only),
`apply_us` (applying the same update unchecked), `admit_plus_apply_us`, `ratio_admit_vs_apply`,
and `edge_us_per_update` / `unchecked_edge_us_per_update`: all the edge's CPU in the loop (its
own writes, admission, applying, keeping the replica's facts) per peer update, with and without
admission.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from edge.crdt import admission
from edge.crdt.identity import Owners, fresh_client_id
from edge.crdt.replica import Replica
from edge.crdt.slots import BONUS, SESSION, BonusSlot, SessionRecord, SlotDoc, doc_name, slots, write_slot

EDGES = ("apac", "eu", "us")
T0 = 1.8e9


class ConfirmedJackpots:
    """No jackpot documents here: nothing to confirm."""

    def epoch(self, jackpot_id: str) -> int | None:
        return 1

    def missing(self, jackpot_id: str) -> bool:
        return False

    def asked_recently(self, jackpot_id: str) -> bool:
        return True


def session_value(i: int, ts: float) -> dict[str, Any]:
    state = {"round": i, "reels": [i % 7, (i * 3) % 7, (i * 5) % 7], "bet": 100, "free_spins": i % 3, "run": "bench"}
    return SessionRecord(json.dumps(state), f"2027-01-15T10:{i % 60:02d}:00Z", ts).encode()


def bonus_value(i: int, ts: float) -> dict[str, Any]:
    return BonusSlot({f"b{b}": (i * 100 + b, i * 7) for b in range(3)}, ts).encode()


VALUES: dict[str, Callable[[int, float], dict[str, Any]]] = {SESSION: session_value, BONUS: bonus_value}


def name_of(kind: str, d: int) -> str:
    return doc_name(SESSION, f"p{d}", "g1") if kind == SESSION else doc_name(BONUS, f"p{d}")


def replicas() -> dict[str, Replica]:
    return {e: Replica(e, fresh_client_id(e, T0 + k), docs_live_max=10_000) for k, e in enumerate(EDGES)}


def write(replica: Replica, name: str, kind: str, i: int) -> bytes:
    value = VALUES[kind](i, T0 + i * 0.001)
    return replica.write_local(name, lambda doc: write_slot(doc, replica.edge_id, value))


def prepare(kind: str, docs: int, history: int) -> tuple[dict[str, Replica], list[str]]:
    """Replicas of all three edges holding `docs` documents with `history` writes per slot."""
    reps = replicas()
    names = [name_of(kind, d) for d in range(docs)]
    for name in names:
        for r in reps.values():
            r.install(name, ())
        for i in range(history):
            for r in reps.values():
                change = write(r, name, kind, i)
                for other in reps.values():
                    if other is not r:
                        other.apply_remote(name, change)
    return reps, names


def run(kind: str, updates: int, docs: int, history: int) -> dict[str, float]:
    reps, names = prepare(kind, docs, history)
    peer, here = reps["apac"], reps["eu"]
    twin = Replica("eu", here.client_id, docs_live_max=10_000)
    for name in names:
        twin.install(name, [here.diff_for(name, b"\x00")])
    # Both: (peer update, or None for a local write of eu's slot)
    steps: list[tuple[str, bytes | None, int]] = []
    for i in range(updates):
        name = names[i % docs]
        steps.append((name, write(peer, name, kind, history + i), history + i))
        if i % 2:
            steps.append((name, None, history + i))
    owners = Owners(EDGES)
    admit_s = apply_s = loop_s = twin_loop_s = 0.0
    for name, update, i in steps:
        t0 = time.process_time()
        if update is None:
            write(here, name, kind, i)
            loop_s += time.process_time() - t0
            continue
        rules = admission.Rules(
            owners, ConfirmedJackpots(), doc_bytes_max=1 << 16, session_state_bytes_max=4096, now=T0 + 1e6
        )
        doc = here.live(name)
        assert doc is not None
        t1 = time.process_time()
        verdict = admission.admit(name, doc, update, rules, **admit_facts(here, name))
        t2 = time.process_time()
        admit_s += t2 - t1
        assert verdict.update is not None, verdict
        here.apply_remote(name, verdict.update, verdict.after, trial=verdict.trial)
        loop_s += time.process_time() - t0
    for name, update, i in steps:
        t0 = time.process_time()
        if update is None:
            write(twin, name, kind, i)
        else:
            twin.apply_remote(name, update)
            apply_s += time.process_time() - t0
        twin_loop_s += time.process_time() - t0
    for name in names:  # same documents either way
        here_doc, twin_doc = here.live(name), twin.live(name)
        assert here_doc is not None and twin_doc is not None
        assert slots_of(here_doc) == slots_of(twin_doc)
    admit_us, apply_us = admit_s / updates * 1e6, apply_s / updates * 1e6
    return {
        "admit_us": round(admit_us, 1),
        "apply_us": round(apply_us, 1),
        "admit_plus_apply_us": round(admit_us + apply_us, 1),
        "ratio_admit_vs_apply": round(admit_us / apply_us, 1),
        # the edge's whole CPU per peer update (its local writes included), checked and unchecked
        "edge_us_per_update": round(loop_s / updates * 1e6, 1),
        "unchecked_edge_us_per_update": round(twin_loop_s / updates * 1e6, 1),
        "doc_bytes": len(here.diff_for(names[0], b"\x00")),
    }


def admit_facts(replica: Replica, name: str) -> dict[str, Any]:
    """The keyword arguments the sync receive path gives `admission.admit` for this document: the
    facts the replica keeps, and its twin of the document as the trial copy."""
    return {"facts": replica.facts(name), "scratch_of": lambda: replica.scratch(name)}


def slots_of(doc: SlotDoc) -> dict[str, Any]:
    return dict(slots(doc).to_py() or {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=2000, help="peer updates admitted per document kind")
    parser.add_argument("--history", type=int, default=50, help="writes per slot already in each document")
    parser.add_argument("--docs", type=int, default=20, help="documents the updates are spread over")
    a = parser.parse_args()
    out = {"updates": a.updates, "history": a.history, "docs": a.docs}
    for kind in (SESSION, BONUS):
        out[kind] = run(kind, a.updates, a.docs, a.history)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
