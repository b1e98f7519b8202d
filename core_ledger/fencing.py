"""Fencing at the ledger's trust boundary: who may claim an epoch, what proves one, and lifting a fence.

A caller's `X-Ledger-Epoch` is a *claim* (the highest epoch it saw), never evidence. Only `edge`
and `replica` credentials may present one; from any other role it is ignored, logged and counted.
A claim above this primary's epoch starts a *survey*: every configured peer ledger is asked for its
`/readyz` (bounded by `peer_check_timeout_s`). The only evidence is a peer's own announcement:
role `primary`, not fenced, epoch above ours (with its head, recorded in the log). With it, this
primary fences itself durably (`Failover.fence` in core_ledger/failover.py); without it, nothing is stored.

One survey runs at a time: a claim arriving while one is in flight waits for that one. A result is
remembered for `epoch_claim_recheck_s`: claims above what it proved are refuted from memory, so a
caller sending claims in a loop costs the peers at most one survey per window, and only its own
requests wait (never other callers' writes). Claims above our epoch and ignored ones are counted;
unverified and ignored ones are logged at most once a minute per credential. The periodic peer check
(`peer_check_interval_s`) is the same survey, so a promotion is learned within interval + timeout
even if nobody claims it.

`unfence` is the operator's way back: it surveys the peers again, refuses while one of them proves
a higher epoch as primary (unless forced), and journals an `unfence` entry (reason, force, the fence
it lifts, what every peer announced) before the store's fence is cleared.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import structlog

from shared.auth import Principal
from shared.client_reads import read_capped
from shared.contract import headers
from shared.errors import BadRequest, Conflict

from core_ledger.domain import Command
from core_ledger.failover import EPOCH_HEADER
from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.writer import Result

log = structlog.get_logger("croupier.ledger.fencing")

EPOCH_CLAIM_ROLES = frozenset({"edge", "replica"})  # the only credentials whose X-Ledger-Epoch is heard


def claimed_epoch(raw: str | None) -> int | None:
    """A caller's `X-Ledger-Epoch` header as the epoch it claims (None without the header)."""
    if raw is None:
        return None
    epoch = headers.epoch_of(raw)
    if epoch is None:
        raise BadRequest(f"{EPOCH_HEADER}: a non-negative integer is required", field=EPOCH_HEADER)
    return epoch


PEER_ANSWER_BYTES_MAX = 4096  # a /readyz body is ~150 bytes
CLAIM_LOG_INTERVAL_S = 60.0  # an ignored or unverified claim is logged at most once a minute per credential
CLAIM_LOG_KEYS_MAX = 1024  # credentials remembered for that throttle


@dataclass(frozen=True)
class PeerView:
    """What one configured peer announced about itself (`readable` False: it could not be read)."""

    url: str
    readable: bool
    role: str | None = None
    epoch: int | None = None
    fenced: bool | None = None
    head_sequence: int | None = None
    head_hash: str | None = None
    error: str | None = None
    promoting: bool = False  # a standby being promoted right now (its own promote request is under way)
    instance: str | None = None  # the announcing process's own random id (this copy, listed as its own peer)

    def proves_primary_above(self, epoch: int) -> bool:
        """Evidence that a primary of an epoch above `epoch` exists: the peer says so of itself."""
        return (
            self.readable
            and self.role == "primary"
            and self.fenced is False
            and self.epoch is not None
            and self.epoch > epoch
        )

    def record(self) -> dict[str, Any]:
        """The JSON form kept in logs and in the journaled unfence."""
        if not self.readable:
            return {"url": self.url, "readable": False, "error": self.error}
        return {
            "url": self.url,
            "readable": True,
            "role": self.role,
            "epoch": self.epoch,
            "fenced": self.fenced,
            "head_sequence": self.head_sequence,
            "head_hash": self.head_hash,
            "promoting": self.promoting,
        }


