"""Named consumers of the event stream: durable cursors, acknowledgements and lag.

An operator creates a consumer (`PUT /admin/v1/consumers/{name}`); the consumer reads
`GET /v1/events?consumer=NAME` (from its cursor) and acknowledges what it has durably processed
(`PUT /v1/consumers/{name}/cursor`). The cursor only moves forward, so a late or repeated ack
changes nothing: delivery is at least once and the sequence is the dedup key. Cursors live in the
store's `event_consumers` table of this copy (not journaled: see
docs/decisions/event-stream-from-the-journal.md).

`ledger_event_consumer_lag_entries{consumer}` (acknowledged head minus cursor) is computed when
scraped from an in-memory copy of the table, refreshed from the store every
`REFRESH_S` (a supervised task: `TaskHealth` "event_consumers") and by every change made here.
Its cardinality is bounded by `event_consumers_max`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.errors import BadRequest, Conflict, Forbidden, NotFound
from shared.tasks import OwnedTask

from core_ledger.metrics import LedgerMetrics
from core_ledger.service import LedgerService
from core_ledger.task_health import TaskHealth

log = structlog.get_logger("croupier.ledger.events")

REFRESH_S = 15.0


class ConsumerLimitReached(Conflict):
    code = "consumer_limit_reached"


def webhook_host(url: str) -> str | None:
    """The host a webhook URL names, lowercased; None if it is no URL. Logs name this, never the
    URL: receivers often carry a token in its path, query or user part."""
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return None


class Consumers:
    def __init__(
        self, service: LedgerService, consumers_max: int, metrics: LedgerMetrics, registry: CollectorRegistry
    ) -> None:
        self.service = service
        self.consumers_max = consumers_max
        self.known: dict[str, tuple[dict[str, Any], int]] = {}  # settings and cursor, by name
        self.health = TaskHealth("event_consumers", metrics, base_delay_s=1.0, max_delay_s=REFRESH_S)
        self._task = OwnedTask("ledger-event-consumers")
        # Every change of a consumer's settings (admin PUT and DELETE, dead letters added and
        # replayed) reads what is stored and writes it back under this lock: a replay that waited
        # on its receiver wrote back a copy read before, undoing a secret rotated meanwhile,
        # dropping dead letters added meanwhile, or bringing back a consumer deleted meanwhile.
        self._changing = asyncio.Lock()
        # Cursor resets (`put` with `start_after`) by name: a webhook delivery read before a reset
        # acknowledges nothing after it (its ack would undo the reset, skipping the replay asked for).
        self.resets: dict[str, int] = {}
        registry.register(_LagCollector(self))

    def lag(self, cursor: int) -> int:
        return max(0, self.service.confirmed_sequence - cursor)

    def view(self, name: str, doc: dict[str, Any], cursor: int) -> dict[str, Any]:
        """What clients see of a consumer: never its webhook secret."""
        shown = {k: v for k, v in doc.items() if k != "webhook_secret"}
        if doc.get("webhook_url"):
            shown["webhook_secret_set"] = bool(doc.get("webhook_secret"))
        return {"name": name, **shown, "acked_sequence": cursor, "lag_entries": self.lag(cursor)}

    async def refresh(self) -> None:
        self.known = await self.service.store.consumers()

    async def put(
        self, name: str, fields: dict[str, Any], *, start_after: int | None, who: str
    ) -> tuple[bool, dict[str, Any]]:
        """Create or update a consumer (`fields` laid over its settings; a webhook_url of "" removes
        the webhook); `start_after` sets (or resets) its cursor. True: created."""
        async with self._changing:
            return await self._put(name, fields, start_after=start_after, who=who)

    async def _put(
        self, name: str, fields: dict[str, Any], *, start_after: int | None, who: str
    ) -> tuple[bool, dict[str, Any]]:
        await self.refresh()
        created = name not in self.known
        doc = {"description": "", **(self.known[name][0] if not created else {}), **fields}
        if doc.get("webhook_url") == "":
            doc = {k: v for k, v in doc.items() if k not in ("webhook_url", "webhook_secret")}
        if doc.get("owner") == "":
            del doc["owner"]
        if doc.get("webhook_url") and not doc.get("webhook_secret"):
            raise BadRequest(
                "webhook_secret: required with a webhook_url (it signs every delivery)", field="webhook_secret"
            )
        if created and len(self.known) >= self.consumers_max:
            raise ConsumerLimitReached(
                f"at most {self.consumers_max} event consumers (event_consumers_max); delete one nobody runs first"
            )
        if start_after is not None and start_after > self.service.confirmed_sequence:
            raise BadRequest(
                f"start_after: beyond the acknowledged head {self.service.confirmed_sequence}", field="start_after"
            )
        stored, cursor = await self.service.store.put_consumer(name, doc, cursor=start_after)
        self.known[name] = (stored, cursor)
        if start_after is not None:
            self.resets[name] = self.resets.get(name, 0) + 1
        log.info(
            "event_consumer_saved",
            consumer=name,
            created=created,
            acked_sequence=cursor,
            principal=who,
            webhook_host=webhook_host(stored["webhook_url"]) if stored.get("webhook_url") else None,
        )
        return created, self.view(name, stored, cursor)

    async def caller_ack(self, name: str, sequence: int, *, who: str) -> dict[str, Any]:
        """A consumer's own acknowledgement (`PUT /v1/consumers/{name}/cursor`). Refused (403) for a
        webhook consumer, whose cursor moves as its pages are delivered (an ack would skip them),
        and for any credential but the consumer's `owner` when it has one."""
        await self.refresh()
        doc = self.known.get(name, ({}, 0))[0]
        if doc.get("webhook_url"):
            raise Forbidden(f"{name!r} is a webhook consumer: its cursor moves as its pages are delivered")
        if doc.get("owner") and doc["owner"] != who:
            raise Forbidden(f"only the credential {doc['owner']!r} acknowledges for {name!r}")
        return await self.ack(name, sequence, who=who)

    async def delivered(self, name: str, sequence: int, resets_seen: int) -> None:
        """A webhook page read when the consumer's cursor had been reset `resets_seen` times was
        delivered through `sequence`: acknowledged unless the cursor was reset since."""
        async with self._changing:
            if self.resets.get(name, 0) != resets_seen:
                log.info("webhook_ack_dropped_after_reset", consumer=name, sequence=sequence)
                return
            await self.ack(name, sequence, who="webhook")

    async def ack(self, name: str, sequence: int, *, who: str) -> dict[str, Any]:
        acknowledged = self.service.confirmed_sequence
        if sequence > acknowledged:
            raise BadRequest(
                f"sequence: {sequence} is beyond the acknowledged head {acknowledged}: acknowledge "
                "only what GET /v1/events served",
                field="sequence",
            )
        cursor = await self.service.store.advance_consumer(name, sequence)
        if cursor is None:
            raise NotFound(f"no event consumer {name!r}", field="name")
        doc = self.known.get(name, ({}, 0))[0]
        self.known[name] = (doc, cursor)
        log.debug("event_consumer_acked", consumer=name, sequence=sequence, acked_sequence=cursor, principal=who)
        return {"name": name, "acked_sequence": cursor, "lag_entries": self.lag(cursor)}

    async def change(self, name: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> bool:
        """Change a consumer's settings as stored now (webhook dead letters), keeping its cursor;
        False when it no longer exists (nothing is written: it is not brought back)."""
        async with self._changing:
            await self.refresh()
            if name not in self.known:
                return False
            stored, cursor = await self.service.store.put_consumer(name, change(self.known[name][0]), cursor=None)
            self.known[name] = (stored, cursor)
            return True

    async def cursor_of(self, name: str) -> int:
        await self.refresh()
        if name not in self.known:
            raise NotFound(f"no event consumer {name!r}", field="consumer")
        return self.known[name][1]

    async def listing(self) -> list[dict[str, Any]]:
        await self.refresh()
        return [self.view(name, doc, cursor) for name, (doc, cursor) in self.known.items()]

    async def delete(self, name: str, *, who: str) -> None:
        async with self._changing:
            if not await self.service.store.delete_consumer(name):
                raise NotFound(f"no event consumer {name!r}", field="name")
            self.known.pop(name, None)
            self.resets[name] = self.resets.get(name, 0) + 1  # one made again under this name starts anew
        log.info("event_consumer_deleted", consumer=name, principal=who)

    def start(self) -> None:
        self._task.start(self.health.repeat(self.refresh, REFRESH_S, event="event_consumers_refresh_failed"))

    async def stop(self) -> None:
        await self._task.stop()


class _LagCollector(Collector):
    def __init__(self, consumers: Consumers) -> None:
        self.consumers = consumers

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "ledger_event_consumer_lag_entries",
            "Acknowledged journal entries a named event consumer has not acknowledged yet.",
            labels=["consumer"],
        )
        for name, (_, cursor) in sorted(self.consumers.known.items()):
            family.add_metric([name], self.consumers.lag(cursor))
        yield family
