"""The cost of a synchronous standby: durable bets/s and latency of a ledger alone vs the same
ledger answering each commit only after its standby applied it (`Cluster(standby=True)`).

Both modes run the same wrk bets workload as `ledger_throughput.py` (fresh ids, many funded
players, warm-up first) against the primary. After the synchronous run the standby's head must
equal the primary's and both chains verify, so the figure counts bets the standby really holds.
The last line printed is one JSON object with every figure.

    .venv/bin/python bench/sync_standby_cost.py [--seconds 10] [--connections 64] [--players 1000]
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from typing import Any

import aiohttp

from common import load_average
from harness.cluster import STANDBY, Cluster
from ledger_throughput import HTTP_TIMEOUT_S, Options, measured_run, parse_args, seed_players, settled_head, wrk_bets

CATCH_UP_POLLS_MAX = 100
CATCH_UP_POLL_S = 0.2


async def replication(cluster: Cluster, name: str) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(raise_for_status=True, timeout=timeout) as h,
        h.get(cluster.url(name) + "/admin/v1/replication", headers=cluster.headers("admin_read")) as r,
    ):
        return await r.json()


async def standby_holds(cluster: Cluster, head: int) -> bool:
    """The standby reached the primary's head (it holds every acknowledged bet, and more)."""
    for _ in range(CATCH_UP_POLLS_MAX):
        if (await replication(cluster, STANDBY))["head"]["sequence"] >= head:
            return True
        await asyncio.sleep(CATCH_UP_POLL_S)
    return False


async def run_mode(opts: Options, *, synchronous: bool) -> dict[str, Any]:
    name = "sync" if synchronous else "alone"
    cluster = Cluster(opts.root / name, edge_ids=(), standby=synchronous, log_level="warning")
    try:
        await cluster.start()
        await seed_players(cluster, opts.players)
        token_file = cluster.root / "secrets" / "edge.token"
        url = cluster.url("ledger")
        warm = await asyncio.to_thread(wrk_bets, url, token_file, "warm", opts, opts.warmup_seconds)
        proc = cluster.services["ledger"].proc
        assert proc is not None
        result, cpu = await measured_run(proc.pid, url, token_file, opts)
        head = await settled_head(cluster)
        held = await standby_holds(cluster, head) if synchronous else None
        timeouts = (await replication(cluster, "ledger")) if synchronous else None
    finally:
        await cluster.stop()
    errors = result.errors + warm.errors + (0 if held in (None, True) else 1)
    return {
        **result.figures(),
        **cpu,
        "errors": errors,
        "standby_holds_head": held,
        "standbys": timeouts["standbys"] if timeouts else None,
    }


async def run(opts: Options) -> dict[str, Any]:
    load_before = load_average()
    modes = {"alone": await run_mode(opts, synchronous=False), "sync": await run_mode(opts, synchronous=True)}
    alone, sync = modes["alone"], modes["sync"]
    for name, m in modes.items():
        print(
            f"{name:6s} {m['ok_per_s']:9.1f} ok/s   p50 {m['p50_ms']:7.2f} ms   p99 {m['p99_ms']:7.2f} ms   "
            f"cpu/ok {m['server_cpu_ms_per_ok']} ms   non-2xx {m['non_2xx']}",
            flush=True,
        )
    return {
        "benchmark": "sync_standby_cost",
        "modes": modes,
        "sync_vs_alone_throughput": round(sync["ok_per_s"] / alone["ok_per_s"], 3) if alone["ok_per_s"] else None,
        "sync_minus_alone_p50_ms": round(sync["p50_ms"] - alone["p50_ms"], 2),
        "errors": alone["errors"] + sync["errors"],
        "setup": {
            "seconds": opts.seconds,
            "connections": opts.connections,
            "players": opts.players,
            "load_average_1m_before": load_before,
            "load_average_1m_after": load_average(),
        },
    }


def main() -> None:
    opts = parse_args()
    summary = asyncio.run(run(opts))
    if not opts.keep_dir and not summary["errors"]:
        shutil.rmtree(opts.root)
    print(json.dumps(summary, sort_keys=True), flush=True)
    sys.exit(1 if summary["errors"] else 0)


if __name__ == "__main__":
    main()
