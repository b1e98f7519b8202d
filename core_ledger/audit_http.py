"""Anchored audit over HTTP: the signed checkpoints of the journal's head (core_ledger/checkpoint_jobs.py).

`GET /admin/v1/audit/checkpoints` pages them (opaque `cursor`, `limit`; `next_cursor`, `has_more`
and a `Link: rel="next"` header) with the key id and the public key that verifies them;
`GET /admin/v1/audit/checkpoints/export` streams them all as NDJSON, the file `croupier ledger
verify --checkpoints` reads; `POST /admin/v1/audit/checkpoints` signs the acknowledged head now.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from datetime import datetime

import orjson
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from shared import auth
from shared.contract.answers import CheckpointsAnswer, CheckpointTaken
from shared.contract.operations import READ_CODES
from shared.errors import BadRequest
from shared.routes import Route
from shared.web import json_response, principal

from core_ledger.app_keys import SERVICE
from core_ledger.checkpoint_jobs import Checkpoints
from core_ledger.checkpoints import load_private_key
from core_ledger.config import LedgerConfig
from core_ledger.metrics import LedgerMetrics
from core_ledger.query import page_limit
from core_ledger.service import LedgerService

log = structlog.get_logger("croupier.ledger.admin")

CHECKPOINTS = web.AppKey("ledger_checkpoints", Checkpoints)
EXPORT_PAGE = 500
CURSOR_PREFIX = "cp:"
SEQUENCE_MAX = 2**62


def encode_cursor(sequence: int) -> str:
    return base64.urlsafe_b64encode(f"{CURSOR_PREFIX}{sequence}".encode()).decode().rstrip("=")


def decode_cursor(request: web.Request) -> int:
    """The sequence a `cursor` query value continues after (0 without one); 400 when it is not ours."""
    raw = request.query.get("cursor")
    if raw is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        digits = text[len(CURSOR_PREFIX) :]
        if (
            not text.startswith(CURSOR_PREFIX)
            or not (digits.isascii() and digits.isdigit())
            or len(digits) > 19
            or int(digits) > SEQUENCE_MAX
        ):
            raise ValueError(text)
        return int(digits)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BadRequest("cursor: not a cursor this list returned", field="cursor") from None


@auth.roles("admin_read", "admin_write")
async def list_checkpoints(request: web.Request) -> web.Response:
    after, limit = decode_cursor(request), page_limit(request)
    job = request.app[CHECKPOINTS]
    found = await request.app[SERVICE].store.checkpoints(after, limit + 1)
    page, has_more = found[:limit], len(found) > limit
    next_cursor = encode_cursor(page[-1]["sequence"]) if has_more else None
    headers = {}
    if next_cursor is not None:
        url = request.rel_url.update_query({"cursor": next_cursor, "limit": str(limit)})
        headers["Link"] = f'<{url}>; rel="next"'
    return json_response(
        {
            "checkpoints": page,
            "next_cursor": next_cursor,
            "has_more": has_more,
            "key_id": job.key_id,
            "public_key": job.public_key_pem,
        },
        headers=headers,
    )


@auth.roles("admin_read", "admin_write")
async def export_checkpoints(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    store, after = request.app[SERVICE].store, 0
    while page := await store.checkpoints(after, EXPORT_PAGE):
        await response.write(b"".join(orjson.dumps(cp) + b"\n" for cp in page))
        after = page[-1]["sequence"]
    await response.write_eof()
    return response


@auth.roles("admin_write")
async def checkpoint_now(request: web.Request) -> web.Response:
    checkpoint = await request.app[CHECKPOINTS].checkpoint(trigger=f"admin:{principal(request).name}")
    log.info(
        "admin_action",
        action="checkpoint",
        principal=principal(request).name,
        sequence=checkpoint["sequence"] if checkpoint else None,
    )
    return json_response({"checkpoint": checkpoint}, status=201)


ROUTES: list[Route] = [
    Route(
        "GET",
        "/admin/v1/audit/checkpoints",
        list_checkpoints,
        "Signed checkpoints of the journal head (Ed25519), with the key id and public key",
        query={"cursor": "string", "limit": "integer"},
        answer=CheckpointsAnswer,
        tag="audit",
        codes=(*READ_CODES, "storage_unavailable"),
    ),
    Route(
        "GET",
        "/admin/v1/audit/checkpoints/export",
        export_checkpoints,
        "Every signed checkpoint as NDJSON (the file `croupier ledger verify --checkpoints` reads)",
        ndjson=True,
        tag="audit",
        codes=(*READ_CODES, "storage_unavailable"),
    ),
    Route(
        "POST",
        "/admin/v1/audit/checkpoints",
        checkpoint_now,
        "Sign the acknowledged journal head now (409 checkpoints_not_configured without a key)",
        created=True,
        answer=CheckpointTaken,
        tag="audit",
        codes=(*READ_CODES, "checkpoints_not_configured", "not_primary", "storage_unavailable"),
    ),
]


def install(
    app: web.Application,
    service: LedgerService,
    config: LedgerConfig,
    metrics: LedgerMetrics,
    registry: CollectorRegistry,
    clock: Callable[[], datetime],
) -> Checkpoints:
    """Create the checkpoint job (its key read and checked now) and keep it under `CHECKPOINTS`."""
    key = load_private_key(config.checkpoint_key_file) if config.checkpoint_key_file is not None else None
    app[CHECKPOINTS] = Checkpoints(service, key, config.checkpoint_interval_s, metrics, registry, clock)
    return app[CHECKPOINTS]
