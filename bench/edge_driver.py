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
"""

from __future__ import annotations

import asyncio
import dataclasses
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

CONTROL_POLL_S = 0.02
SESSION_GAMES = 7  # games per player, as in sync_lag.py's HTTP mode
LATE_S = 0.1

log = structlog.get_logger("croupier.bench.edge_driver")


async def drive(app: web.Application, root: Path, edge_id: str) -> None:
    done: set[str] = set()
    control = root / "load.json"
    while True:
        await asyncio.sleep(CONTROL_POLL_S)
        try:
            plan = json.loads(control.read_text())
        except (OSError, ValueError):
            continue
        if plan["phase"] in done or edge_id not in plan["edges"]:
            continue
        done.add(plan["phase"])
        counts = await run_phase(app, plan, plan["edges"].index(edge_id), len(plan["edges"]))
        out = root / f"load-{plan['phase']}-{edge_id}.json"
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(counts))
        tmp.replace(out)


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
            await service.put_session(f"bench-p{i % players}", f"g{i % SESSION_GAMES}", {"run": phase, "i": i})
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
