"""`croupier chaos`: a Jepsen-style bank test on a real cluster under seeded faults.

Clients make bets, wins, rollbacks, deposits, withdrawals and balance reads through every edge (and the
cashier straight to the ledger), retry the same id after timeouts, and send deliberate duplicates.
Each operation is recorded with its outcome: `ok`, `fail` (a definite refusal) or `info` (unknown:
it may or may not have happened), and, for an answer, the epoch it carries and the ledger copy
that gave it. The cluster runs a synchronous standby (both copies synchronous, so a promoted copy
waits for the old primary to rejoin as its standby). Faults are drawn from a seeded RNG by
`harness.nemesis` (process, network, failover and lying-participant kinds; see there).

After healing, `check_history` judges the history against the final primary's journal (see its
docstring), `check_failover` against the journals of every ledger copy, and the cluster checks
(`harness.verify`) plus liveness and phantom-jackpot probes judge the healed cluster.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
import structlog

from harness.account_names import wallet_of
from harness.cluster import STANDBY, Cluster, read_readyz
from harness.nemesis import DEFAULT_FAULTS, EPOCH_HEADER, Nemesis
from harness.verify import Check, check_cluster, fold_journal, read_journal

ATTEMPTS_MAX = 4
ATTEMPT_TIMEOUT_S = 2.0
CONVERGE_S = 30.0  # after healing: displays must match the ledger within this
LIVENESS_S = 20.0  # after healing: a write through every edge must succeed within this
FAULT_END_S = 120.0  # once the load ended, the fault under way gets this long to end (a Patroni leader wait is 40 s)
CATCH_UP_S = 180.0  # healing waits this long at most for the standby to hold the primary's head
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
    answered_by: str = ""  # the service that gave the final answer (an edge, or a ledger copy)
    epoch_header: int | None = None  # X-Ledger-Epoch of a ledger copy's answer

    @property
    def acked_at(self) -> tuple[int, int] | None:
        """(epoch, sequence) of the journal entry an ok write's answer names."""
        tx = (self.answer or {}).get("transaction") if isinstance(self.answer, dict) else None
        if self.outcome != "ok" or not isinstance(tx, dict) or "sequence" not in tx:
            return None
        return int(tx.get("epoch", 0)), int(tx["sequence"])


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

    async def send(
        self,
        http: aiohttp.ClientSession,
        op: Op,
        url: str,
        headers: dict[str, str],
        to: list[tuple[str, str]] | None = None,
    ) -> Op:
        """Send with retries of the same id (attempt i goes to `to[i % len(to)]`, (service, url)
        pairs; by default `url` of `op.via`); classify the final outcome."""
        self.history.append(op)
        targets = to or [(op.via, url)]
        for attempt in range(ATTEMPTS_MAX):
            service, target = targets[attempt % len(targets)]
            op.answered_by, op.epoch_header = service, None
            try:
                timeout = aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_S)
                method = http.get if op.kind == "read" else http.post
                kwargs: dict[str, Any] = {} if op.kind == "read" else {"json": op.body}
                async with method(target, headers=headers, timeout=timeout, **kwargs) as r:
                    op.status, op.answer = r.status, await r.json(content_type=None)
                    raw = r.headers.get(EPOCH_HEADER, "")
                    op.epoch_header = int(raw) if raw.isdigit() else None
            except (aiohttp.ClientError, TimeoutError, ValueError):
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
                op = Op(
                    "win",
                    None,
                    {
                        "id": self.next_id("win"),
                        "player_id": player,
                        "currency": "EUR",
                        "amount_minor": rng.randint(0, 60),
                        "round_id": round_id,
                        "close_round": close,
                    },
                    edge,
                    time.monotonic(),
                )
                op.key = op.body["id"]
                await self.send(http, op, base + "/v1/wins", gs)
                if op.outcome == "ok" and close and (round_id, bet_id) in self.open_rounds.get(player, []):
                    self.open_rounds[player].remove((round_id, bet_id))
            elif roll < 0.75 and self.bets:
                p, bet_id = rng.choice(self.bets) if rng.random() < 0.9 else (player, self.next_id("ghost"))
                op = Op(
                    "rollback",
                    None,
                    {"id": self.next_id("rb"), "bet_id": bet_id, "player_id": p},
                    edge,
                    time.monotonic(),
                )
                op.key = op.body["id"]
                await self.send(http, op, base + "/v1/rollbacks", gs)
            elif roll < 0.85:
                kind = "deposit" if roll < 0.81 else "withdrawal"
                op = Op(
                    kind,
                    None,
                    {
                        "id": self.next_id(kind),
                        "player_id": player,
                        "currency": "EUR",
                        "amount_minor": rng.randint(50, 300),
                    },
                    "ledger",
                    time.monotonic(),
                )
                op.key = op.body["id"]
                # The cashier tries the copy it believes primary first, then the other one.
                copies = self.ledger_copies()
                await self.send(
                    http,
                    op,
                    "",
                    self.cluster.headers("cashier"),
                    to=[(name, f"{url}/v1/{kind}s") for name, url in copies],
                )
            else:
                op = Op("read", None, {"player_id": player}, edge, time.monotonic())
                await self.send(http, op, f"{base}/v1/players/{player}/balances", gs)

    def ledger_copies(self) -> list[tuple[str, str]]:
        c = self.cluster
        names = [c.primary, c.standby_name] if c.standby else [c.primary]
        return [(n, c.url(n)) for n in names]

    async def bet_now(self, http: aiohttp.ClientSession, edge: str) -> Op:
        """One bet on a jackpot game through `edge`, recorded like any other (for the nemesis)."""
        bet_id, player = self.next_id("bet"), self.rng.choice(self.players)
        body: dict[str, Any] = {
            "id": bet_id,
            "player_id": player,
            "currency": "EUR",
            "amount_minor": self.rng.randint(1, 80),
            "round_id": self.next_id("round"),
            "game_id": "slots-1",
        }
        op = Op("bet", bet_id, body, edge, time.monotonic())
        await self.send(http, op, self.cluster.url(edge) + "/v1/bets", self.cluster.headers("game_server"))
        if op.outcome != "fail":
            self.bets.append((player, bet_id))
        return op

    async def bet(
        self, http: aiohttp.ClientSession, base: str, edge: str, gs: dict[str, str], player: str, rng: random.Random
    ) -> None:
        round_id, bet_id = self.next_id("round"), self.next_id("bet")
        body = {
            "id": bet_id,
            "player_id": player,
            "currency": "EUR",
            "amount_minor": rng.randint(1, 80),
            "round_id": round_id,
            "game_id": rng.choice(["slots-1", "slots-2", "table-1"]),
        }
        op = Op("bet", bet_id, body, edge, time.monotonic())
        if rng.random() < 0.1:  # a deliberate duplicate, concurrently, through another edge
            dup = Op("bet", bet_id, body, rng.choice(self.cluster.edge_ids), time.monotonic())
            await asyncio.gather(
                self.send(http, op, base + "/v1/bets", gs),
                self.send(http, dup, self.cluster.url(dup.via) + "/v1/bets", gs),
            )
        else:
            await self.send(http, op, base + "/v1/bets", gs)
        if op.outcome != "fail":
            self.bets.append((player, bet_id))
        if op.outcome == "ok":
            self.open_rounds.setdefault(player, []).append((round_id, bet_id))


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
            want = balance_after.get((seq, bal["player_id"])) if "player_id" in bal else None
            if want is not None and want != bal.get("balance_minor"):
                problems.append(f"ok {op.kind} {op.key} answered balance {bal.get('balance_minor')}, journal {want}")
        elif op.outcome == "info" and len(found) > 1:
            problems.append(f"info {op.kind} {op.key} journaled {len(found)} times")
        elif op.outcome == "fail" and committed:
            problems.append(f"failed {op.kind} {op.key} ({op.status}) was committed at {committed[0]['sequence']}")
    negative = [
        op
        for op in history
        if op.kind == "read"
        and op.outcome == "ok"
        and any(b["balance_minor"] < 0 for b in op.answer.get("balances", []))
    ]
    counts = {k: sum(1 for op in writes if op.outcome == k) for k in ("ok", "fail", "info")}
    return [
        Check(
            "history matches the journal", not problems, problems[0] if problems else f"{len(writes)} writes: {counts}"
        ),
        Check(
            "no negative balance in any ok read",
            not negative,
            f"{len(negative)} negative reads" if negative else "all reads >= 0",
        ),
        Check("journal fold is clean", not fold_problems, fold_problems[0] if fold_problems else "ok"),
    ]


