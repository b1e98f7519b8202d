"""Edge at scale: an edge holding 1M documents (the game sessions and bonus progress of 500k players
each, 1M documents in all by default): start-up time, memory per document, and what one
anti-entropy round costs before and after the change log.

1. Seed: a real edge store (`edge.persist.DocumentStore`, its schema) is filled FAST: each
   document's one update is made by pycrdt as an edge makes it (`Replica.write_local` of a real
   slot value), and rows are inserted in big transactions straight into its SQLite tables.
2. Start-up, in a fresh process (so RSS counts nothing else): `EdgeState.open()` as the edge runs
   it at start, timed; RSS before and after, per document.
3. Anti-entropy, in that process: a peer's rounds (`edge.crdt.anti_entropy.PeerRounds`, the code
   `edge/sync.py` runs) until the first sweep is done, then `--changes` documents written and one
   round: documents advertised, bytes of its frames and CPU time, against the full exchange every
   round used to send (every document's state vector).

    .venv/bin/python bench/edge_scale.py [--docs 1e6] [--changes 2000]

Quick run: `--docs 1e5`. The sync lag at 2,000 updates/s across three edges and the convergence
after a 30 s partition are measured by `bench/sync_lag.py --rate 2000 --partition-seconds 30`.
Ends with one JSON line; exit status 1 if a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pycrdt import Doc, Map

from edge.crdt import FrameBuilder, protocol
from edge.crdt.anti_entropy import PeerRounds
from edge.crdt.exchange import state_entries
from edge.crdt.replica import Replica
from edge.metrics import EdgeMetrics
from edge.persist import DocumentStore
from edge.state import EdgeState

EDGE_ID = "eu"
CLIENT_ID = 4242
INSERT_ROWS = 50_000  # rows per seeding transaction
TARGETS = {"restart_s_max": 30.0}
CHILD_TIMEOUT_S = 1800.0
LIMITS = protocol.Limits()
SWEEP_DOCS, CATCH_UP_DOCS = 1024, 65_536  # edge.config.Limits defaults


def doc_names(docs: int) -> list[str]:
    players = (docs + 1) // 2
    names = []
    for i in range(players):
        names.append(f"session/p{i}/g{i % 7}")
        names.append(f"bonus/p{i}")
    return names[:docs]


def slot_value(name: str, i: int) -> dict[str, Any]:
    if name.startswith("session/"):
        return {"state": f'{{"spins": {i}}}', "updated_at": "2026-01-01T00:00:00Z", "ts": 1.0 + i}
    return {"w": {f"b{i % 5}": [i + 100, 0]}, "ts": 1.0 + i}


def slot_writer(name: str, i: int) -> Callable[[Doc], None]:
    """Writes this edge's slot of document `name` (the i-th seeded or changed one)."""
    return lambda d: d.get("slots", type=Map).__setitem__(EDGE_ID, slot_value(name, i))


def seed(path: Path, docs: int) -> dict[str, Any]:
    """A store holding `docs` documents, one update each."""
    started = time.perf_counter()

    async def create_schema() -> None:
        store = DocumentStore(path, CLIENT_ID)
        await store.open()
        await store.close()

    asyncio.run(create_schema())
    replica = Replica(EDGE_ID, CLIENT_ID, docs_live_max=1)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    updates: list[tuple[str, bytes]] = []
    doc_rows: list[tuple[str, bytes]] = []

    def flush() -> None:
        with db:
            db.executemany("INSERT INTO updates (doc, data) VALUES (?, ?)", updates)
            db.executemany("INSERT INTO docs (name, sv, n) VALUES (?, ?, 1)", doc_rows)
        updates.clear()
        doc_rows.clear()

    for i, name in enumerate(doc_names(docs)):
        replica.install(name, [])
        update = replica.write_local(name, slot_writer(name, i))
        updates.append((name, update))
        doc_rows.append((name, replica.state_vectors[name]))
        del replica.state_vectors[name]  # the seeding replica keeps nothing
        if len(updates) >= INSERT_ROWS:
            flush()
    flush()
    db.close()
    return {
        "seed_s": round(time.perf_counter() - started, 1),
        "db_bytes": sum(p.stat().st_size for p in path.parent.glob(path.name + "*")),
    }


def rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def frames_bytes(replica: Replica, names: list[str]) -> tuple[int, int]:
    builder = FrameBuilder(LIMITS)
    for name, message in state_entries(replica, names):
        builder.add(name, message)
    builder.flush()
    return len(builder.frames), sum(len(f) for f in builder.frames)


