"""An edge process that also writes game sessions into itself: the load of `bench/sync_lag.py
--drive in-process`.

Run as `python bench/edge_driver.py edge serve --config <edge.toml>` (what `croupier edge serve`
takes): it serves the edge exactly as `croupier edge serve` does, plus one task that writes game
states through the edge's own `EdgeService.put_session`, the code behind `PUT
/v1/players/{player}/session/{game}` once the request is parsed and authenticated. Everything after
that call is the edge's production path: the CRDT write, the local store, the live push to peers
over websockets (through the fault proxies), admission and apply at each peer, anti-entropy.

Why: 2,000 HTTP requests/s is more than this 2-core machine serves across three edges while it
also runs them, and a load generator that falls behind measures itself, not sync. Skipping the
HTTP ingress changes what the lag histogram sees only by the time HTTP parsing would have taken
before the write's origin timestamp was taken, which the lag never included.

Control: the benchmark writes `<cluster root>/load.json` ({"phase", "start_at" (Unix time),
"seconds", "rate" (updates/s across every edge), "players", "edges"}); each driven edge takes the
updates i = its index in "edges", plus multiples of len(edges), of that schedule (update i due at
start_at + i / rate), and when done writes `<cluster root>/load-<phase>-<edge id>.json` with its
counts (ok, failed, late: more than 100 ms behind schedule).

The phase "watch" writes nothing: each edge notes when its replica last changed until the control
file names another phase, then reports that time and a digest of its documents' state vectors
(`watch_changes`): the benchmark times convergence after a partition heals from the edges' own
changes, to a few milliseconds, instead of to the length of a poll over HTTP.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from shared import event_loop, logs

from edge import config as edge_config
from edge.app import create_app
from edge.app_keys import SERVICE
from edge.crdt import yupdate
from harness.cluster import GAME_SERVER  # the game server the benchmark's polls read as

CONTROL_POLL_S = 0.02
SESSION_GAMES = 7  # games per player, as in sync_lag.py's HTTP mode
LATE_S = 0.1
WATCH = "watch"  # the phase that watches the replica instead of writing (see watch_changes)
WATCH_POLL_S = 0.005
CONTROL_EVERY = 4  # watch polls per read of the control file
WATCH_MAX_S = 120.0

log = structlog.get_logger("croupier.bench.edge_driver")


async def drive(app: web.Application, root: Path, edge_id: str) -> None:
    done: set[str] = set()
    control = root / "load.json"
    while True:
        await asyncio.sleep(CONTROL_POLL_S)
        plan = read_plan(control)
        if not plan or plan["phase"] in done or edge_id not in plan["edges"]:
            continue
        done.add(plan["phase"])
        if plan["phase"] == WATCH:
            result = await watch_changes(app, root, edge_id, control)
        else:
            result = await run_phase(app, plan, plan["edges"].index(edge_id), len(plan["edges"]))
        write_json(root / f"load-{plan['phase']}-{edge_id}.json", result)


def read_plan(control: Path) -> dict[str, Any]:
    """The benchmark's current plan ({} while there is none, or while it is being replaced)."""
    try:
        plan: dict[str, Any] = json.loads(control.read_text())
    except (OSError, ValueError):
        return {}
    return plan


def write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


async def watch_changes(app: web.Application, root: Path, edge_id: str, control: Path) -> dict[str, Any]:
    """Phase `watch`: note when this edge's replica last changed (its change-log position, read
    every WATCH_POLL_S: a number, nothing to compute) until the control file names another phase
    (at most WATCH_MAX_S); then the time of the last change (Unix time: comparable across the
    edges, one machine) and a digest of every document's state vector, for the benchmark to
    check that the edges ended in the same state. `load-watching-<edge>.json` says it started."""
    replica = app[SERVICE].state.replica
    position, changed_at = replica.position, None
    write_json(root / f"load-watching-{edge_id}.json", {"position": position})
    started, polls = time.monotonic(), 0
    while time.monotonic() - started < WATCH_MAX_S:
        await asyncio.sleep(WATCH_POLL_S)
        if replica.position != position:
            position, changed_at = replica.position, time.time()
        polls += 1
        if polls % CONTROL_EVERY == 0 and read_plan(control).get("phase", WATCH) != WATCH:
            break
    digest = hashlib.sha256()
    for name, state_vector in sorted(replica.state_vectors.items()):
        # Decoded: two edges holding the same items may encode their (client, clock) pairs in
        # another order.
        clocks = sorted(yupdate.state_vector(state_vector).items())
        digest.update(f"{name}\0{clocks}\0".encode())
    return {"last_change_at": changed_at, "position": position, "state_digest": digest.hexdigest()}


async def run_phase(app: web.Application, plan: dict[str, Any], part: int, parts: int) -> dict[str, int]:
    service = app[SERVICE]
    counts = {"ok": 0, "failed": 0, "late": 0}
    rate, players, phase = float(plan["rate"]), int(plan["players"]), plan["phase"]
    start_at = float(plan["start_at"])
    for i in range(part, int(rate * float(plan["seconds"])), parts):
        delay = start_at + i / rate - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            # Behind schedule: still one loop turn per write, as one HTTP request each would take
            # (a write to a live document never suspends, so without this the driver would keep
            # the loop to itself and starve the sync it measures).
            await asyncio.sleep(0)
            if delay < -LATE_S:
                counts["late"] += 1
        try:
            await service.put_session(
                f"bench-p{i % players}", f"g{i % SESSION_GAMES}", {"run": phase, "i": i}, client_id=GAME_SERVER
            )
            counts["ok"] += 1
        except Exception as e:  # noqa: BLE001  counted and reported; the first is logged (a bug shows there)
            if not counts["failed"]:
                log.warning("bench_write_failed", error=repr(e))
            counts["failed"] += 1
    return counts


def main() -> None:
    args = sys.argv[1:]
    if args[:2] != ["edge", "serve"] or "--config" not in args:
        sys.exit("usage: edge_driver.py edge serve --config <edge.toml>")
    config_path = Path(args[args.index("--config") + 1])
    cfg = edge_config.load(config_path)
    logs.configure(cfg.log_level, service="edge", edge_id=cfg.id, file=cfg.log_file)
    app = create_app(dataclasses.replace(cfg))
    root = config_path.resolve().parent

    async def driver(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(drive(app, root, cfg.id), name="bench-session-driver")
        task.add_done_callback(
            lambda t: t.cancelled() or t.exception() is None or sys.exit(f"driver died: {t.exception()!r}")
        )
        yield
        task.cancel()

    app.cleanup_ctx.append(driver)
    web.run_app(
        app,
        host=cfg.host,
        port=cfg.port,
        print=None,
        access_log=None,
        shutdown_timeout=5.0,
        ssl_context=cfg.tls.server_context(),
        loop=event_loop.new_loop(),
    )


if __name__ == "__main__":
    main()