def check_failover(history: list[Op], journals: dict[str, list[dict[str, Any]]], final_primary: str) -> list[Check]:
    """Across every failover:

    - at most one ledger copy acknowledges writes per epoch: no two copies' journals hold
      different entries at one sequence in one epoch; no ok answer names an (epoch, sequence)
      whose entry in some copy is another transaction; and no epoch (`X-Ledger-Epoch` of a copy's
      ok answer to a new commit, not a replay) was announced by two copies acknowledging writes;
    - nothing acknowledged is lost: every ok write is in the final primary's journal.

    `journals` maps each ledger copy to its journal (as read after healing)."""
    split: list[str] = []
    at: dict[tuple[int, int], tuple[str, str]] = {}  # (epoch, sequence) -> (copy, hash)
    by_copy_seq: dict[str, dict[int, dict[str, Any]]] = {}
    for copy, entries in sorted(journals.items()):
        by_copy_seq[copy] = {e["sequence"]: e for e in entries}
        for e in entries:
            seen = at.setdefault((e["epoch"], e["sequence"]), (copy, e["hash"]))
            if seen[1] != e["hash"]:
                split.append(
                    f"{seen[0]} and {copy} both journaled sequence {e['sequence']} in epoch {e['epoch']}, differently"
                )
    acked_by: dict[int, dict[str, str]] = {}  # epoch -> copy -> an example write it acknowledged
    for op in history:
        where = op.acked_at
        if where is None:
            continue
        epoch, seq = where
        replayed = isinstance(op.answer, dict) and op.answer.get("replayed") is True
        if op.epoch_header is not None and op.answered_by in journals and not replayed:  # a new commit
            acked_by.setdefault(op.epoch_header, {}).setdefault(op.answered_by, f"{op.kind} {op.key}")
        for copy, by_seq in by_copy_seq.items():
            there = by_seq.get(seq)
            if there is not None and there["epoch"] == epoch and there["transaction"].get("id") != op.key:
                split.append(
                    f"ok {op.kind} {op.key} was acknowledged at sequence {seq} in epoch {epoch}, "
                    f"where {copy} journaled {there['transaction'].get('id')}"
                )
    split += [
        f"epoch {epoch} acknowledged new writes from {sorted(copies)} (e.g. "
        + ", ".join(f"{example} by {copy}" for copy, example in sorted(copies.items()))
        + ")"
        for epoch, copies in sorted(acked_by.items())
        if len(copies) > 1
    ]
    final = {(e["transaction"].get("client_id"), e["transaction"].get("id")) for e in journals.get(final_primary, [])}
    lost = [
        op
        for op in history
        if op.outcome == "ok"
        and op.kind != "read"
        and ("cashier" if op.kind in ("deposit", "withdrawal") else "gs", op.key) not in final
    ]
    ok_writes = sum(1 for op in history if op.outcome == "ok" and op.kind != "read")
    epochs = sorted({e["epoch"] for entries in journals.values() for e in entries})
    return [
        Check(
            "at most one copy acknowledges writes per epoch",
            not split,
            split[0] if split else f"{len(journals)} copies, epochs {epochs}",
        ),
        Check(
            "nothing acknowledged is lost across failovers",
            not lost,
            f"{len(lost)} ok writes missing from {final_primary}, first {lost[0].kind} {lost[0].key}"
            if lost
            else f"{ok_writes} ok writes all in {final_primary}'s journal",
        ),
    ]


