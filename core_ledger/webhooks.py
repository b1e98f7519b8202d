"""Webhook delivery of the event stream: per named consumer with a `webhook_url`, push instead of poll.

For each such consumer a supervised loop (`TaskHealth` "webhooks") POSTs the acknowledged events
after its cursor, a page at a time, as `{"consumer", "events": [...]}`, signed:
`X-Croupier-Timestamp` (Unix seconds) and `X-Croupier-Signature: sha256=<hex>`, the HMAC-SHA256
with the consumer's secret of `<timestamp>.<body>`; a receiver recomputes it and refuses old
timestamps (replays). A 2xx answer acknowledges the page (the cursor moves past it). Anything else
(an error status, a refused connection, a timeout) is retried after an exponential backoff with
full jitter (`webhook_backoff_base_s` doubling up to `webhook_backoff_max_s`); after
`webhook_attempts_max` attempts the page goes to the consumer's dead-letter list and the cursor
moves on, so one poisoned page does not stop the stream. An operator replays a dead letter with
`POST /admin/v1/consumers/{name}/dead-letters/{letter_id}/replay`. Delivery is at least once: the
event `sequence` is the receiver's dedup key.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import structlog
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.errors import NotFound
from shared.tasks import OwnedTask

from core_ledger.consumers import Consumers, webhook_host
from core_ledger.events import read_events
from core_ledger.metrics import LedgerMetrics
from core_ledger.task_health import TaskHealth

log = structlog.get_logger("croupier.ledger.webhooks")

TIMESTAMP_HEADER = "X-Croupier-Timestamp"
SIGNATURE_HEADER = "X-Croupier-Signature"
CONSUMER_HEADER = "X-Croupier-Consumer"
DELIVERY_OUTCOMES = ("delivered", "failed", "dead_lettered", "replayed")
DEAD_LETTERS_MAX = 100  # per consumer; the oldest goes first beyond (logged)
PASS_INTERVAL_S = 0.2  # between delivery passes (a pass does nothing for consumers not yet due)
PAGE_EVENTS = 100


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Croupier-Signature` value of a body sent at `timestamp`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def backoff_s(attempts: int, base_s: float, max_s: float, rand: Callable[[], float] = random.random) -> float:
    """Full jitter: uniform in [0, min(max, base * 2^(attempts-1))]."""
    return rand() * min(max_s, base_s * 2 ** min(attempts - 1, 30))


@dataclass(frozen=True)
class WebhookSettings:
    hosts: tuple[str, ...] = ()  # `ledger.webhook_hosts`: checked again at every delivery
    timeout_s: float = 5.0
    attempts_max: int = 8
    backoff_base_s: float = 1.0
    backoff_max_s: float = 300.0


RECEIVER_ANSWER_BYTES_MAX = 4096  # of a receiver's answer body, read at most


@dataclass
class _Retry:
    attempts: int = 0
    next_at: float = 0.0
    last_error: str = ""


@dataclass
class Webhooks:
    consumers: Consumers
    settings: WebhookSettings
    metrics: LedgerMetrics
    registry: CollectorRegistry
    tls: ssl.SSLContext | None = None
    retries: dict[str, _Retry] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.deliveries_total = Counter(
            "ledger_webhook_deliveries_total",
            "Webhook page deliveries by outcome (delivered, failed: will be retried, dead_lettered, replayed).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in DELIVERY_OUTCOMES:
            self.deliveries_total.labels(outcome)
        self.registry.register(_DeadLetterCollector(self.consumers))
        self.health = TaskHealth("webhooks", self.metrics, base_delay_s=1.0, max_delay_s=30.0)
        self._task = OwnedTask("ledger-webhooks")
        self._http: aiohttp.ClientSession | None = None

    def start(self) -> None:
        self._task.start(self.health.repeat(self.deliver_due, PASS_INTERVAL_S, event="webhooks_failed"))

    async def stop(self) -> None:
        await self._task.stop()
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            connector = aiohttp.TCPConnector(ssl=self.tls if self.tls is not None else True)
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s), connector=connector
            )
        return self._http

    async def post(self, name: str, doc: dict[str, Any], events: list[dict[str, Any]]) -> str | None:
        """POST one signed page; None on a 2xx, else why it failed."""
        body = orjson.dumps({"consumer": name, "events": events})
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: stamp,
            CONSUMER_HEADER: name,
            SIGNATURE_HEADER: signature(doc["webhook_secret"], stamp, body),
        }
        if not self.allowed(doc["webhook_url"]):  # de-listed since it was set: nothing goes there
            return "its host is no longer one of ledger.webhook_hosts"
        try:
            # No redirect is followed: its target is a host nobody listed (a signed page to an
            # internal address, whose 2xx would acknowledge it). A 3xx is a failed delivery.
            async with self._session().post(
                doc["webhook_url"], data=body, headers=headers, allow_redirects=False
            ) as resp:
                await resp.content.read(RECEIVER_ANSWER_BYTES_MAX)  # the rest is never read: the status decides
                return None if 200 <= resp.status < 300 else f"status {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            return f"{type(e).__name__}: {e}"

    def allowed(self, url: str) -> bool:
        """Whether `url`'s host is one of `ledger.webhook_hosts` now."""
        return webhook_host(url) in self.settings.hosts

    async def deliver_due(self) -> None:
        """One pass: one page for each webhook consumer that is due and has events waiting."""
        now = time.monotonic()
        for name in list(self.consumers.known):
            # The cursor and the count of its resets, read together now (earlier consumers' posts
            # took time): a page read from a cursor reset since would undo that reset.
            known, resets = self.consumers.known.get(name), self.consumers.resets.get(name, 0)
            if known is None:
                continue  # deleted meanwhile
            doc, cursor = known
            if not doc.get("webhook_url") or not doc.get("webhook_secret"):
                continue
            retry = self.retries.setdefault(name, _Retry())
            if now < retry.next_at:
                continue
            page = await read_events(self.consumers.service, cursor, PAGE_EVENTS, wait_s=0, include_rejected=False)
            if page.next_after <= cursor:
                continue
            error = await self.post(name, doc, page.events) if page.events else None
            if error is None:
                self.retries.pop(name, None)
                await self.consumers.delivered(name, page.next_after, resets)
                if page.events:
                    self.deliveries_total.labels("delivered").inc()
                continue
            retry.attempts += 1
            retry.last_error = error
            if retry.attempts < self.settings.attempts_max:
                delay = backoff_s(retry.attempts, self.settings.backoff_base_s, self.settings.backoff_max_s)
                retry.next_at = now + delay
                self.deliveries_total.labels("failed").inc()
                log.warning(
                    "webhook_delivery_failed",
                    consumer=name,
                    error=error,
                    attempts=retry.attempts,
                    first_sequence=page.events[0]["sequence"],
                    last_sequence=page.next_after,
                    retry_in_s=round(delay, 3),
                )
                continue
            await self._dead_letter(name, page.events[0]["sequence"], page.next_after, retry, resets)
            self.retries.pop(name, None)

    async def _dead_letter(self, name: str, first: int, last: int, retry: _Retry, resets: int) -> None:
        letter_id = f"{first}-{last}"
        letter = {
            "letter_id": letter_id,
            "after": first - 1,
            "through": last,
            "attempts": retry.attempts,
            "last_error": retry.last_error[:500],
            "at": int(time.time()),
        }
        dropped: list[dict[str, Any]] = []

        def add(doc: dict[str, Any]) -> dict[str, Any]:
            letters = [*doc.get("dead_letters", []), letter]
            dropped[:] = letters[:-DEAD_LETTERS_MAX]
            return {**doc, "dead_letters": letters[-DEAD_LETTERS_MAX:]}

        if not await self.consumers.change(name, add):
            return  # deleted meanwhile: nothing to keep, nothing to acknowledge
        await self.consumers.delivered(name, last, resets)  # kept as a letter: the cursor moves past it
        self.deliveries_total.labels("dead_lettered").inc()
        log.error(
            "webhook_dead_lettered",
            consumer=name,
            letter_id=letter_id,
            attempts=retry.attempts,
            error=retry.last_error,
            dropped_oldest=[d["letter_id"] for d in dropped],
        )

    async def replay(self, name: str, letter_id: str) -> dict[str, Any]:
        """Deliver a dead letter's events again, now; it leaves the list once the receiver took them."""
        await self.consumers.refresh()
        if name not in self.consumers.known:
            raise NotFound(f"no event consumer {name!r}", field="name")
        doc, _ = self.consumers.known[name]
        letter = next((d for d in doc.get("dead_letters", []) if d["letter_id"] == letter_id), None)
        if letter is None or not doc.get("webhook_url"):
            raise NotFound(f"no dead letter {letter_id!r} of consumer {name!r}", field="letter_id")
        events: list[dict[str, Any]] = []
        after = letter["after"]
        while after < letter["through"]:
            page = await read_events(
                self.consumers.service,
                after,
                PAGE_EVENTS,
                wait_s=0,
                include_rejected=False,
                through=letter["through"],
            )
            events += page.events
            if page.next_after <= after:
                break
            after = page.next_after
        error = await self.post(name, doc, events)
        if error is not None:
            log.warning("webhook_replay_failed", consumer=name, letter_id=letter_id, error=error)
            return {"name": name, "letter_id": letter_id, "delivered": False, "error": error}

        def without(current: dict[str, Any]) -> dict[str, Any]:  # as stored now, not the copy read before the post
            letters = [d for d in current.get("dead_letters", []) if d["letter_id"] != letter_id]
            return {**current, "dead_letters": letters}

        await self.consumers.change(name, without)
        self.deliveries_total.labels("replayed").inc()
        log.info("webhook_replayed", consumer=name, letter_id=letter_id, events=len(events))
        return {"name": name, "letter_id": letter_id, "delivered": True, "events": len(events)}


class _DeadLetterCollector(Collector):
    def __init__(self, consumers: Consumers) -> None:
        self.consumers = consumers

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "ledger_webhook_dead_letters",
            "Dead-lettered webhook pages of a named consumer waiting for an operator's replay.",
            labels=["consumer"],
        )
        for name, (doc, _) in sorted(self.consumers.known.items()):  # 0 for a consumer without a webhook
            family.add_metric([name], len(doc.get("dead_letters", [])))
        yield family
