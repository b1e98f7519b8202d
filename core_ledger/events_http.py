"""The event stream and its named consumers over HTTP (core_ledger/events.py, core_ledger/consumers.py).

- `GET /v1/events?after=&limit=&wait_s=&consumer=&include_rejected=` (roles `events`, `admin_read`):
  NDJSON by default, Server-Sent Events with `Accept: text/event-stream`; `X-Events-Next-After`
  names the sequence to continue after. Without `after` it starts after the consumer's cursor
  (with `consumer`), after an SSE client's `Last-Event-ID`, or at the beginning.
- `PUT /v1/consumers/{name}/cursor` `{"sequence"}` (role `events`): acknowledge, forward only.
- `PUT /admin/v1/consumers/{name}` `{"description", "start_after"}` (`admin_write`): create or update;
  `GET /admin/v1/consumers` (`admin_read`, `admin_write`): each with its cursor and lag;
  `DELETE /admin/v1/consumers/{name}` (`admin_write`).
"""

from __future__ import annotations

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field

from shared import auth
from shared.contract.answers import Consumer, ConsumerCursor, ConsumerDeleted, ConsumersAnswer, DeadLetterReplayed
from shared.contract.operations import READ_CODES, REQUEST_CODES
from shared.errors import BadRequest
from shared.ids import is_id
from shared.routes import Route, path_id
from shared.web import json_response, principal, read_model

from core_ledger.app_keys import CONFIG, SERVICE
from core_ledger.config import LedgerConfig
from core_ledger.consumers import Consumers, webhook_host
from core_ledger.events import ndjson, read_events, sse
from core_ledger.metrics import LedgerMetrics
from core_ledger.query import page_limit, query_bool, query_int
from core_ledger.service import LedgerService
from core_ledger.webhooks import Webhooks, WebhookSettings

log = structlog.get_logger("croupier.ledger.admin")

CONSUMERS = web.AppKey("ledger_event_consumers", Consumers)
WEBHOOKS = web.AppKey("ledger_webhooks", Webhooks)
SEQUENCE_MAX = 2**62
NEXT_AFTER_HEADER = "X-Events-Next-After"
ACKNOWLEDGED_HEADER = "X-Events-Acknowledged"
SSE_TYPE = "text/event-stream"
SSE_RETRY_MS = 1000


class ConsumerIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    description: str | None = Field(None, max_length=500)
    start_after: int | None = Field(
        None, ge=0, le=SEQUENCE_MAX, description="Set (or reset) the cursor: delivery starts after this sequence"
    )
    webhook_url: str | None = Field(
        None,
        max_length=2000,
        pattern=r"^(https?://\S+)?$",
        description='Push the events here (POST, signed); "" removes the webhook',
    )
    webhook_secret: str | None = Field(
        None,
        min_length=16,
        max_length=256,
        pattern=r"^\S+$",
        description="HMAC-SHA256 key of the signatures (never shown again)",
    )
    owner: str | None = Field(
        None,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:-]*$",
        description='The `events` credential that alone may acknowledge it; "" lets any (the default)',
    )


class CursorIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    sequence: int = Field(..., ge=0, le=SEQUENCE_MAX, description="The last sequence durably processed")


def _last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID")
    if raw is None:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or int(raw) > SEQUENCE_MAX:
        raise BadRequest("Last-Event-ID: the sequence of an event", field="Last-Event-ID")
    return int(raw)


@auth.roles("events", "admin_read")
async def events(request: web.Request) -> web.Response:
    config = request.app[CONFIG]
    limit = page_limit(request)
    wait_s = query_int(request, "wait_s", 0, high=int(config.event_wait_s_max))
    include_rejected = query_bool(request, "include_rejected")
    name = request.query.get("consumer")
    if "after" in request.query:
        after = query_int(request, "after", 0, high=SEQUENCE_MAX)
    elif name is not None:
        after = await request.app[CONSUMERS].cursor_of(_consumer_name(name, "consumer"))
    else:
        after = _last_event_id(request) or 0
    page = await read_events(request.app[SERVICE], after, limit, wait_s=wait_s, include_rejected=include_rejected)
    headers = {NEXT_AFTER_HEADER: str(page.next_after), ACKNOWLEDGED_HEADER: str(page.acknowledged)}
    if SSE_TYPE in request.headers.get("Accept", ""):
        body = b"retry: %d\n\n" % SSE_RETRY_MS + (sse(page.events, after, page.next_after) or b": no new events\n\n")
        return web.Response(body=body, content_type=SSE_TYPE, headers={**headers, "Cache-Control": "no-cache"})
    return web.Response(body=ndjson(page.events), content_type="application/x-ndjson", headers=headers)


def _consumer_name(value: str, field: str) -> str:
    if not is_id(value):
        raise BadRequest(f"{field}: not a valid consumer name", field=field)
    return value