def _player_balance_after(entries: list[dict[str, Any]]) -> dict[tuple[int, str], int]:
    """(sequence, player id) -> the player's wallet balance after that entry."""
    running: dict[str, int] = {}
    out: dict[tuple[int, str], int] = {}
    for e in entries:
        for p in e["postings"]:
            running[p["account"]] = running.get(p["account"], 0) + p["amount_minor"]
            if (wallet := wallet_of(p["account"])) is not None:
                out[(e["sequence"], wallet.player_id)] = running[p["account"]]
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
        bound = (
            " (history bound reached: the workload stopped issuing)" if len(self.history) >= self.history_max else ""
        )
        faults = ", ".join(f"{k} {n}" for k, n in self.faults_by_kind().items()) or "none"
        return [
            (
                f"seed {self.seed}: {len(self.history)} operations{bound}; writes ok {c['ok']}, fail {c['fail']}, "
                f"info {c['info']}; reads {c['reads']}"
            ),
            f"faults by kind: {faults}",
        ]


async def run_chaos(
    cluster: Cluster,
    *,
    duration_s: float,
    seed_value: int,
    clients: int,
    players: list[str],
    history_max: int = HISTORY_MAX,
    faults: tuple[str, ...] = DEFAULT_FAULTS,
) -> ChaosReport:
    """Load and faults for `duration_s` (or until the history bound), heal, check. Never raises
    for what goes wrong inside the run: that becomes a failed check of the report."""
    rng = random.Random(seed_value)
    workload = Workload(cluster, players, random.Random(rng.random()), history_max=history_max)
    nemesis = Nemesis(cluster, random.Random(rng.random()), faults)
    nemesis.heal = partial(heal, cluster)
    report = ChaosReport(seed_value, [], workload.history, nemesis.log, history_max)
    try:
        await _load_under_faults(workload, nemesis, duration_s, clients, rng)
    except Exception as e:  # noqa: BLE001 (whatever broke, the run still ends with a verdict)
        log.error("chaos_run_failed", phase="load", error=repr(e))
        report.checks.append(Check("the run completed", False, f"load phase: {type(e).__name__}: {e}"))
    try:
        report.checks += await _heal_and_check(cluster, workload, players)
        report.checks.append(
            Check(
                "every fault was carried out",
                not nemesis.errors,
                nemesis.errors[0] if nemesis.errors else f"{len(nemesis.log)} faults",
            )
        )
        report.checks.append(
            check_impersonation(
                nemesis.byzantine.accepted_impersonations,
                impersonations_tried=sum("byz_impersonate" in f for f in nemesis.log),
            )
        )
    except Exception as e:  # noqa: BLE001 (whatever broke, the run still ends with a verdict)
        log.error("chaos_run_failed", phase="check", error=repr(e))
        report.checks.append(Check("the healed cluster was checked", False, f"{type(e).__name__}: {e}"))
    return report


