"""The event stream for downstream systems: journal entries read as events, up to what is acknowledged.

An event is one journal entry as a downstream system reads it: its `sequence` (the dedup key:
delivery is at least once, so a consumer drops a sequence it has seen), `hash`, `epoch`, `type`,
`time` (the entry's `committed_at`), the ids (`id`, `client_id`, `via`, `principal`), `outcome`,
the `request` and `result` of the transaction and its `postings`. By default only committed
transactions are events; `include_rejected` adds the journaled refusals.

Only **acknowledged** entries are served: with a synchronous standby, an entry committed but not
yet confirmed may be dropped by a failover, and a downstream system must never have seen money
that the ledger then does not hold. A long poll waits for the next acknowledged entry, woken by
the writer's commit watermark (`LedgerService.commits`, the one the standby's journal long poll
uses) or by the standbys' acknowledgements (`LedgerService.acks.best`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

from core_ledger.service import LedgerService

EVENT_FIELDS = ("id", "client_id", "via", "principal", "outcome")
EVENTS_SKIPPED_MAX = 10_000  # entries filtered out that one read goes past before it answers
EVENTS_READ_PAGE = 500  # journal rows read at a time while looking for events (a small `limit` too)


def event_of(entry: dict[str, Any]) -> dict[str, Any]:
    tx = entry["transaction"]
    event = {
        "sequence": entry["sequence"],
        "hash": entry["hash"],
        "epoch": entry["epoch"],
        "type": tx["type"],
        "time": tx["committed_at"],
        **{f: tx.get(f) for f in EVENT_FIELDS},
        "request": tx.get("request", {}),
        "result": tx.get("result", {}),
        "postings": entry["postings"],
    }
    if tx.get("outcome") == "rejected":
        event["code"] = tx.get("code")
    return event


def ndjson(events: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(e) + b"\n" for e in events)


def sse(events: list[dict[str, Any]], after: int, next_after: int) -> bytes:
    """Server-Sent Events frames: `id` is the sequence (a reconnecting EventSource sends it back as
    `Last-Event-ID`), `event` the transaction type, `data` the event's JSON. Entries read past
    after the last event (filtered out) end in an `id` frame alone: an EventSource takes the id
    without dispatching anything, so it resumes past them."""
    frames = b"".join(
        b"id: %d\nevent: %s\ndata: %s\n\n" % (e["sequence"], e["type"].encode(), orjson.dumps(e)) for e in events
    )
    if next_after > (events[-1]["sequence"] if events else after):
        frames += b"id: %d\n\n" % next_after
    return frames


@dataclass(frozen=True)
class EventPage:
    events: list[dict[str, Any]]
    next_after: int  # the sequence to continue after (the last entry read, served or filtered out)
    acknowledged: int  # the acknowledged head the page was read under


async def wait_acknowledged(service: LedgerService, after: int, timeout_s: float) -> bool:
    """True once an entry after `after` is acknowledged; False when `timeout_s` passed first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while service.confirmed_sequence <= after:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        if service.head.sequence <= after:
            await service.commits.reach(after + 1, remaining)
        else:  # committed, waiting for a standby's confirmation
            await service.acks.best.reach(after + 1, remaining)
    return True


async def read_events(
    service: LedgerService,
    after: int,
    limit: int,
    *,
    wait_s: float,
    include_rejected: bool,
    through: int | None = None,
) -> EventPage:
    """Up to `limit` events after `after`, never past the acknowledged head (nor past `through`);
    with `wait_s`, wait that long at most for one to be acknowledged when there is none yet.
    Entries filtered out (the rejected ones, unless asked for) are read past: a page of them only
    is never served while more are acknowledged (a reader holding its place would get it again
    and again), up to EVENTS_SKIPPED_MAX of them per call, which `next_after` then points past."""
    loop = asyncio.get_running_loop()
    deadline, skipped = loop.time() + wait_s, 0
    while True:
        remaining = deadline - loop.time()
        if remaining > 0:
            await wait_acknowledged(service, after, remaining)
        acknowledged = service.confirmed_sequence
        end = acknowledged if through is None else min(acknowledged, through)
        events: list[dict[str, Any]] = []
        while not events and after < end and skipped < EVENTS_SKIPPED_MAX:
            rows = await service.store.journal(after, min(max(limit, EVENTS_READ_PAGE), end - after))
            if not rows:
                break
            events, after, passed = _events_of(rows, limit, include_rejected)
            skipped += passed
        if events or skipped >= EVENTS_SKIPPED_MAX or deadline - loop.time() <= 0:
            return EventPage(events, after, acknowledged)


def _events_of(
    rows: list[tuple[int, str]], limit: int, include_rejected: bool
) -> tuple[list[dict[str, Any]], int, int]:
    """The events of journal `rows`, at most `limit`; the sequence read up to (the last row, or the
    `limit`-th event's) and how many entries were filtered out before it."""
    events: list[dict[str, Any]] = []
    skipped = 0
    for sequence, text in rows:
        entry = orjson.loads(text)
        if include_rejected or entry["transaction"].get("outcome") == "committed":
            events.append(event_of(entry))
            if len(events) == limit:
                return events, sequence, skipped
        else:
            skipped += 1
    return events, rows[-1][0], skipped