@auth.roles("events")
async def ack(request: web.Request) -> web.Response:
    body = await read_model(request, CursorIn)
    return json_response(
        await request.app[CONSUMERS].caller_ack(path_id(request, "name"), body.sequence, who=principal(request).name)
    )


@auth.roles("admin_write")
async def put_consumer(request: web.Request) -> web.Response:
    body = await read_model(request, ConsumerIn)
    if body.webhook_url:
        host = webhook_host(body.webhook_url)
        if host is None:
            raise BadRequest("webhook_url: not a URL", field="webhook_url")
        if host not in request.app[CONFIG].webhook_hosts:
            raise BadRequest(f"webhook_url: host {host!r} is not one of ledger.webhook_hosts", field="webhook_url")
    fields = body.model_dump(exclude_none=True, exclude={"start_after"})
    created, view = await request.app[CONSUMERS].put(
        path_id(request, "name"), fields, start_after=body.start_after, who=principal(request).name
    )
    return json_response(view, status=201 if created else 200)


@auth.roles("admin_write")
async def replay_dead_letter(request: web.Request) -> web.Response:
    name, letter_id = path_id(request, "name"), path_id(request, "letter_id")
    result = await request.app[WEBHOOKS].replay(name, letter_id)
    log.info(
        "admin_action",
        action="webhook_replay",
        principal=principal(request).name,
        consumer=name,
        letter_id=letter_id,
        delivered=result["delivered"],
    )
    return json_response(result)


@auth.roles("admin_read", "admin_write")
async def list_consumers(request: web.Request) -> web.Response:
    return json_response(
        {
            "consumers": await request.app[CONSUMERS].listing(),
            "acknowledged_sequence": request.app[SERVICE].confirmed_sequence,
        }
    )


@auth.roles("admin_write")
async def delete_consumer(request: web.Request) -> web.Response:
    name = path_id(request, "name")
    await request.app[CONSUMERS].delete(name, who=principal(request).name)
    return json_response({"name": name, "deleted": True})


ROUTES: list[Route] = [
    Route(
        "GET",
        "/v1/events",
        events,
        "Acknowledged journal entries as events (NDJSON, or SSE with Accept: "
        "text/event-stream), long polling with wait_s; the sequence is the dedup key",
        query={
            "after": "integer",
            "limit": "integer",
            "wait_s": "integer",
            "consumer": "string",
            "include_rejected": "boolean",
        },
        ndjson=True,
        media=("application/x-ndjson", "text/event-stream"),
        tag="events",
        codes=(*READ_CODES, "storage_unavailable"),
    ),
    Route(
        "PUT",
        "/v1/consumers/{name}/cursor",
        ack,
        "Acknowledge events up to a sequence (the cursor only moves forward)",
        body=CursorIn,
        created=False,
        answer=ConsumerCursor,
        tag="events",
        codes=(*REQUEST_CODES, "not_found", "storage_unavailable"),
    ),
    Route(
        "PUT",
        "/admin/v1/consumers/{name}",
        put_consumer,
        "Create (201) or update (200) a named event consumer",
        body=ConsumerIn,
        created=True,
        replays=True,
        answer=Consumer,
        tag="events",
        codes=(*REQUEST_CODES, "consumer_limit_reached", "storage_unavailable"),
    ),
    Route(
        "GET",
        "/admin/v1/consumers",
        list_consumers,
        "Named event consumers with their cursors and lag",
        answer=ConsumersAnswer,
        tag="events",
        codes=(*READ_CODES, "storage_unavailable"),
    ),
    Route(
        "DELETE",
        "/admin/v1/consumers/{name}",
        delete_consumer,
        "Forget a named event consumer",
        answer=ConsumerDeleted,
        tag="events",
        codes=(*READ_CODES, "storage_unavailable"),
    ),
    Route(
        "POST",
        "/admin/v1/consumers/{name}/dead-letters/{letter_id}/replay",
        replay_dead_letter,
        "Deliver a dead-lettered webhook page again (it leaves the list once the receiver took it)",
        created=False,
        answer=DeadLetterReplayed,
        tag="events",
        codes=(*READ_CODES, "storage_unavailable"),
    ),
]


def install(
    app: web.Application,
    service: LedgerService,
    config: LedgerConfig,
    metrics: LedgerMetrics,
    registry: CollectorRegistry,
) -> Consumers:
    """Create the consumers (`CONSUMERS`) and their webhook delivery (`WEBHOOKS`)."""
    app[CONSUMERS] = Consumers(service, config.event_consumers_max, metrics, registry)
    settings = WebhookSettings(
        hosts=config.webhook_hosts,
        timeout_s=config.webhook_timeout_s,
        attempts_max=config.webhook_attempts_max,
        backoff_base_s=config.webhook_backoff_base_s,
        backoff_max_s=config.webhook_backoff_max_s,
    )
    app[WEBHOOKS] = Webhooks(app[CONSUMERS], settings, metrics, registry, tls=config.tls.client_context())
    return app[CONSUMERS]