@dataclass(frozen=True)
class Survey:
    at: float  # loop time it finished
    views: tuple[PeerView, ...]

    def highest_primary_epoch(self) -> int:
        """The highest epoch a readable, unfenced peer primary announced (0: none)."""
        return max((v.epoch or 0 for v in self.views if v.proves_primary_above(0)), default=0)

    @property
    def any_readable(self) -> bool:
        return any(v.readable for v in self.views)

    def highest_epoch(self) -> int:
        """The highest epoch any readable peer announced, whatever its role (0: none)."""
        return max((v.epoch or 0 for v in self.views if v.readable), default=0)

    def objection_to_promotion(self, epoch: int, held: int, acked: int) -> Conflict | None:
        """Why a standby of `epoch` holding entries up to `held`, whose primary said it acknowledged
        up to `acked`, must not be promoted (None: nothing objects; a peer it cannot read objects
        to nothing): `standby_behind` while it holds less than was acknowledged, or another standby
        holds more (it may hold entries only it confirmed); `peer_is_primary` while a primary still
        takes writes (two primaries); `peer_promoting` while another standby is being promoted
        (two promotions whose surveys cross would both take the same epoch: two primaries that
        never fence each other)."""
        if acked > held:
            return Conflict(
                f"this copy holds entries up to {held} but its primary acknowledged up to {acked}: promoting "
                "it would lose acknowledged money; let it catch up, restart the old primary, or "
                "promote with force=true knowingly",
                code="standby_behind",
            )
        alive = [v.record() for v in self.views if v.proves_primary_above(epoch - 1)]
        if alive:
            return Conflict(
                "a peer ledger is primary, unfenced, at this copy's epoch or above: stop it (or cut it "
                "off) first, or promote with force=true knowingly",
                code="peer_is_primary",
                peers=alive,
            )
        promoting = [v.record() for v in self.views if v.readable and v.promoting]
        if promoting:
            return Conflict(
                "a peer standby is being promoted right now: let that promotion end, then promote one "
                "of them knowingly (or promote with force=true)",
                code="peer_promoting",
                peers=promoting,
            )
        longer = [
            v.record()
            for v in self.views
            if v.readable and v.role == "standby" and (v.epoch or 0) >= epoch and (v.head_sequence or 0) > held
        ]
        if longer:
            return Conflict(
                f"a peer standby holds more than this copy's {held} entries (maybe entries only it "
                "confirmed): promote that one, or promote this one with force=true knowingly",
                code="standby_behind",
                peers=longer,
            )
        return None


async def read_peer(http: aiohttp.ClientSession, url: str) -> PeerView:
    """A peer's own announcement, from its public `/readyz` (which answers 503 when fenced or not
    ready, with the same body): role, epoch, fenced, head. The header must agree with the body."""
    try:
        async with http.get(url + "/readyz") as resp:
            body = orjson.loads(await read_capped(resp, PEER_ANSWER_BYTES_MAX))
            header = headers.epoch_of(resp.headers[EPOCH_HEADER])  # at most 18 digits, as every epoch
        epoch, role, fenced = body["epoch"], body["role"], body["fenced"]
        if not (isinstance(epoch, int) and isinstance(role, str) and isinstance(fenced, bool)) or epoch != header:
            raise ValueError("the announcement is inconsistent, or its epoch is not one")
        sequence, head_hash = body.get("head_sequence"), body.get("head_hash")
        return PeerView(
            url,
            True,
            role,
            epoch,
            fenced,
            sequence if isinstance(sequence, int) else None,
            head_hash if isinstance(head_hash, str) else None,
            promoting=body.get("promoting") is True,
            instance=instance if isinstance(instance := body.get("instance"), str) else None,
        )
    except (aiohttp.ClientError, TimeoutError, KeyError, ValueError, TypeError) as e:
        log.warning("peer_ledger_unreadable", peer=url, error=type(e).__name__)
        return PeerView(url, False, error=type(e).__name__)


@dataclass
class _Throttle:
    """At most one log line per key and interval (the counter counts every event)."""

    interval_s: float
    last: dict[str, float] = field(default_factory=dict)

    def allow(self, key: str, now: float) -> bool:
        if now - self.last.get(key, -self.interval_s) < self.interval_s:
            return False
        if key not in self.last and len(self.last) >= CLAIM_LOG_KEYS_MAX:
            self.last.clear()
        self.last[key] = now
        return True


