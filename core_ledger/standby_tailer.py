"""The standby tailer: tail the primary's journal (`GET /v1/journal`) and hand each page to the
replica apply (core_ledger/replica_apply.py: verify the chain, apply it with the same `evolve`);
refuse writes (503 `not_primary`), and export the replication lag.

Each poll asks for what follows the local committed head and proves it with the head's hash
(`after_hash`), which tells the primary (a synchronous one waits for it) that everything up to
there is durably applied here; polls are long polls (`wait_ms`), so a new commit reaches the standby
at once, not at the next tick. A primary that does not hold that hash at that sequence answers 409
`replica_diverged`: this copy's tail is not the primary's, and the tailer stops for good (an
operator rebuilds the copy from the primary); so does a page whose chain does not verify."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp
import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge

from shared.contract import headers
from shared.credentials import FileSecret
from shared.tasks import OwnedTask

from core_ledger.failover import EPOCH_HEADER
from core_ledger.replica_apply import ReplicationError
from core_ledger.service import LedgerService
from core_ledger.task_health import TaskHealth

log = structlog.get_logger("croupier.standby")

HEAD_HEADER = headers.JOURNAL_HEAD  # the primary's head sequence, sent with every journal page
# What the primary has acknowledged to clients (a synchronous primary: what some standby confirmed;
# otherwise its whole committed head): a standby holding less must not be promoted (acknowledged
# money would be lost), e.g. a copy rebuilt from nothing that has not caught up yet.
ACKED_HEADER = headers.JOURNAL_ACKNOWLEDGED
HALT_REASONS = ("chain", "diverged")  # why a tailer stopped for good (ledger_replica_halted)


@dataclass(frozen=True)
class StandbySettings:
    primary_url: str
    replica_token: str = field(repr=False)  # a secret: never in reprs or logs
    page_limit: int = 1000
    poll_interval_s: float = 0.2  # when caught up and not long polling
    long_poll_ms: int = 1000  # the primary holds an empty poll this long for new entries (0: no long poll)
    request_timeout_s: float = 10.0
    backoff_max_s: float = 5.0  # between failed polls, doubling from poll_interval_s
    # The replica token file, re-read on a credential reload (shared/credentials.py); None: replica_token is fixed.
    replica_token_file: FileSecret | None = field(default=None, repr=False)
    tls: ssl.SSLContext | None = field(default=None, repr=False)  # verifies an https:// primary

    def token(self) -> str:
        """The replica token to present now."""
        return self.replica_token_file.value if self.replica_token_file is not None else self.replica_token


class StandbyMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.lag_sequences = Gauge(
            "ledger_replica_lag_sequences",
            "Journal entries the primary has that this standby has not applied.",
            registry=registry,
        )
        self.lag_seconds = Gauge(
            "ledger_replica_lag_seconds",
            "Age of the primary's oldest entry not yet applied here (0 when caught up).",
            registry=registry,
        )
        self.errors_total = Counter(
            "ledger_replica_errors_total", "Failed journal polls or applies.", ["reason"], registry=registry
        )
        self.halted = Gauge(
            "ledger_replica_halted",
            "1 once the tailer stopped for good: chain (a page did not verify) or diverged "
            "(the primary does not hold this copy's head).",
            ["reason"],
            registry=registry,
        )
        for reason in HALT_REASONS:
            self.halted.labels(reason).set(0)


class StandbyDiverged(Exception):
    """The primary refused this standby's position: its entry there has another hash (or none)."""

    def __init__(self, sequence: int, detail: str) -> None:
        super().__init__(detail)
        self.sequence = sequence


