"""Sync lag between edges: p50/p99 of `edge_sync_lag_seconds` at a steady rate of CRDT-affecting
bets, and the time to converge after a partition heals.

A ledger and three edges (eu, us, apac) run as real processes, every edge link through a fault
proxy (harness.cluster). A load generator in its own process sends bets on the jackpot games at a
fixed rate (open loop), spread round-robin over the edges: each bet is one jackpot-slot update
that the two other edges apply. With `--updates sessions` each update is a game-state save
(`PUT /v1/players/{player}/session/{game}`) instead: a CRDT update that does not go through the
ledger, so the rate measures sync alone (2,000 updates/s across three edges is the scale target),
and convergence means every edge shows the same game states of every player.

Sending 2,000 HTTP requests/s takes more than one client process (`--generators`, 3 by default,
share one schedule), and more than this 2-core machine serves while it also runs three edges, a
ledger and the proxies: the generators then fall behind (`late`) and measure themselves. With
`--drive in-process` each edge writes the sessions into itself instead (bench/edge_driver.py: the
edge's own `put_session`, everything after the HTTP parsing), so the rate is kept and the lag
measured is the sync path's: store, push, proxies, admission, apply. Phases:

  steady     `--seconds` at `--rate` bets/s: p50/p99 from the edges' lag histograms (delta of
             the buckets over the phase, interpolated like Prometheus' histogram_quantile)
  partition  apac cut from its peers for `--partition-seconds` under the same load, then the
             load stops and the cut heals: time until every edge shows the ledger's pool (timed
             by a poller in its own process: the proxies run in this one's event loop)

Targets: p99 < 100 ms at 500 updates/s (bets), p99 <= 50 ms at 2,000 updates/s (sessions);
convergence within 2 s of healing. Ends with one JSON line.

    .venv/bin/python bench/sync_lag.py [--rate 500] [--seconds 20] [--partition-seconds 30]
    .venv/bin/python bench/sync_lag.py --updates sessions --rate 2000 --partition-seconds 30
    .venv/bin/python bench/sync_lag.py --updates sessions --drive in-process --rate 2000 --partition-seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from shared import event_loop
from shared.metrics import histogram_quantile

from common import busy_share, machine_cpu_s, process_cpu_s
from harness.cluster import JACKPOT_GAMES, JACKPOT_ID, Cluster
from harness.launcher import ServiceProcess, serve_command
from ledger_throughput import seed_players

TARGETS = {"p99_ms_max": 100.0, "converge_s_max": 2.0}
SESSION_TARGETS = {"p99_ms_max": 50.0, "converge_s_max": 2.0}
SESSION_GAMES = 7  # games per player in sessions mode
CONCURRENCY_MAX = 256  # bets in flight from the generator
POLL_S = 0.05
POLL_CONCURRENCY = 32  # session reads in flight while polling for convergence
CONVERGE_TIMEOUT_S = 60.0
Generators = list[asyncio.subprocess.Process]
EDGE_DRIVER = Path(__file__).resolve().with_name("edge_driver.py")
DRIVE_LEAD_S = 0.5  # the edges read the plan before its start
# After the poll saw the same game states everywhere, the edges keep noting changes this long (an
# answer may still be in flight) before they report their last change and state.
WATCH_TAIL_S = 2.0
DRIVE_GRACE_S = 120.0  # a phase's counts are due this long after its end at the latest


# --- the load generator (a child process, so the proxies' event loop is not starved) -----------


async def generate(
    urls: list[str],
    token: str,
    rate: float,
    seconds: float,
    players: int,
    prefix: str,
    updates: str = "bets",
    part: int = 0,
    parts: int = 1,
) -> dict[str, int]:
    """Updates i = part, part + parts, ... of the schedule (update i due at i / rate s), to edge
    urls[i % len(urls)]: `parts` generators share one schedule, each sending its own share."""
    counts = {"ok": 0, "failed": 0, "late": 0}
    slots = asyncio.Semaphore(CONCURRENCY_MAX)
    started = time.monotonic()
    async with aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {token}"},
        connector=aiohttp.TCPConnector(limit=CONCURRENCY_MAX),
        timeout=aiohttp.ClientTimeout(total=10),
    ) as http:

        async def one(i: int) -> None:
            body = {
                "id": f"{prefix}-{i}",
                "player_id": f"bench-p{i % players}",
                "currency": "EUR",
                "amount_minor": 100,
                "round_id": f"{prefix}-r{i}",
                "game_id": JACKPOT_GAMES[i % len(JACKPOT_GAMES)],
            }
            url = urls[i % len(urls)]
            try:
                if updates == "sessions":
                    async with http.put(
                        f"{url}/v1/players/bench-p{i % players}/session/g{i % SESSION_GAMES}",
                        json={"state": {"run": prefix, "i": i}},
                    ) as r:
                        counts["ok" if r.status == 200 else "failed"] += 1
                    return
                async with http.post(url + "/v1/bets", json=body) as r:
                    counts["ok" if r.status == 201 else "failed"] += 1
            except (TimeoutError, aiohttp.ClientError):
                counts["failed"] += 1
            finally:
                slots.release()

        tasks = set()
        for i in range(part, int(rate * seconds), parts):
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.1:
                counts["late"] += 1  # the generator fell behind its schedule
            await slots.acquire()
            task = asyncio.create_task(one(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return counts


async def run_generator(cluster: Cluster, a: argparse.Namespace, seconds: float, prefix: str) -> Generators:
    """`a.generators` processes sharing the schedule (one aiohttp client process tops out near
    1,000 requests/s here: 2,000 updates/s take more than one)."""
    urls = ",".join(cluster.url(e) for e in cluster.edge_ids)
    return [
        await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--generate",
            urls,
            str(cluster.root / "secrets" / "game_server.token"),
            str(a.rate),
            str(seconds),
            str(a.players),
            prefix,
            a.updates,
            str(part),
            str(a.generators),
            stdout=asyncio.subprocess.PIPE,
        )
        for part in range(a.generators)
    ]


async def generator_counts(procs: Generators) -> dict[str, int]:
    total: dict[str, int] = {}
    for proc in procs:
        out, _ = await proc.communicate()
        for key, n in json.loads(out.decode().strip().splitlines()[-1]).items():
            total[key] = total.get(key, 0) + n
    return total


async def run_load(cluster: Cluster, a: argparse.Namespace, seconds: float, prefix: str) -> dict[str, int]:
    if a.drive == "http":
        return await generator_counts(await run_generator(cluster, a, seconds, prefix))
    return await drive_in_process(cluster, a, seconds, prefix)


# --- the in-process load (bench/edge_driver.py: each edge writes sessions into itself) -----------


class DrivenCluster(Cluster):
    """Edges run as bench/edge_driver.py: `croupier edge serve` plus the session writer."""

    async def start_service(self, name: str, *, ready: bool = True) -> None:
        svc = self.services[name]
        if svc.kind != "edge":
            return await super().start_service(name, ready=ready)
        assert not svc.running, f"{name} already running"
        command = serve_command(svc.kind, svc.config_path, *svc.args, program=(sys.executable, str(EDGE_DRIVER)))
        svc.process = ServiceProcess(name, command, log_path=svc.log_path, cwd=self.root).start()
        await self.wait_ready(name, path="/readyz" if ready else "/healthz")
        return None


async def drive_in_process(cluster: Cluster, a: argparse.Namespace, seconds: float, phase: str) -> dict[str, int]:
    """Hand the edges a phase of the schedule (load.json) and sum the counts they report."""
    edges = list(cluster.edge_ids)
    plan = {
        "phase": phase,
        "start_at": time.time() + DRIVE_LEAD_S,
        "seconds": seconds,
        "rate": a.rate,
        "players": a.players,
        "edges": edges,
    }
    write_plan(cluster, plan)
    reports = await edge_reports(
        [cluster.root / f"load-{phase}-{edge}.json" for edge in edges],
        DRIVE_LEAD_S + seconds + DRIVE_GRACE_S,
        f"finish phase {phase}",
    )
    total: dict[str, int] = {}
    for report in reports:
        for key, n in report.items():
            total[key] = total.get(key, 0) + n
    return total


def write_plan(cluster: Cluster, plan: dict[str, Any]) -> None:
    """Hand the driven edges `plan` (load.json, replaced whole: an edge never reads half of it)."""
    control = cluster.root / "load.json"
    tmp = control.with_name("load.json.tmp")
    tmp.write_text(json.dumps(plan))
    tmp.replace(control)


async def edge_reports(paths: list[Path], within_s: float, what: str) -> list[dict[str, Any]]:
    """The JSON every edge writes at `paths`, once all are there (TimeoutError after `within_s`)."""
    deadline = time.monotonic() + within_s
    while not all(p.exists() for p in paths):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the edges did not {what}")
        await asyncio.sleep(POLL_S / 10)
    return [json.loads(p.read_text()) for p in paths]


async def watch_edges(cluster: Cluster, step: str) -> list[dict[str, Any]]:
    """`start`: have every driven edge watch its replica (phase "watch" of bench/edge_driver.py)
    and wait until each does; `stop`: end the watch and collect what each edge saw."""
    edges = list(cluster.edge_ids)
    # A phase with no edges is one that no driver runs: it ends the watch.
    write_plan(cluster, {"phase": "watch", "edges": edges} if step == "start" else {"phase": "watched", "edges": []})
    prefix = "load-watching" if step == "start" else "load-watch"
    return await edge_reports([cluster.root / f"{prefix}-{e}.json" for e in edges], DRIVE_GRACE_S, f"{step} watching")


def edges_converged(watched: list[dict[str, Any]], healed_at: float) -> dict[str, Any]:
    """Seconds from the heal to the last change any edge made, if every edge ended with the same
    state vectors (else None): convergence as the edges saw it, to WATCH_POLL_S."""
    same = len({w["state_digest"] for w in watched}) == 1
    last = max((w["last_change_at"] for w in watched if w["last_change_at"] is not None), default=healed_at)
    return {"same_state": same, "converge_s": round(last - healed_at, 3) if same else None}


# --- measurements -------------------------------------------------------------------------------


def edges_cpu_s(cluster: Cluster) -> float:
    """CPU seconds the edge processes used so far, together (steadier than wall time on a shared
    machine: others' work slows the edges down but does not add to their CPU time)."""
    total = 0.0
    for edge in cluster.edge_ids:
        proc = cluster.services[edge].proc
        assert proc is not None
        total += process_cpu_s(proc.pid)
    return total


async def lag_buckets(cluster: Cluster, http: aiohttp.ClientSession) -> dict[float, float]:
    """Cumulative bucket counts of edge_sync_lag_seconds summed over every edge and origin."""
    total: dict[float, float] = {}
    for edge in cluster.edge_ids:
        async with http.get(cluster.url(edge) + "/metrics", headers=cluster.headers("metrics")) as r:
            text = await r.text()
        for family in text_string_to_metric_families(text):
            if family.name == "edge_sync_lag_seconds":
                for s in family.samples:
                    if s.name.endswith("_bucket"):
                        le = float(s.labels["le"])
                        total[le] = total.get(le, 0.0) + s.value
    return total


async def advertised_docs(cluster: Cluster, http: aiohttp.ClientSession) -> float:
    """Documents advertised by anti-entropy rounds so far (edge_sync_anti_entropy_docs_sum), every
    edge and peer together: what a round costs, beyond the live pushes."""
    total = 0.0
    for edge in cluster.edge_ids:
        async with http.get(cluster.url(edge) + "/metrics", headers=cluster.headers("metrics")) as r:
            text = await r.text()
        for family in text_string_to_metric_families(text):
            if family.name == "edge_sync_anti_entropy_docs":
                total += sum(s.value for s in family.samples if s.name.endswith("_sum"))
    return total


def quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float | None:
    """histogram_quantile over the increase of cumulative buckets between two scrapes."""
    return histogram_quantile(sorted((b, after[b] - before.get(b, 0.0)) for b in after), q)


@dataclass(frozen=True)
class Endpoints:
    """What the convergence poll reads: service urls and the headers of each role (plain data, so
    a poller in another process gets them as JSON)."""

    urls: dict[str, str]  # "ledger" and every edge id -> base url
    headers: dict[str, dict[str, str]]  # role -> request headers
    edge_ids: list[str]

    @classmethod
    def of(cls, cluster: Cluster) -> Endpoints:
        edges = list(cluster.edge_ids)
        return cls(
            {name: cluster.url(name) for name in ("ledger", *edges)},
            {role: cluster.headers(role) for role in ("edge", "game_server")},
            edges,
        )


async def displays(at: Endpoints, http: aiohttp.ClientSession) -> tuple[int, dict[str, int | None]]:
    async with http.get(f"{at.urls['ledger']}/v1/jackpots/{JACKPOT_ID}", headers=at.headers["edge"]) as r:
        pool = (await r.json())["pool_minor"]
    shown = {}
    for edge in at.edge_ids:
        display_url = f"{at.urls[edge]}/v1/jackpots/{JACKPOT_ID}"
        async with http.get(display_url, headers=at.headers["game_server"]) as r:
            shown[edge] = (await r.json()).get("display_minor") if r.status == 200 else None
    return pool, shown


async def sessions_shown(at: Endpoints, http: aiohttp.ClientSession, players: int) -> dict[str, list[Any]]:
    """Per edge, every player's game states (state and writer), as the edge serves them. The
    requests run concurrently (POLL_CONCURRENCY per edge, every edge at once: the edges are
    separate processes): one poll reads players x edges sessions, and a slow poll would add its
    own length to the convergence it measures."""
    slots = {edge: asyncio.Semaphore(POLL_CONCURRENCY) for edge in at.edge_ids}

    async def games(edge: str, p: int) -> dict[str, Any]:
        async with (
            slots[edge],
            http.get(f"{at.urls[edge]}/v1/players/bench-p{p}/session", headers=at.headers["game_server"]) as r,
        ):
            body = await r.json()
        return {g: (v["state"], v["edge"]) for g, v in body.get("games", {}).items()}

    every = await asyncio.gather(*(games(edge, p) for edge in at.edge_ids for p in range(players)))
    return {edge: list(every[i * players : (i + 1) * players]) for i, edge in enumerate(at.edge_ids)}


class NotConverged(RuntimeError):
    """The edges did not show the same state within CONVERGE_TIMEOUT_S."""


async def time_to_converge(
    at: Endpoints, http: aiohttp.ClientSession, since: float, sessions_of: int = 0
) -> tuple[float, float]:
    """Until every edge shows the ledger's pool (and, with `sessions_of` players, the same game
    states of each); and how long the last poll took (the resolution of the first figure: the
    edges converged at most that long before it)."""
    while True:
        polled_at = time.monotonic()
        pool, shown = await displays(at, http)
        differing = 0  # players whose game states differ between edges
        if sessions_of:
            states = list((await sessions_shown(at, http, sessions_of)).values())
            differing = sum(1 for p in range(sessions_of) if any(s[p] != states[0][p] for s in states))
        if all(v == pool for v in shown.values()) and not differing:
            now = time.monotonic()
            return now - since, now - polled_at
        if time.monotonic() - since > CONVERGE_TIMEOUT_S:
            raise NotConverged(
                f"not converged in {CONVERGE_TIMEOUT_S:g} s: pool {pool}, displays {shown}, "
                f"game states differing for {differing} of {sessions_of} players"
            )
        await asyncio.sleep(POLL_S)


async def poll_in_child() -> None:
    """`--poll`: the convergence poll as a child process. The fault proxies run in the benchmark's
    event loop, and a poll of every player's sessions at every edge (600 requests) starved them
    for seconds on a loaded machine: the links stalled and the time measured was the poll's.
    Reads its endpoints (JSON) from stdin, says `ready`, starts the clock at `go`, and prints the
    result as one JSON line."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    job = json.loads(await reader.readline())
    at = Endpoints(job["urls"], job["headers"], job["edge_ids"])
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        print("ready", flush=True)
        await reader.readline()
        try:
            converge_s, poll_s = await time_to_converge(at, http, time.monotonic(), job["sessions_of"])
        except NotConverged as e:
            print(json.dumps({"converge_s": None, "poll_s": None, "not_converged": str(e)}), flush=True)
            return
    print(json.dumps({"converge_s": converge_s, "poll_s": poll_s}), flush=True)


async def heal_and_converge(cluster: Cluster, sessions_of: int) -> dict[str, Any]:
    """Heal the partition; {"converge_s": seconds until converged, "poll_s": the last poll's
    length, "healed_at": Unix time of the heal} (the first two None and "not_converged" saying
    what differed if they did not), timed by a poller in its own process (see `poll_in_child`)."""
    at = Endpoints.of(cluster)
    job = {"urls": at.urls, "headers": at.headers, "edge_ids": at.edge_ids, "sessions_of": sessions_of}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--poll", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(json.dumps(job).encode() + b"\n")
        await proc.stdin.drain()
        if (await proc.stdout.readline()).strip() != b"ready":
            raise RuntimeError("the convergence poller did not start")
        healed_at = time.time()
        cluster.heal()
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        async with asyncio.timeout(CONVERGE_TIMEOUT_S + 30):
            line = await proc.stdout.readline()
        try:
            result: dict[str, Any] = json.loads(line)
        except ValueError:
            raise RuntimeError(f"the convergence poller failed: {line[-300:]!r}") from None
        return {**result, "healed_at": healed_at}
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def run(a: argparse.Namespace, root: Path) -> dict[str, Any]:
    targets = SESSION_TARGETS if a.updates == "sessions" else TARGETS
    sessions_of = a.players if a.updates == "sessions" else 0
    cluster = (DrivenCluster if a.drive == "in-process" else Cluster)(root, proxied=True, seed=1, log_level="warning")
    try:
        await cluster.start()
        await seed_players(cluster, a.players)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            await run_load(cluster, a, 2.0, "warm")
            await time_to_converge(Endpoints.of(cluster), http, time.monotonic())
            before = await lag_buckets(cluster, http)
            advertised_before = await advertised_docs(cluster, http)
            cpu_before, machine_before = edges_cpu_s(cluster), machine_cpu_s()
            steady = await run_load(cluster, a, a.seconds, "steady")
            machine_busy = busy_share(machine_before, machine_cpu_s())
            await time_to_converge(Endpoints.of(cluster), http, time.monotonic())
            cpu_s = edges_cpu_s(cluster) - cpu_before
            after = await lag_buckets(cluster, http)
            advertised = await advertised_docs(cluster, http) - advertised_before
            cluster.partition("apac")
            cut = await run_load(cluster, a, a.partition_seconds, "cut")
            _, during = await displays(Endpoints.of(cluster), http)
            if a.drive == "in-process":
                await watch_edges(cluster, "start")
            converged = await heal_and_converge(cluster, sessions_of)
            if a.drive == "in-process":
                await asyncio.sleep(WATCH_TAIL_S)  # what is still in flight lands before the states are compared
                converged["edges"] = edges_converged(await watch_edges(cluster, "stop"), converged["healed_at"])
    finally:
        await cluster.stop()
    p50, p99 = quantile(0.5, before, after), quantile(0.99, before, after)
    samples = after.get(float("inf"), 0.0) - before.get(float("inf"), 0.0)
    # Each update written once and applied by the other edges: CPU per update handled, machine-wide.
    handled = steady.get("ok", 0) * len(cluster.edge_ids)
    # Convergence: as the edges saw it (their last change after the heal) when they ran the
    # driver, once the poll saw every edge show the same game states; else the poll's own figure.
    edges_seen = converged.get("edges")
    converge_s, timed_by = converged["converge_s"], "poll"
    if edges_seen is not None and converge_s is not None and edges_seen["converge_s"] is not None:
        converge_s, timed_by = edges_seen["converge_s"], "edges"
    met = {
        "p99": p99 is not None and p99 * 1000 <= targets["p99_ms_max"],
        "converge": converge_s is not None and converge_s <= targets["converge_s_max"],
    }
    return {
        "benchmark": "sync_lag",
        "updates": a.updates,
        "rate_bets_per_s": a.rate,
        "rate_updates_per_s": a.rate,
        "p50_ms": round(p50 * 1000, 2) if p50 is not None else None,
        "p99_ms": round(p99 * 1000, 2) if p99 is not None else None,
        "lag_samples": int(samples),
        "edges_cpu_s": round(cpu_s, 2),
        # Near 1: the machine had no CPU to spare in the steady phase, and the lag measured queueing.
        "machine_cpu_busy_share": machine_busy,
        "edge_cpu_ms_per_update_handled": round(1000 * cpu_s / handled, 3) if handled else None,
        "advertised_docs_per_update": round(advertised / steady["ok"], 3) if steady.get("ok") else None,
        "converge_after_heal_s": None if converge_s is None else round(converge_s, 3),
        # The HTTP poll's figure (to within a poll, `converge_poll_s`): what players were shown.
        "converge_polled_s": None if converged["converge_s"] is None else round(converged["converge_s"], 3),
        "converge_poll_s": None if converged["poll_s"] is None else round(converged["poll_s"], 3),
        "converge_edges": edges_seen,
        "converge_timed_by": timed_by,
        "not_converged": converged.get("not_converged"),
        "targets": targets,
        "targets_met": met,
        "all_targets_met": all(met.values()),
        "steady_bets": steady,
        "partition_bets": cut,
        "displays_before_heal": during,
        "setup": {
            "seconds": a.seconds,
            "partition_seconds": a.partition_seconds,
            "players": a.players,
            "generators": a.generators,
            "drive": a.drive,
        },
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--poll":
        asyncio.run(poll_in_child())
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--generate":
        urls, token_file, rate, seconds, players, prefix, updates, part, parts = sys.argv[2:11]
        token = Path(token_file).read_text().strip()
        counts = asyncio.run(
            generate(
                urls.split(","),
                token,
                float(rate),
                float(seconds),
                int(players),
                prefix,
                updates,
                int(part),
                int(parts),
            )
        )
        print(json.dumps(counts), flush=True)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=500.0, help="bets (CRDT updates) per second (1..5000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="steady phase (1..600)")
    parser.add_argument("--partition-seconds", type=float, default=30.0, help="partition length (1..600)")
    parser.add_argument("--players", type=int, default=200, help="funded players (1..100000)")
    parser.add_argument(
        "--drive",
        choices=("http", "in-process"),
        default="http",
        help="sessions: sent over HTTP by generator processes, or written by each edge into itself "
        "(bench/edge_driver.py)",
    )
    parser.add_argument(
        "--generators", type=int, default=3, help="load generator processes sharing the schedule (1..16)"
    )
    parser.add_argument(
        "--updates",
        choices=("bets", "sessions"),
        default="bets",
        help="what each update is: a bet (jackpot slot, through the ledger) or a game-state save",
    )
    a = parser.parse_args()
    if not (
        1 <= a.rate <= 5000
        and 1 <= a.seconds <= 600
        and 1 <= a.partition_seconds <= 600
        and 1 <= a.players <= 100_000
        and 1 <= a.generators <= 16
    ):
        parser.error("an argument is out of its bounds")
    if a.drive == "in-process" and a.updates != "sessions":
        parser.error("--drive in-process writes sessions: use it with --updates sessions")
    root = Path(tempfile.mkdtemp(prefix="croupier-sync-bench-"))
    with asyncio.Runner(loop_factory=event_loop.new_loop) as runner:  # uvloop: the fault proxies' CPU
        summary = runner.run(run(a, root))
    targets = summary["targets"]
    print(
        f"sync lag p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms at {a.rate:g} {a.updates}/s "
        f"(target {targets['p99_ms_max']} ms: {'met' if summary['targets_met']['p99'] else 'MISSED'}); "
        f"converged {summary['converge_after_heal_s']} s after healing a {a.partition_seconds:g} s partition "
        f"(target {targets['converge_s_max']} s: {'met' if summary['targets_met']['converge'] else 'MISSED'}); "
        f"machine CPU {summary['machine_cpu_busy_share']:.0%} busy in the steady phase",
        flush=True,
    )
    if summary["not_converged"]:
        print(summary["not_converged"], flush=True)
    shutil.rmtree(root)
    print(json.dumps(summary, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