class Fencing:
    """Claims, surveys of the peers, the periodic peer check, and unfencing, for one ledger."""

    def __init__(
        self,
        service: LedgerService,
        metrics: LedgerMetrics,
        *,
        peers: tuple[str, ...],
        timeout_s: float,
        interval_s: float,
        recheck_s: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.peers = peers
        self.timeout_s = timeout_s
        self.interval_s = interval_s
        self.recheck_s = recheck_s
        self.tls = tls  # verifies https:// peers (None: aiohttp's default verification)
        self.last: Survey | None = None
        # Announced in /readyz: a peer answering with it is this very process (a peers list shared
        # by every copy names each copy too), which is not a peer of itself.
        self.instance = secrets.token_hex(8)
        self._inflight: asyncio.Task[Survey] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._ignored_log = _Throttle(CLAIM_LOG_INTERVAL_S)
        self._unverified_log = _Throttle(CLAIM_LOG_INTERVAL_S)

    # --- claims -----------------------------------------------------------------------------

    def claim(self, epoch: int, who: Principal) -> Awaitable[None] | None:
        """`who` presented `X-Ledger-Epoch: epoch`: None when there is nothing to judge (the usual
        case, decided here and now), else the judging to await, done at most one survey (bounded by
        the peer timeout) later. Fences only on a peer's proof."""
        service = self.service
        if who.role not in EPOCH_CLAIM_ROLES:
            self.metrics.epoch_claims_total.labels("role_not_allowed").inc()
            if self._ignored_log.allow(who.name, time.monotonic()):
                log.warning(
                    "epoch_claim_ignored",
                    principal=who.name,
                    role=who.role,
                    claimed_epoch=epoch,
                    reason="role_not_allowed",
                )
            return None
        if service.role != "primary" or epoch <= max(service.epoch, service.fenced_by):
            return None  # nothing to learn: the usual case (an edge echoes our own epoch)
        return self._judge(epoch, who)

    async def _judge(self, epoch: int, who: Principal) -> None:
        """A claim above this primary's epoch: proven (and fenced) only by a peer's survey."""
        if not self.peers:
            self._judged(epoch, who, "unverifiable", None)
            return
        survey = self.last
        loop = asyncio.get_running_loop()
        if self._inflight is None and survey is not None and loop.time() - survey.at < self.recheck_s:
            self._judged(epoch, who, "refuted" if survey.any_readable else "unverifiable", survey, remembered=True)
            return
        survey = await self.survey()
        if survey.highest_primary_epoch() >= epoch:
            outcome = "proven"
        else:
            outcome = "refuted" if survey.any_readable else "unverifiable"
        self._judged(epoch, who, outcome, survey)

    def _judged(
        self, epoch: int, who: Principal, outcome: str, survey: Survey | None, *, remembered: bool = False
    ) -> None:
        self.metrics.epoch_claims_total.labels(outcome).inc()
        fields = {
            "principal": who.name,
            "role": who.role,
            "claimed_epoch": epoch,
            "own_epoch": self.service.epoch,
            "outcome": outcome,
            "fenced_by_epoch": self.service.fenced_by or None,
        }
        if outcome == "proven":
            log.warning("epoch_claim_proven", **fields)
        elif self._unverified_log.allow(f"{who.name}:{outcome}", time.monotonic()):  # the counter counts each
            log.warning(
                "epoch_claim_unverified",
                **fields,
                refuted_from_memory=remembered,
                peers=[v.record() for v in survey.views] if survey is not None else [],
            )

    # --- surveys ----------------------------------------------------------------------------

    async def survey(self, *, fresh: bool = False) -> Survey:
        """Ask every peer (one survey at a time: a caller arriving meanwhile shares it) and fence on
        proof. Never raises: an unexpected failure is logged, counted, and reads as no proof.
        `fresh`: every peer read starts after this call (a survey already under way is waited for,
        then another is made): a promotion must see what peers announced once it announced itself."""
        stale = self._inflight if fresh else None
        if stale is not None:
            await asyncio.shield(stale)  # a survey started after this call is fresh enough to share
            if self._inflight is stale:
                self._inflight = None
        if self._inflight is None:
            self._inflight = asyncio.create_task(self._survey(), name="ledger-peer-survey")
            self._inflight.add_done_callback(self._survey_done)
        return await asyncio.shield(self._inflight)

    def _survey_done(self, task: asyncio.Task[Survey]) -> None:
        if self._inflight is task:
            self._inflight = None

    async def _survey(self) -> Survey:
        views: tuple[PeerView, ...] = ()
        try:
            timeout = aiohttp.ClientTimeout(total=self.timeout_s)
            connector = aiohttp.TCPConnector(ssl=self.tls if self.tls is not None else True)
            async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
                read = await asyncio.gather(*(read_peer(http, url) for url in self.peers))
            views = tuple(v for v in read if v.instance != self.instance)  # not this very process
            self.metrics.peers_unreadable.set(sum(not v.readable for v in views))
            proven = Survey(0.0, views).highest_primary_epoch()
            if proven:
                evidence = {"peers": [v.record() for v in views if v.proves_primary_above(self.service.epoch)]}
                await self.service.fence(proven, evidence)
            self._note_twins(views)  # after the fence: a copy this survey fenced has no twin
        except Exception as e:  # noqa: BLE001 -- the periodic check must outlive any failure (logged, counted)
            # e.g. the store could not record the fence: it holds in memory, the next check stores it
            log.error("peer_check_failed", error=repr(e))
            self.metrics.peer_check_failures_total.inc()
        self.last = Survey(asyncio.get_running_loop().time(), views)
        return self.last

    def _note_twins(self, views: tuple[PeerView, ...]) -> None:
        """Peers primary, unfenced, at this primary's own epoch: a fence proves only an epoch above
        one's own, so neither copy stops. Counted and logged for an operator to choose one."""
        service = self.service
        own = service.epoch
        twins = (
            [v for v in views if v.proves_primary_above(own - 1) and v.epoch == own]
            if service.role == "primary" and not service.fenced
            else []
        )
        self.metrics.peers_primary_at_own_epoch.set(len(twins))
        if twins:
            log.critical(
                "ledger_peer_primary_at_own_epoch",
                own_epoch=own,
                head_sequence=service.head.sequence,
                head_hash=service.head.hash,
                peers=[v.record() for v in twins],
            )

    # --- the periodic peer check ------------------------------------------------------------

    async def start(self) -> None:
        """Before the first request: a primary that lost a failover never takes a write. Then the
        periodic check, every `peer_check_interval_s`."""
        if not self.peers:
            return
        await self.survey()
        self._watch = asyncio.create_task(self._watch_peers(), name="ledger-peer-check")

    async def stop(self) -> None:
        for task in (self._watch, self._inflight):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._watch = self._inflight = None

    async def _watch_peers(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.survey()  # never raises

    # --- unfencing --------------------------------------------------------------------------

    async def unfence(self, reason: str, force: bool, who: Principal) -> Result:
        """Lift this primary's fence: journaled with the operator's reason, the fence it lifts and what
        the peers announce right now. Refused (409 `peer_is_primary`) while a peer proves a higher
        epoch as primary, and (409 `peer_unreadable`) while a peer cannot be read, unless `force`;
        409 `not_fenced` when there is nothing to lift."""
        service = self.service
        if service.role != "primary" or not service.fenced:
            raise Conflict("this ledger is not fenced", code="not_fenced")
        survey = await self.survey() if self.peers else Survey(asyncio.get_running_loop().time(), ())
        lifted = service.fenced_by  # read after the survey: it may have raised the fence
        newer = [v.record() for v in survey.views if v.proves_primary_above(service.epoch)]
        if newer and not force:
            raise Conflict(
                f"a peer ledger is primary at a higher epoch than this one ({service.epoch}): "
                "stop this copy, or force the unfence if that peer is known to be wrong",
                code="peer_is_primary",
                peers=newer,
            )
        unread = [v.record() for v in survey.views if not v.readable]
        if unread and not force:  # the primary that fenced this copy may be one of them, cut off from it
            raise Conflict(
                "a peer ledger could not be read: it may be the primary whose promotion fenced this copy; "
                "check it by hand, then force the unfence if it is not",
                code="peer_unreadable",
                peers=unread,
            )
        request = {
            "reason": reason,
            "force": force,
            "fenced_by_epoch": lifted,
            "peers": [v.record() for v in survey.views],
        }
        result = await service.unfence(Command("unfence", request, who.name, None), lifted)
        if not isinstance(result, Exception):
            self.metrics.unfences_total.labels("true" if force else "false").inc()
        return result
