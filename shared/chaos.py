"""`croupier chaos`: a Jepsen-style bank test on a real cluster under seeded faults.

Clients make bets, wins, rollbacks, deposits, withdrawals and balance reads through every edge (and the
cashier straight to the ledger), retry the same id after timeouts, and send deliberate duplicates.
Each operation is recorded with its outcome: `ok`, `fail` (a definite refusal) or `info` (unknown:
it may or may not have happened). Faults are drawn from a seeded RNG: kill -9 and restart of the
ledger or an edge, SIGSTOP/SIGCONT of the ledger, and proxy faults (latency with jitter,
blackhole, reset, slow close) on edge→ledger and edge↔edge links.

After healing, `check_history` judges the history against the journal (see its docstring).
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog

from shared.cluster import Cluster
from shared.verify import Check, check_cluster, fold_journal, read_journal

ATTEMPTS_MAX = 4
ATTEMPT_TIMEOUT_S = 2.0
FAULT_HOLD_S = (1.0, 3.0)
FAULT_GAP_S = (1.0, 3.0)
HISTORY_MAX = 200_000  # operations a run records at most: the workload stops issuing there
RETRYABLE = {502, 503, 504, 599}

log = structlog.get_logger("croupier.chaos")


@dataclass
class Op:
    kind: str  # bet | win | rollback | deposit | withdrawal | read
    key: str | None
    body: dict[str, Any]
    via: str
    invoked_at: float
    outcome: str = "info"  # ok | fail | info
    status: int = 0
    answer: Any = None


@dataclass
class Workload:
    cluster: Cluster
    players: list[str]
    rng: random.Random
    history: list[Op] = field(default_factory=list)
    open_rounds: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # player → (round, bet id)
    bets: list[tuple[str, str]] = field(default_factory=list)  # (player, bet id)
    counter: int = 0
    history_max: int = HISTORY_MAX

    @property
    def exhausted(self) -> bool:
        """The history bound is reached: clients stop issuing (each finishes the operation it is in,
        so the history holds at most `history_max` + 2 per client)."""
        return len(self.history) >= self.history_max

    def next_id(self, kind: str) -> str:
        self.counter += 1
        return f"c-{kind}-{self.counter}"

    async def send(self, http: aiohttp.ClientSession, op: Op, url: str, headers: dict[str, str]) -> Op:
        """Send with retries of the same id; classify the final outcome."""
        self.history.append(op)
        for attempt in range(ATTEMPTS_MAX):
            try:
                timeout = aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_S)
                method = http.get if op.kind == "read" else http.post
                kwargs = {} if op.kind == "read" else {"json": op.body}
                async with method(url, headers=headers, timeout=timeout, **kwargs) as r:
                    op.status, op.answer = r.status, await r.json(content_type=None)
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError):
                op.status, op.answer = 599, None
            if op.status < 300:
                op.outcome = "ok"
                return op
            if op.status not in RETRYABLE:
                op.outcome = "fail"
                return op
            await asyncio.sleep(0.2 * (attempt + 1))
        op.outcome = "info"
        return op

    async def client(self, http: aiohttp.ClientSession, deadline: float, rng: random.Random) -> None:
        gs = self.cluster.headers("game_server")
        while time.monotonic() < deadline and not self.exhausted:
            edge = rng.choice(self.cluster.edge_ids)
            base = self.cluster.url(edge)
            player = rng.choice(self.players)
            roll = rng.random()
            if roll < 0.45:
                await self.bet(http, base, edge, gs, player, rng)
            elif roll < 0.65 and self.open_rounds.get(player):
                round_id, bet_id = rng.choice(self.open_rounds[player])
                close = rng.random() < 0.7
                op = Op("win", None, {"id": self.next_id("win"), "player_id": player, "currency": "EUR",
                                      "amount_minor": rng.randint(0, 60), "round_id": round_id,
                                      "close_round": close}, edge, time.monotonic())
                op.key = op.body["id"]
                await self.send(http, op, base + "/v1/wins", gs)
                if op.outcome == "ok" and close and (round_id, bet_id) in self.open_rounds.get(player, []):
                    self.open_rounds[player].remove((round_id, bet_id))
            elif roll < 0.75 and self.bets:
                p, bet_id = rng.choice(self.bets) if rng.random() < 0.9 else (player, self.next_id("ghost"))
                op = Op("rollback", None, {"id": self.next_id("rb"), "bet_id": bet_id, "player_id": p}, edge,
                        time.monotonic())
                op.key = op.body["id"]
                await self.send(http, op, base + "/v1/rollbacks", gs)
            elif roll < 0.85:
                kind = "deposit" if roll < 0.81 else "withdrawal"
                op = Op(kind, None, {"id": self.next_id(kind), "player_id": player, "currency": "EUR",
                                     "amount_minor": rng.randint(50, 300)}, "ledger", time.monotonic())
                op.key = op.body["id"]
                await self.send(http, op, f"{self.cluster.url('ledger')}/v1/{kind}s", self.cluster.headers("cashier"))
            else:
                op = Op("read", None, {"player_id": player}, edge, time.monotonic())
                await self.send(http, op, f"{base}/v1/players/{player}/balances", gs)

    async def bet(self, http: aiohttp.ClientSession, base: str, edge: str, gs: dict[str, str], player: str,
                  rng: random.Random) -> None:
        round_id = self.next_id("round")
        body = {"id": self.next_id("bet"), "player_id": player, "currency": "EUR",
                "amount_minor": rng.randint(1, 80), "round_id": round_id,
                "game_id": rng.choice(["slots-1", "slots-2", "table-1"])}
        op = Op("bet", body["id"], body, edge, time.monotonic())
        if rng.random() < 0.1:  # a deliberate duplicate, concurrently, through another edge
            dup = Op("bet", body["id"], body, rng.choice(self.cluster.edge_ids), time.monotonic())
            await asyncio.gather(self.send(http, op, base + "/v1/bets", gs),
                                 self.send(http, dup, self.cluster.url(dup.via) + "/v1/bets", gs))
        else:
            await self.send(http, op, base + "/v1/bets", gs)
        if op.outcome != "fail":
            self.bets.append((player, body["id"]))
        if op.outcome == "ok":
            self.open_rounds.setdefault(player, []).append((round_id, body["id"]))


class Nemesis:
    """Seeded faults, one at a time, each healed before the next."""

    KINDS = ("kill_ledger", "kill_edge", "pause_ledger", "latency", "blackhole", "reset", "slow_close",
             "partition")

    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        self.cluster, self.rng = cluster, rng
        self.log: list[str] = []

    async def run(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            await asyncio.sleep(self.rng.uniform(*FAULT_GAP_S))
            kind = self.rng.choice(self.KINDS)
            hold = self.rng.uniform(*FAULT_HOLD_S)
            self.log.append(f"{time.monotonic():.1f} {kind} {hold:.1f}s")
            await self.inject(kind, hold)

    async def inject(self, kind: str, hold: float) -> None:
        c = self.cluster
        if kind == "kill_ledger":
            await c.kill("ledger")
            await asyncio.sleep(hold)
            await c.start_service("ledger")
        elif kind == "kill_edge":
            edge = self.rng.choice(c.edge_ids)
            await c.kill(edge)
            await asyncio.sleep(hold)
            await c.start_service(edge)
        elif kind == "pause_ledger":
            c.signal("ledger", signal.SIGSTOP)
            try:
                await asyncio.sleep(hold)
            finally:
                c.signal("ledger", signal.SIGCONT)
        elif kind == "partition":
            c.partition(self.rng.choice(c.edge_ids), mode=self.rng.choice(["blackhole", "reset"]))
            await asyncio.sleep(hold)
            c.heal()
        else:
            links = [k for k in c.proxies if self.rng.random() < 0.5] or [next(iter(c.proxies))]
            for link in links:
                c.proxies[link].set_mode(kind, latency_s=0.3, jitter_s=0.2)
            await asyncio.sleep(hold)
            c.heal()


def check_history(history: list[Op], entries: list[dict[str, Any]]) -> list[Check]:
    """Every `ok` write is journaled (committed) exactly once with the sequence and balance it
    answered; every `info` write at most once; no `fail` write committed; no `ok` read negative."""
    by_key: dict[str, list[dict[str, Any]]] = {}
    for e in entries:
        tx = e["transaction"]
        if tx.get("id") is not None:
            by_key.setdefault(f"{tx.get('client_id')}|{tx['id']}", []).append(e)
    _, fold_problems = fold_journal(entries)
    balance_after = _player_balance_after(entries)
    problems: list[str] = []
    writes = [op for op in history if op.kind != "read"]
    for op in writes:
        client = "cashier" if op.kind in ("deposit", "withdrawal") else "gs"
        found = by_key.get(f"{client}|{op.key}", [])
        committed = [e for e in found if e["transaction"].get("outcome") == "committed"]
        if op.outcome == "ok":
            if len(found) != 1:
                problems.append(f"ok {op.kind} {op.key} journaled {len(found)} times")
                continue
            seq = op.answer["transaction"]["sequence"]
            if found[0]["sequence"] != seq:
                problems.append(f"ok {op.kind} {op.key} answered sequence {seq}, journal has {found[0]['sequence']}")
            bal = op.answer.get("balance") or {}
            want = balance_after.get((seq, bal.get("player_id")))
            if want is not None and want != bal.get("balance_minor"):
                problems.append(f"ok {op.kind} {op.key} answered balance {bal.get('balance_minor')}, journal {want}")
        elif op.outcome == "info" and len(found) > 1:
            problems.append(f"info {op.kind} {op.key} journaled {len(found)} times")
        elif op.outcome == "fail" and committed:
            problems.append(f"failed {op.kind} {op.key} ({op.status}) was committed at {committed[0]['sequence']}")
    negative = [op for op in history if op.kind == "read" and op.outcome == "ok"
                and any(b["balance_minor"] < 0 for b in op.answer.get("balances", []))]
    counts = {k: sum(1 for op in writes if op.outcome == k) for k in ("ok", "fail", "info")}
    return [
        Check("history matches the journal", not problems,
              problems[0] if problems else f"{len(writes)} writes: {counts}"),
        Check("no negative balance in any ok read", not negative,
              f"{len(negative)} negative reads" if negative else "all reads >= 0"),
        Check("journal fold is clean", not fold_problems, fold_problems[0] if fold_problems else "ok"),
    ]


def _player_balance_after(entries: list[dict[str, Any]]) -> dict[tuple[int, str], int]:
    running: dict[str, int] = {}
    out: dict[tuple[int, str], int] = {}
    for e in entries:
        for p in e["postings"]:
            running[p["account"]] = running.get(p["account"], 0) + p["amount_minor"]
            if p["account"].startswith("player:"):
                out[(e["sequence"], p["account"].split(":")[1])] = running[p["account"]]
    return out


@dataclass
class ChaosReport:
    """The verdict of a run: always produced, even when the run itself broke."""

    seed: int
    checks: list[Check]
    history: list[Op] = field(default_factory=list)
    fault_log: list[str] = field(default_factory=list)
    history_max: int = HISTORY_MAX

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def counts(self) -> dict[str, int]:
        writes = [op for op in self.history if op.kind != "read"]
        out = {k: sum(1 for op in writes if op.outcome == k) for k in ("ok", "fail", "info")}
        out["reads"] = len(self.history) - len(writes)
        return out

    def faults_by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(line.split()[1] for line in self.fault_log).items()))

    def summary(self) -> list[str]:
        c = self.counts()
        bound = " (history bound reached: the workload stopped issuing)" if len(self.history) >= self.history_max else ""
        faults = ", ".join(f"{k} {n}" for k, n in self.faults_by_kind().items()) or "none"
        return [(f"seed {self.seed}: {len(self.history)} operations{bound}; writes ok {c['ok']}, fail {c['fail']}, "
                 f"info {c['info']}; reads {c['reads']}"),
                f"faults by kind: {faults}"]


async def run_chaos(cluster: Cluster, *, duration_s: float, seed_value: int, clients: int,
                    players: list[str], history_max: int = HISTORY_MAX) -> ChaosReport:
    """Load and faults for `duration_s` (or until the history bound), heal, check. Never raises
    for what goes wrong inside the run: that becomes a failed check of the report."""
    rng = random.Random(seed_value)
    workload = Workload(cluster, players, random.Random(rng.random()), history_max=history_max)
    nemesis = Nemesis(cluster, random.Random(rng.random()))
    report = ChaosReport(seed_value, [], workload.history, nemesis.log, history_max)
    try:
        await _load_under_faults(workload, nemesis, duration_s, clients, rng)
    except Exception as e:  # noqa: BLE001 (whatever broke, the run still ends with a verdict)
        log.error("chaos_run_failed", phase="load", error=repr(e))
        report.checks.append(Check("the run completed", False, f"load phase: {type(e).__name__}: {e}"))
    try:
        report.checks += await _heal_and_check(cluster, workload, players)
    except Exception as e:  # noqa: BLE001 (whatever broke, the run still ends with a verdict)
        log.error("chaos_run_failed", phase="check", error=repr(e))
        report.checks.append(Check("the healed cluster was checked", False, f"{type(e).__name__}: {e}"))
    return report


async def _load_under_faults(workload: Workload, nemesis: Nemesis, duration_s: float, clients: int,
                             rng: random.Random) -> None:
    deadline = time.monotonic() + duration_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=128)) as http:
        tasks = [asyncio.create_task(workload.client(http, deadline, random.Random(rng.random())))
                 for _ in range(clients)]
        load = asyncio.gather(*tasks)
        faults = asyncio.create_task(nemesis.run(deadline))
        try:
            await load  # the clients stop at the deadline or at the history bound, whichever is first
            if not faults.done():  # no load left to judge: the faults end too (healed below)
                faults.cancel()
            await asyncio.gather(faults, return_exceptions=True)
            if not faults.cancelled() and faults.exception() is not None:
                raise faults.exception()  # type: ignore[misc]
        finally:
            for t in (*tasks, faults):
                t.cancel()
            await asyncio.gather(*tasks, faults, return_exceptions=True)


async def _heal_and_check(cluster: Cluster, workload: Workload, players: list[str]) -> list[Check]:
    cluster.heal()
    for name in ("ledger", *cluster.edge_ids):
        if not cluster.services[name].running:
            await cluster.start_service(name)
    info = cluster.info()
    async with aiohttp.ClientSession() as http:
        entries = await read_journal(http, cluster.url("ledger"), cluster.headers("admin_read"))
    checks = check_history(workload.history, entries)
    checks += await _converged_cluster_checks(info, players)
    return checks


async def _converged_cluster_checks(info: dict[str, Any], players: list[str]) -> list[Check]:
    deadline = time.monotonic() + 30.0
    while True:
        checks = await check_cluster(info, ["mega"], players)
        if all(c.ok for c in checks) or time.monotonic() > deadline:
            return checks
        await asyncio.sleep(0.5)