async def _load_under_faults(
    workload: Workload, nemesis: Nemesis, duration_s: float, clients: int, rng: random.Random
) -> None:
    deadline = time.monotonic() + duration_s
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=128)) as http:
        nemesis.bet_now = partial(workload.bet_now, http)
        tasks = [
            asyncio.create_task(workload.client(http, deadline, random.Random(rng.random()))) for _ in range(clients)
        ]
        load = asyncio.gather(*tasks)
        faults = asyncio.create_task(nemesis.run(deadline))
        try:
            await load  # the clients stop at the deadline or at the history bound, whichever is first
            if not faults.done():  # no load left to judge: no new fault, the one under way ends (healed below)
                nemesis.stop()
                await asyncio.wait({faults}, timeout=FAULT_END_S)
                faults.cancel()  # a fault that outlived its bound (nothing if it ended)
            await asyncio.gather(faults, return_exceptions=True)
            failure = None if faults.cancelled() else faults.exception()
            if failure is not None:
                raise failure
        finally:
            for t in (*tasks, faults):
                t.cancel()
            await asyncio.gather(*tasks, faults, return_exceptions=True)


async def heal(cluster: Cluster) -> None:
    """Undo whatever a fault cut short: links pass, nothing paused, no apply delay, the primary and
    the edges running, the other ledger copy running as its standby."""
    cluster.heal()
    log.info("chaos_heal", primary=cluster.primary)
    ledgers = [n for n in ("ledger", STANDBY) if n in cluster.services]
    for name in ledgers:
        if cluster.services[name].running:
            cluster.signal(name, signal.SIGCONT)
        if cluster.fault_hooks:
            cluster.set_apply_delay(name, 0)
    if cluster.standby:
        await _follow_the_primary_in_fact(cluster)
    if not cluster.services[cluster.primary].running:
        await cluster.start_service(cluster.primary, ready=False)
    if cluster.standby and not await _tailing(cluster, cluster.standby_name):
        # Dead, broken, or a former primary that never rejoined (a fault cut short): its data
        # may hold a tail the primary never had, so it starts over from a fresh copy.
        log.warning("chaos_heal_rejoin", copy=cluster.standby_name, primary=cluster.primary)
        await cluster.rejoin_as_standby(cluster.standby_name, keep_data=False)
    if cluster.standby:
        await _caught_up(cluster)
    for edge in cluster.edge_ids:
        if not cluster.services[edge].running:
            await cluster.start_service(edge)