async def child(path: Path, changes: int) -> dict[str, Any]:
    """In a fresh process: open the edge's state as at start-up, then run anti-entropy rounds."""
    from prometheus_client import CollectorRegistry

    rss_before = rss_kib()
    store = DocumentStore(path, CLIENT_ID)
    state = EdgeState(EDGE_ID, CLIENT_ID, 4096, store, EdgeMetrics(CollectorRegistry()), time.time)
    started = time.perf_counter()
    await state.open()
    open_s = time.perf_counter() - started
    rss_open = rss_kib()
    replica = state.replica
    docs = len(replica.state_vectors)

    cpu = time.process_time()
    full_frames, full_bytes = frames_bytes(replica, list(replica.state_vectors))
    full_cpu_s = time.process_time() - cpu

    rounds, sweep_rounds, now = PeerRounds(SWEEP_DOCS, CATCH_UP_DOCS), 0, 0.0
    cpu = time.process_time()
    while not rounds.swept:
        now += 1
        frames_bytes(replica, rounds.next_round(replica, now))
        sweep_rounds += 1
        if sweep_rounds > docs // CATCH_UP_DOCS + 3:
            raise RuntimeError("the first sweep does not end")
    sweep_cpu_s = time.process_time() - cpu
    quiet = rounds.next_round(replica, now + 1)  # nothing changed: the backstop page only

    names = list(replica.state_vectors)
    step = max(1, len(names) // max(1, changes))
    for i, name in enumerate(names[::step][:changes]):
        await state.doc(name)
        state.write(name, slot_writer(name, -i))
    cpu = time.process_time()
    advertised = rounds.next_round(replica, now + 2)
    round_frames, round_bytes = frames_bytes(replica, advertised)
    round_cpu_s = time.process_time() - cpu
    await store.close()
    return {
        "docs": docs,
        "startup_open_s": round(open_s, 2),
        "rss_before_open_kib": rss_before,
        "rss_after_open_kib": rss_open,
        "bytes_per_doc": round((rss_open - rss_before) * 1024 / max(1, docs)),
        "full_exchange": {
            "docs": docs,
            "frames": full_frames,
            "bytes": full_bytes,
            "cpu_ms": round(full_cpu_s * 1e3, 1),
        },
        "first_sweep": {"rounds": sweep_rounds, "cpu_ms": round(sweep_cpu_s * 1e3, 1)},
        "quiet_round_docs": len(quiet),
        "round_after_changes": {
            "changed": changes,
            "docs": len(advertised),
            "frames": round_frames,
            "bytes": round_bytes,
            "cpu_ms": round(round_cpu_s * 1e3, 2),
        },
        "changed_all_advertised": all(n in set(advertised) for n in names[::step][:changes]),
    }


def restart_time(path: Path) -> float:
    """Wall time of a fresh process that opens the edge's state (imports included)."""
    code = (
        "import asyncio, time; from prometheus_client import CollectorRegistry; "
        "from edge.persist import DocumentStore; from edge.state import EdgeState; "
        "from edge.metrics import EdgeMetrics\n"
        "async def main():\n"
        f"    s = DocumentStore(__import__('pathlib').Path({str(path)!r}), {CLIENT_ID})\n"
        f"    st = EdgeState({EDGE_ID!r}, {CLIENT_ID}, 4096, s, EdgeMetrics(CollectorRegistry()), time.time)\n"
        "    await st.open(); await s.close()\n"
        "asyncio.run(main())\n"
    )
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, timeout=CHILD_TIMEOUT_S)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=float, default=1e6, help="documents the edge holds (1e3..1e7)")
    parser.add_argument("--changes", type=int, default=2000, help="documents changed before the measured round")
    parser.add_argument("--dir", type=Path, default=None, help="where the store goes (default: temp, removed)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    a = parser.parse_args()
    if a.child is not None:
        print(json.dumps(asyncio.run(child(a.child, a.changes))), flush=True)
        return
    docs = int(a.docs)
    if not 1_000 <= docs <= 10_000_000 or not 1 <= a.changes <= docs:
        parser.error("--docs within 1e3..1e7, --changes within 1..docs")
    root = (a.dir or Path(tempfile.mkdtemp(prefix="croupier-edge-scale-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    path = root / "edge.db"
    print(f"edge scale: {docs:,} documents, {a.changes} changed before the measured round", flush=True)
    seeded = seed(path, docs)
    print(f"  seeded in {seeded['seed_s']} s, {seeded['db_bytes'] / 2**20:,.0f} MiB", flush=True)
    restart_s = restart_time(path)
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(path), "--changes", str(a.changes)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=True,
        env={**os.environ},
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    full, after = figures["full_exchange"], figures["round_after_changes"]
    summary = {
        "benchmark": "edge_scale",
        **seeded,
        "restart_s": round(restart_s, 2),
        **figures,
        "round_docs_ratio_vs_full": round(after["docs"] / full["docs"], 5),
        "targets": TARGETS,
        "targets_met": {"restart": restart_s <= TARGETS["restart_s_max"]},
        "errors": 0 if figures["changed_all_advertised"] and figures["docs"] == docs else 1,
    }
    print(
        f"  restart {summary['restart_s']} s (open {figures['startup_open_s']} s), "
        f"{figures['bytes_per_doc']} bytes of RSS per document",
        flush=True,
    )
    print(
        f"  a full exchange (every round before): {full['docs']:,} docs, {full['frames']} frames, "
        f"{full['bytes'] / 2**20:.1f} MiB, {full['cpu_ms']} ms CPU",
        flush=True,
    )
    print(
        f"  a round after {after['changed']} changes: {after['docs']:,} docs, {after['frames']} frames, "
        f"{after['bytes'] / 2**10:.0f} KiB, {after['cpu_ms']} ms CPU; a quiet round: "
        f"{figures['quiet_round_docs']} docs; first sweep {figures['first_sweep']['rounds']} rounds",
        flush=True,
    )
    if a.dir is None:
        shutil.rmtree(root)
    print(json.dumps(summary, sort_keys=True), flush=True)
    sys.exit(1 if summary["errors"] else 0)


if __name__ == "__main__":
    main()