class StandbyTailer:
    """The tailer task: the only mutator of a standby's store."""

    def __init__(
        self, service: LedgerService, settings: StandbySettings, metrics: StandbyMetrics, clock: Callable[[], datetime]
    ) -> None:
        self.service = service
        self.settings = settings
        self.metrics = metrics
        self._clock = clock
        self.primary_head = 0
        self.primary_acked = 0  # the most the primary said it acknowledged (only grows)
        self.primary_epoch: int | None = None
        self.broken_at: int | None = None  # first sequence that failed verification
        self.diverged_at: int | None = None  # the position the primary refused as not on its chain
        self._task = OwnedTask("ledger-standby")
        self._applying: asyncio.Future[None] | None = None  # the apply under way, never cut in half
        # Held by a promote request from stopping the tailer to its answer: a second request waits,
        # so none restarts the tailer while another promotes (it applied pages after the promotion).
        self.promotion = asyncio.Lock()
        self.health = TaskHealth(
            "standby", service.metrics, base_delay_s=settings.poll_interval_s, max_delay_s=settings.backoff_max_s
        )

    @property
    def running(self) -> bool:
        return self._task.running

    @property
    def state(self) -> str:
        """tailing, or why not: diverged, chain_broken (stopped for good), failing (retrying) or stopped."""
        if self.diverged_at is not None:
            return "diverged"
        if self.broken_at is not None:
            return "chain_broken"
        if not self.running:
            return "stopped"
        return "failing" if self.health.failing else "tailing"

    def start(self) -> None:
        self._task.start(self._run())

    async def stop(self) -> None:
        """Stop tailing. A poll is cancelled, but an apply under way is let finish: when this
        returns the store and the service's head agree (promotion builds on both)."""
        await self._task.stop()
        applying, self._applying = self._applying, None
        if applying is not None:
            await asyncio.gather(applying, return_exceptions=True)  # its failure was seen by the tailer

    async def _run(self) -> None:
        """Poll and apply until stopped. A failure (the primary unreachable, a storage error while
        applying, a bug) is logged, counted and retried with backoff; only a broken chain or a
        diverged copy stops the tailer, on purpose and loudly."""
        s = self.settings
        connector = aiohttp.TCPConnector(ssl=s.tls if s.tls is not None else True)
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=s.request_timeout_s), connector=connector
        ) as session:
            while True:
                try:
                    applied = await self.poll_once(session)
                except ReplicationError as e:
                    self.broken_at = e.first_bad_sequence
                    self.metrics.errors_total.labels("chain").inc()
                    self.metrics.halted.labels("chain").set(1)
                    log.error("standby_chain_broken", first_bad_sequence=e.first_bad_sequence)
                    return  # never apply past a broken link: an operator must look
                except StandbyDiverged as e:
                    self.diverged_at = e.sequence
                    self.metrics.errors_total.labels("diverged").inc()
                    self.metrics.halted.labels("diverged").set(1)
                    log.error("standby_diverged", sequence=e.sequence, primary=s.primary_url, detail=str(e))
                    return  # its tail is not the primary's: rebuild this copy from the primary
                except (TimeoutError, aiohttp.ClientError, ValueError) as e:
                    self.metrics.errors_total.labels("poll").inc()
                    delay = self.health.failed()
                    log.warning(
                        "standby_poll_failed",
                        error=repr(e),
                        failures=self.health.consecutive_failures,
                        retry_in_s=delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                # A storage failure while applying, or a bug: counted and retried, never a silent death.
                except Exception as e:  # noqa: BLE001
                    self.metrics.errors_total.labels("apply").inc()
                    delay = self.health.failed()
                    log.error(
                        "standby_apply_failed",
                        error=repr(e),
                        failures=self.health.consecutive_failures,
                        retry_in_s=delay,
                    )
                    await asyncio.sleep(delay)
                    continue
                self.health.succeeded()
                if not applied and not s.long_poll_ms:  # a long poll has waited already
                    await asyncio.sleep(s.poll_interval_s)

    async def poll_once(self, session: aiohttp.ClientSession) -> int:
        """Fetch and apply one page after the local head; the number of entries applied."""
        head = self.service.head
        after = head.sequence
        s = self.settings
        url = (
            f"{s.primary_url}/v1/journal?after_sequence={after}&after_hash={head.hash}"
            f"&limit={s.page_limit}&wait_ms={s.long_poll_ms}"
        )
        async with session.get(url, headers={"Authorization": f"Bearer {self.settings.token()}"}) as resp:
            if resp.status == 409 and resp.content_type == "application/problem+json":
                problem = await resp.json(content_type=None)
                if problem.get("code") == "replica_diverged":
                    raise StandbyDiverged(after, str(problem.get("detail", "")))
            if resp.status != 200:
                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
            primary_head = _sequence_header(resp.headers, HEAD_HEADER)
            acked = _sequence_header(resp.headers, ACKED_HEADER)
            if acked > primary_head:
                raise ValueError(f"{ACKED_HEADER} {acked} is beyond {HEAD_HEADER} {primary_head}")
            self.primary_head = primary_head
            self.primary_acked = max(self.primary_acked, acked)
            self.primary_epoch = _sequence_header(resp.headers, EPOCH_HEADER) or None
            text = await resp.text()
        if self.primary_epoch is not None:
            await self.service.heard_of_epoch(self.primary_epoch)
        rows = [(after + i + 1, line) for i, line in enumerate(journal_lines(text))]
        if len(rows) > s.page_limit:
            raise ValueError(f"a journal page of {len(rows)} entries, over the {s.page_limit} asked for")
        if rows:
            # Shielded: cancelling the tailer (stop) does not cut the apply; stop waits for it.
            self._applying = applying = asyncio.ensure_future(self.service.apply_replicated(rows))
            try:
                await asyncio.shield(applying)
            finally:
                if applying.done():
                    self._applying = None
        self._observe_lag(rows)
        return len(rows)

    def _observe_lag(self, rows: list[tuple[int, str]]) -> None:
        behind = max(0, self.primary_head - self.service.head.sequence)
        self.metrics.lag_sequences.set(behind)
        if behind == 0:
            self.metrics.lag_seconds.set(0)
        elif rows:
            # The next entry we lack was committed no earlier than the last one we applied.
            at = orjson.loads(rows[-1][1])["transaction"]["committed_at"]
            age = self._clock().timestamp() - datetime.fromisoformat(at).timestamp()
            self.metrics.lag_seconds.set(max(0.0, age))


def journal_lines(page: str) -> list[str]:
    """The entries of a journal page: one per line, each line ended by "\n". Only "\n" ends one:
    `str.splitlines` also splits at U+2028, U+2029 and U+0085, which the JSON of an entry may hold
    unescaped inside a string (a bet's metadata), and cut that entry in pieces."""
    lines = page.split("\n")
    if lines[-1] != "":
        raise ValueError("a journal page does not end with a whole line")
    return lines[:-1]


def _sequence_header(answer_headers: Mapping[str, str], name: str) -> int:
    """A sequence or epoch header of the primary's answer (0 when absent): ASCII digits, at most
    18 of them (a larger one would overflow the store's integers once kept), else ValueError."""
    raw = answer_headers.get(name)
    if raw is None:
        return 0
    value = headers.epoch_of(raw)
    if value is None:
        raise ValueError(f"{name}: {raw[:40]!r} is not a non-negative integer of at most 18 digits")
    return value