async def _follow_the_primary_in_fact(cluster: Cluster) -> None:
    """A promotion carried out whose answer the harness never read (its request timed out, or a
    fault ended half-way) left the other copy primary at a higher epoch than the one the harness
    calls primary: healing around the latter would fence the real primary and rebuild it as a
    standby of a fenced copy. The copies say who is primary; the harness follows them."""
    seen: dict[str, dict[str, Any]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        for name in (cluster.primary, cluster.standby_name):
            ready = await read_readyz(http, cluster.url(name)) if cluster.services[name].running else None
            if ready is not None and isinstance(ready[1].get("epoch"), int):
                seen[name] = ready[1]
    other = seen.get(cluster.standby_name)
    if other is None or other.get("role") != "primary" or other.get("fenced"):
        return
    nominal = seen.get(cluster.primary)
    if nominal is None and cluster.services[cluster.primary].running:
        return  # running but unreadable: no evidence against it, and a wrong move would lose its writes
    if nominal is not None and nominal["epoch"] >= other["epoch"]:
        return
    log.warning("chaos_heal_primary_moved", was=cluster.primary, primary=cluster.standby_name, epoch=other["epoch"])
    cluster.adopt_primary(cluster.standby_name)


async def _tailing(cluster: Cluster, name: str) -> bool:
    """`name` runs as a standby whose tailer is alive and whose journal is a prefix of the
    primary's (the entry at its head has the same hash there): it can never break later."""
    if not cluster.services[name].running:
        return False
    h = cluster.headers("admin_read")
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
            async with http.get(cluster.url(name) + "/readyz") as r:
                ready, body = r.status, await r.json(content_type=None)
            if ready != 200 or not isinstance(body, dict) or body.get("role") != "standby":
                return False
            head = int(body.get("head_sequence", 0))
            if head == 0:
                return True
            hashes = []
            for copy in (name, cluster.primary):
                async with http.get(
                    cluster.url(copy) + "/v1/journal", headers=h, params={"after_sequence": head - 1, "limit": 1}
                ) as r:
                    lines = (await r.read()).splitlines()  # bytes: split at newlines only
                hashes.append(json.loads(lines[0])["hash"] if lines else None)
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
        return False
    return hashes[0] is not None and hashes[0] == hashes[1]


async def _caught_up(cluster: Cluster) -> None:
    """Wait (bounded by CATCH_UP_S) until the standby holds the primary's head of now: a long
    journal copied from nothing takes a while, and writes wait for it (synchronous pair)."""
    deadline = time.monotonic() + CATCH_UP_S
    target, head = None, -1
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        for _ in range(10_000):  # bounded; the deadline ends it first
            try:
                if target is None:
                    async with http.get(cluster.url(cluster.primary) + "/readyz") as r:
                        target = int((await r.json(content_type=None))["head_sequence"])
                async with http.get(cluster.url(cluster.standby_name) + "/readyz") as r:
                    head = int((await r.json(content_type=None))["head_sequence"])
            except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
                pass
            if (target is not None and head >= target) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    log.info("chaos_heal_standby", standby=cluster.standby_name, head_sequence=head, primary_head=target)


async def _heal_and_check(cluster: Cluster, workload: Workload, players: list[str]) -> list[Check]:
    await heal(cluster)
    info = cluster.info()
    journals: dict[str, list[dict[str, Any]]] = {}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        for name in [n for n in ("ledger", STANDBY) if n in cluster.services]:
            try:
                journals[name] = await read_journal(http, cluster.url(name), cluster.headers("admin_read"))
            except (aiohttp.ClientError, TimeoutError) as e:
                if name == cluster.primary:
                    raise
                log.warning("chaos_standby_journal_unreadable", copy=name, error=repr(e))
        checks = check_history(workload.history, journals[cluster.primary])
        checks += check_failover(workload.history, journals, cluster.primary)
        checks += await _isolated("the healed cluster serves writes", check_writes_served(http, cluster, players[0]))
    checks += await _isolated("the healed cluster's invariants were checked", _converged_cluster_checks(info, players))
    checks += await _isolated("no edge shows a jackpot the ledger does not know", check_no_phantom_jackpots(info))
    return checks


async def _isolated(name: str, checking: Awaitable[Check | list[Check]]) -> list[Check]:
    """One group of checks; if it breaks (say an edge answers garbage), that is its failed check
    and the other groups still run."""
    try:
        result = await checking
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError) as e:
        log.error("chaos_check_failed", check=name, error=repr(e))
        return [Check(name, False, f"{type(e).__name__}: {e}")]
    return result if isinstance(result, list) else [result]


