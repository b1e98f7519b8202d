"""The chaos run's faults: seeded, one at a time, each healed before the next.

Every fault is a *kind* that can be enabled or disabled on its own (`croupier chaos --faults`).
`DEFAULT_FAULTS` are the kinds a run deals unless told otherwise: every kind. `HELD_BACK` lists a
kind that breaks a guarantee on the code of the day (with the fix it waits for), kept out of the
default set until that fix lands; it is empty: every hole the adversarial kinds once exploited
(unverified epoch claims, unproven standby positions, promotion during an apply, unchecked peer
updates, a shared peer credential) is fixed, and each kind ran against the unfixed code first to
show the checker catches it.

Kinds:

- process faults: `kill_ledger` (kill -9 of the primary, restart), `pause_ledger` (SIGSTOP/SIGCONT
  of the primary), `kill_standby` (kill -9 of the standby, restart on its data), `kill_edge`
- network faults on the proxied links: `latency`, `blackhole`, `reset`, `slow_close`, `partition`
- failover: `failover_kill` (kill -9 of the primary, promote the standby, the old primary rejoins
  as standby with a fresh copy), `failover_pause` (SIGSTOP the primary, promote the standby,
  SIGCONT the old one: two would-be primaries until it is fenced; then it rejoins fresh),
  `failover_slow_apply` (promotion while the standby is inside a slow apply, via the ledger's
  test-only fault point), `rejoin_diverged` (the old primary, with a tail the new one never had,
  rejoins as standby on its own data; then the new primary fails over back to it)
- PostgreSQL with Patroni (`croupier chaos --backend postgres --ha` only, never in the default set):
  `pg_kill_leader` (kill -9 of the PostgreSQL leader's Patroni and postmaster once a synchronous
  replica exists; Patroni promotes it; the killed member restarts and rejoins as a replica),
  `pg_switchover` (a planned leader change through `patronictl switchover`) and `pg_cut_leader`
  (a network cut of the leader: nftables in its network namespace drop all its traffic but its
  loopback; Patroni promotes the synchronous replica, the old leader demotes itself; healed after
  the hold, it rejoins as a replica; needs the members in namespaces, as `croupier chaos --ha` runs them)
- lying participants: `lie_epoch_edges` / `lie_epoch_ledger` (every role's credential sends huge
  and slightly-higher `X-Ledger-Epoch` claims to the edges / to the ledgers), `byz_<lie>` for each
  lie of `harness.byzantine` (a byzantine sync peer), and `kill_edge_unpersisted` (kill -9 of an
  edge right after a CRDT change, before its batched persistence)
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import structlog

from harness.byzantine import LIES, ByzantinePeer
from harness.cluster import LEDGER_ROLES, Cluster, PromotionRefused

log = structlog.get_logger("croupier.chaos.nemesis")

FAULT_HOLD_S = (1.0, 3.0)
FAULT_GAP_S = (1.0, 3.0)
APPLY_DELAY_S = 1.0  # the slow standby apply of `failover_slow_apply`
LIE_TIMEOUT_S = 3.0
HUGE_EPOCH = 10**18 - 1  # the largest the ledger parses (18 digits)
EPOCH_HEADER = "X-Ledger-Epoch"

BASE_FAULTS = ("kill_ledger", "kill_edge", "pause_ledger", "latency", "blackhole", "reset", "slow_close", "partition")
FAILOVER_FAULTS = ("kill_standby", "failover_kill", "failover_pause", "failover_slow_apply", "rejoin_diverged")
LYING_FAULTS = ("lie_epoch_edges", "lie_epoch_ledger", *(f"byz_{lie}" for lie in LIES), "kill_edge_unpersisted")
POSTGRES_HA_FAULTS = ("pg_kill_leader", "pg_switchover", "pg_cut_leader")  # need the database to be Patroni
KINDS = (*BASE_FAULTS, *FAILOVER_FAULTS, *LYING_FAULTS, *POSTGRES_HA_FAULTS)
# Adversarial kinds that break a guarantee on today's code, and the fix they wait for; enable one
# with --faults default,<kind>. Remove a kind from here once its fix has landed.
HELD_BACK: dict[str, str] = {}  # every kind is in the default set: the holes they exploited are fixed
DEFAULT_FAULTS = tuple(k for k in KINDS if k not in HELD_BACK and k not in POSTGRES_HA_FAULTS)
PG_LEADER_WAIT_S = 40.0  # Patroni's ttl (10 s) plus a busy machine


def parse_faults(spec: str) -> tuple[str, ...]:
    """`default`, `all`, `none` or kind names, comma-separated; `-kind` removes one."""
    chosen: list[str] = []
    for word in (w.strip() for w in spec.split(",")):
        if not word:
            continue
        if word in ("default", "all", "none"):
            add = {"default": DEFAULT_FAULTS, "all": KINDS, "none": ()}[word]
            chosen += [k for k in add if k not in chosen]
        elif word.startswith("-") and word[1:] in KINDS:
            chosen = [k for k in chosen if k != word[1:]]
        elif word in KINDS:
            chosen += [] if word in chosen else [word]
        else:
            raise ValueError(f"unknown fault kind {word!r}; kinds: {', '.join(KINDS)}")
    return tuple(chosen)


class Nemesis:
    """Seeded faults, one at a time, each healed before the next. `bet_now(edge)` places one bet
    through an edge and records it in the history (for `kill_edge_unpersisted`)."""

    def __init__(
        self,
        cluster: Cluster,
        rng: random.Random,
        kinds: tuple[str, ...] = DEFAULT_FAULTS,
        bet_now: Callable[[str], Awaitable[Any]] | None = None,
    ) -> None:
        self.cluster, self.rng, self.kinds = cluster, rng, kinds
        self.bet_now = bet_now
        self.byzantine = ByzantinePeer(cluster, random.Random(rng.random()))
        self.log: list[str] = []
        self.errors: list[str] = []  # faults that could not be carried out (e.g. a promotion refused)
        self.heal: Callable[[], Awaitable[None]] | None = None  # run after a fault failed half-way
        self._deck: list[str] = []
        self._stopping = asyncio.Event()

    def next_kind(self) -> str:
        """Kinds come in seeded shuffled rounds: every enabled kind once before any twice, so a
        short run covers what it enabled."""
        if not self._deck:
            self._deck = list(self.kinds)
            self.rng.shuffle(self._deck)
        return self._deck.pop()

    def stop(self) -> None:
        """Deal no further fault; the one under way runs to its end. Cancelled half-way, a failover
        leaves the cluster's copies ahead of what the harness knows of them (a promotion sent and
        carried out, its answer never read: the harness would heal around the wrong primary)."""
        self._stopping.set()

    async def run(self, deadline: float) -> None:
        started = time.monotonic()
        while self.kinds and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.rng.uniform(*FAULT_GAP_S)):
                    await self._stopping.wait()
            if self._stopping.is_set():
                return
            kind = self.next_kind()
            hold = self.rng.uniform(*FAULT_HOLD_S)
            self.log.append(f"+{time.monotonic() - started:.1f}s {kind} {hold:.1f}s")
            log.info("chaos_fault", kind=kind, hold_s=round(hold, 1))
            try:
                note = await self.inject(kind, hold)
            except Exception as e:  # noqa: BLE001 (a service refusing a fault is a finding, not the end)
                self.errors.append(f"{kind}: {type(e).__name__}: {e}")
                log.error("chaos_fault_failed", kind=kind, error=repr(e))
                note = f"failed: {type(e).__name__}"
                if self.heal is not None:
                    await self.heal()
            if note:
                self.log[-1] += f" ({note})"

    async def inject(self, kind: str, hold: float) -> str | None:
        c = self.cluster
        if kind.startswith("byz_"):
            target = self.rng.choice([e for e in c.edge_ids if any(d < e for d in c.edge_ids)])
            return await self.byzantine.lie(kind[4:], target, hold)
        handler = getattr(self, f"_{kind}", None)
        if handler is not None:
            return await handler(hold)
        links = [k for k in c.proxies if self.rng.random() < 0.5] or [next(iter(c.proxies))]
        for link in links:
            c.proxies[link].set_mode(kind, latency_s=0.3, jitter_s=0.2)
        await asyncio.sleep(hold)
        c.heal()
        return None

    # --- PostgreSQL with Patroni ------------------------------------------------------------

    def _patroni(self) -> Any:
        database = self.cluster.database
        if database is None or not hasattr(database, "switchover"):
            raise RuntimeError("this fault needs a Patroni cluster: croupier chaos --backend postgres --ha")
        return database

    async def _pg_kill_leader(self, hold: float) -> str:
        db = self._patroni()
        leader = await asyncio.to_thread(db.wait_for_leader)
        await asyncio.to_thread(db.wait_for_sync_standby)  # without one, strict mode would stop writes for good
        await asyncio.to_thread(db.kill_member, leader)
        promoted = await asyncio.to_thread(db.wait_for_leader, other_than=leader, timeout_s=PG_LEADER_WAIT_S)
        await asyncio.sleep(hold)
        await asyncio.to_thread(db.restart_member, leader)  # rejoins as a replica (pg_rewind)
        return f"{leader} killed, {promoted} promoted"

    async def _pg_cut_leader(self, hold: float) -> str:
        db = self._patroni()
        if getattr(db, "network", None) is None:
            raise RuntimeError(
                "pg_cut_leader needs the Patroni members in network namespaces (croupier chaos --backend postgres "
                "--ha starts them so, as root with nft)"
            )
        leader = await asyncio.to_thread(db.wait_for_leader)
        await asyncio.to_thread(db.wait_for_sync_standby)  # without one, strict mode would stop writes for good
        await asyncio.to_thread(db.cut_member, leader)
        try:
            promoted = await asyncio.to_thread(db.wait_for_leader, other_than=leader, timeout_s=PG_LEADER_WAIT_S)
            await asyncio.sleep(hold)
        finally:
            await asyncio.to_thread(db.heal_member, leader)  # it rejoins as a replica (pg_rewind)
        return f"{leader} cut off, {promoted} promoted, {leader} healed"

    async def _pg_switchover(self, hold: float) -> str:
        db = self._patroni()
        new = await asyncio.to_thread(db.switchover)
        await asyncio.sleep(hold)
        return f"leader now {new}"

    # --- process faults -------------------------------------------------------------------

    async def _kill_ledger(self, hold: float) -> None:
        name = self.cluster.primary
        await self.cluster.kill(name)
        await asyncio.sleep(hold)
        await self.cluster.start_service(name, ready=False)

    async def _kill_standby(self, hold: float) -> None:
        c = self.cluster
        name = c.standby_name
        await c.kill(name)
        await asyncio.sleep(hold)
        await c.rejoin_as_standby(name, keep_data=True)  # its journal is a prefix of the primary's

    async def _kill_edge(self, hold: float) -> None:
        edge = self.rng.choice(self.cluster.edge_ids)
        await self.cluster.kill(edge)
        await asyncio.sleep(hold)
        await self.cluster.start_service(edge)

    async def _pause_ledger(self, hold: float) -> None:
        name = self.cluster.primary
        self.cluster.signal(name, signal.SIGSTOP)
        try:
            await asyncio.sleep(hold)
        finally:
            self.cluster.signal(name, signal.SIGCONT)

    async def _partition(self, hold: float) -> None:
        c = self.cluster
        c.partition(self.rng.choice(c.edge_ids), mode=self.rng.choice(["blackhole", "reset"]))
        await asyncio.sleep(hold)
        c.heal()

    # --- failover -------------------------------------------------------------------------

    async def _restart_refused(self, old: str, refused: PromotionRefused) -> str:
        """A promotion the standby refused (it is behind what was acknowledged: promoting it would
        lose money): what an operator does instead is bring the old primary back on its data."""
        c = self.cluster
        if not c.services[old].running:
            await c.start_service(old, ready=False)
        log.info("chaos_promotion_refused", old_primary=old, detail=refused.problem.get("detail"))
        return f"promotion refused ({refused.problem.get('code')}): {old} kept as primary"

    async def _failover_kill(self, hold: float) -> str:
        c = self.cluster
        old = c.primary
        try:
            answer = await c.failover()
        except PromotionRefused as refused:
            return await self._restart_refused(old, refused)
        await asyncio.sleep(hold)
        await c.rejoin_as_standby(old, keep_data=False)
        return f"{c.primary} promoted to epoch {answer.get('epoch')}"

    async def _failover_pause(self, hold: float) -> str:
        c = self.cluster
        old, new = c.primary, c.standby_name
        c.signal(old, signal.SIGSTOP)
        try:
            answer = await c.promote(new)
        except PromotionRefused as refused:
            return await self._restart_refused(old, refused)
        finally:
            c.signal(old, signal.SIGCONT)  # two would-be primaries until the old one is fenced
        await asyncio.sleep(hold)
        await c.rejoin_as_standby(old, keep_data=False)
        return f"{new} promoted to epoch {answer.get('epoch')} while {old} was paused"

    async def _failover_slow_apply(self, hold: float) -> str:
        c = self.cluster
        old, new = c.primary, c.standby_name
        c.set_apply_delay(new, APPLY_DELAY_S)
        try:
            await asyncio.sleep(APPLY_DELAY_S / 2)  # under load, an apply is now inside its pause
            await c.kill(old)
            answer = await c.promote(new)
        except PromotionRefused as refused:
            return await self._restart_refused(old, refused)
        finally:
            c.set_apply_delay(new, 0)
        await asyncio.sleep(hold)
        await c.rejoin_as_standby(old, keep_data=False)
        return f"{new} promoted to epoch {answer.get('epoch')} during a slow apply"

    async def _rejoin_diverged(self, hold: float) -> str:
        """The standby pauses, so the primary journals a tail (unacknowledged) the standby never
        gets; the primary dies, the standby is promoted, the old primary rejoins as its standby on
        its own (diverged) data; then the new primary dies and the old one is promoted back."""
        c = self.cluster
        a, b = c.primary, c.standby_name
        c.signal(b, signal.SIGSTOP)
        try:
            await asyncio.sleep(hold)
            await c.kill(a)
        finally:
            c.signal(b, signal.SIGCONT)
        try:
            await c.promote(b)
        except PromotionRefused as refused:
            return await self._restart_refused(a, refused)
        await c.rejoin_as_standby(a, keep_data=True)
        await asyncio.sleep(hold)
        await c.kill(b)
        try:
            answer = await c.promote(a)
        except PromotionRefused as refused:  # a is behind what b acknowledged: b comes back, a is rebuilt
            outcome = await self._restart_refused(b, refused)
            await c.rejoin_as_standby(a, keep_data=False)
            return outcome
        await c.rejoin_as_standby(b, keep_data=False)
        return f"{a} rejoined on its diverged data, then promoted back to epoch {answer.get('epoch')}"

    # --- lying participants ---------------------------------------------------------------

    async def _lie_epoch_edges(self, hold: float) -> str:
        c = self.cluster
        paths = ["/v1/jackpots/mega", "/v1/players/p001/bonus-progress", "/v1/players/p001/balances", "/metrics"]
        n = await self._lie_epochs([c.url(e) for e in c.edge_ids], [*c.tokens], paths)
        await asyncio.sleep(hold)
        return f"{n} epoch claims to the edges"

    async def _lie_epoch_ledger(self, hold: float) -> str:
        c = self.cluster
        paths = ["/v1/players/p001/balances", "/admin/v1/replication", "/metrics", "/v1/jackpots/mega"]
        roles = [*LEDGER_ROLES, *(f"edge-{e}" for e in c.edge_ids)]
        n = await self._lie_epochs([c.url(c.primary), c.url(c.standby_name)], roles, paths)
        await asyncio.sleep(hold)
        return f"{n} epoch claims to the ledgers"

    async def _lie_epochs(self, urls: list[str], roles: list[str], paths: list[str]) -> int:
        """Every role's credential claims a slightly higher and a huge epoch on every path."""
        epoch = await self._current_epoch()
        sent = 0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=LIE_TIMEOUT_S)) as http:
            for url in urls:
                for role in roles:
                    for claim in (epoch + 1, HUGE_EPOCH):
                        headers = {**self.cluster.headers(role), EPOCH_HEADER: str(claim)}
                        for path in paths:
                            try:
                                async with http.get(url + path, headers=headers) as r:
                                    await r.read()
                                sent += 1
                            except (aiohttp.ClientError, TimeoutError):
                                pass
        return sent

    async def _current_epoch(self) -> int:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=LIE_TIMEOUT_S)) as http:
            try:
                async with http.get(self.cluster.url(self.cluster.primary) + "/healthz") as r:
                    return int(r.headers.get(EPOCH_HEADER, "1"))
            except (aiohttp.ClientError, TimeoutError, ValueError):
                return 1

    async def _kill_edge_unpersisted(self, hold: float) -> str:
        edge = self.rng.choice(self.cluster.edge_ids)
        outcome = "no bet"
        if self.bet_now is not None:
            op = await self.bet_now(edge)  # its CRDT change is made when the answer is sent...
            outcome = op.outcome
        await self.cluster.kill(edge)  # ...and killed before the batched write reaches disk
        await asyncio.sleep(hold)
        await self.cluster.start_service(edge)
        return f"{edge} killed right after a bet ({outcome})"