def check_impersonation(accepted: list[str], *, impersonations_tried: int) -> Check:
    """No edge accepted a sync hello from a peer holding another edge's credential."""
    return Check(
        "no edge accepts a peer posing as another edge",
        not accepted,
        accepted[0] + (f" (and {len(accepted) - 1} more)" if len(accepted) > 1 else "")
        if accepted
        else f"{impersonations_tried} impersonation attempts, none accepted",
    )


async def check_writes_served(http: aiohttp.ClientSession, cluster: Cluster, player: str) -> Check:
    """Liveness after healing: a bet through every edge is judged (acknowledged or definitely
    refused, not 5xx) within LIVENESS_S: a cluster whose primary was fenced by a lie, or whose
    standby never acknowledges, fails."""
    deadline = time.monotonic() + LIVENESS_S
    pending = list(cluster.edge_ids)
    last: dict[str, int] = {}
    for n in range(1000):  # bounded; the deadline ends it long before
        if not pending or time.monotonic() > deadline:
            break
        edge = pending[0]
        body = {
            "id": f"probe-{edge}-{n}",
            "player_id": player,
            "currency": "EUR",
            "amount_minor": 1,
            "round_id": f"probe-{edge}-{n}",
            "game_id": "table-1",
        }
        try:
            async with http.post(
                cluster.url(edge) + "/v1/bets",
                json=body,
                headers=cluster.headers("game_server"),
                timeout=aiohttp.ClientTimeout(total=ATTEMPT_TIMEOUT_S * 2),
            ) as r:
                last[edge] = r.status
                if r.status < 500:  # judged (a refusal such as insufficient funds is an answer too)
                    pending.pop(0)
                    continue
        except (aiohttp.ClientError, TimeoutError):
            last[edge] = 599
        await asyncio.sleep(0.5)
    return Check(
        "the healed cluster serves writes",
        not pending,
        f"no bet judged within {LIVENESS_S:.0f}s through {pending} (last status {last})"
        if pending
        else f"a bet judged through each of {len(cluster.edge_ids)} edges ({last})",
    )


async def check_no_phantom_jackpots(info: dict[str, Any]) -> Check:
    """No edge lists a jackpot display the ledger does not have (a forged document)."""
    phantoms: list[str] = []
    edge_h = {"Authorization": f"Bearer {info['tokens']['edge']}"}
    gs_h = {"Authorization": f"Bearer {info['tokens']['game_server']}"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for edge in info["edges"]:
            async with http.get(f"{edge['url']}/v1/jackpots", headers=gs_h) as r:
                listed = [j["jackpot_id"] for j in (await r.json()).get("jackpots", [])]
            for jid in listed:
                async with http.get(f"{info['ledger']['url']}/v1/jackpots/{jid}", headers=edge_h) as r:
                    if r.status == 404:
                        phantoms.append(f"{edge['id']} shows jackpot {jid!r}, unknown to the ledger")
    return Check(
        "no edge shows a jackpot the ledger does not know",
        not phantoms,
        phantoms[0] if phantoms else f"{len(info['edges'])} edges' jackpot lists",
    )


async def _converged_cluster_checks(info: dict[str, Any], players: list[str]) -> list[Check]:
    deadline = time.monotonic() + CONVERGE_S
    while True:
        checks = await check_cluster(info, ["mega"], players)
        if all(c.ok for c in checks) or time.monotonic() > deadline:
            return checks
        await asyncio.sleep(0.5)
