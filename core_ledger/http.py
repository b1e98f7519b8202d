"""The ledger's HTTP API (`/v1`): money writes, the batch, reads (the app is built in `app.py`).

Handlers parse, make one service call, render. Roles: game money ops `edge`, deposits and
withdrawals `cashier`, reads `edge`/`cashier`/`admin_read`, the journal `replica`/`admin_read`.
A non-edge caller that sends `via` or `client_id` gets 403: only edges forward those.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import structlog
from aiohttp import web

from shared import auth, logs
from shared.contract.answers import (
    BalancesAnswer,
    BatchAnswer,
    ExternalRefAnswer,
    LedgerBonuses,
    LedgerJackpot,
    LedgerReady,
    Limits,
    RoundsAnswer,
    Transaction,
)
from shared.contract.headers import LEDGER_EPOCH, RETRY_AFTER
from shared.contract.operations import MONEY_OPS, READ_CODES, REQUEST_CODES, WRITER_CODES
from shared.contract.requests import CURRENCIES_MAX, GAME_IDS_MAX, OPTIONAL_FIELDS, REASON_CHARS_MAX, BatchIn
from shared.errors import BadRequest, CroupierError, Forbidden, problem, status_for
from shared.routes import Route, path_id
from shared.web import (
    annotate,
    json_response,
    principal,
    read_json,
    request_id,
    request_lines,
    validate,
)

from core_ledger.answers import answer
from core_ledger.app_keys import AUDITOR, CONFIG, FENCING, LEASE, READS, SERVICE, STANDBY, SUBMIT
from core_ledger.config import LedgerConfig
from core_ledger.domain import Command
from core_ledger.query import page_limit, query_choice, query_id, query_int
from core_ledger.standby_tailer import ACKED_HEADER, HEAD_HEADER

log = structlog.get_logger("croupier.ledger.http")

READ_ROLES = ("edge", "cashier", "admin_read")
LEDGER_HEADERS = {LEDGER_EPOCH: "The epoch of this ledger copy (every answer)"}
HASH_TEXT = re.compile(r"[0-9a-f]{64}")


def money_command(op: str, raw: Any, who: auth.Principal) -> Command:
    """Validate one money request and build its command (idempotency key, client, via)."""
    spec = MONEY_OPS[op]
    body = validate(spec.request, raw)
    if who.role == "edge":
        client_id, via = body.client_id or who.name, body.via or who.name
        if client_id in who.reserved_client_ids:
            raise Forbidden(
                f"client_id {client_id!r} names another credential of this ledger: an edge acts only for game servers",
                field="client_id",
            )
    elif body.via is not None or body.client_id is not None:
        raise Forbidden("via and client_id are accepted only from an edge credential")
    else:
        client_id, via = who.name, None
    # The validated fields in declaration order: what model_dump gives for money bodies (plain JSON
    # values, no nested model: tests/ledger/test_money_command.py), at a fraction of its cost.
    request = dict(body.__dict__)
    del request["via"], request["client_id"]
    for name in OPTIONAL_FIELDS:  # absent, not null: the entry's bytes are those of a write without them
        if name in request and request[name] in (None, {}):
            del request[name]
    return Command(spec.tx_type, request, who.name, (client_id, body.id), via)


Result = tuple[int, dict[str, Any]] | CroupierError


def log_action(
    lines: logs.RequestLines, op: str, command: Command | None, result: Result, rid: str, **fields: Any
) -> None:
    """One `ledger_action` line per money action (alone or in a batch), under its request id, among
    the request's `lines` (written with its `http_request` line)."""
    body: dict[str, Any] = {}
    code: str | None = None
    if isinstance(result, CroupierError):
        status, code = status_for(result), result.code
    else:
        status, body = result
        code = body.get("code") if status >= 400 else None
    tx = body.get("transaction")
    if not isinstance(tx, dict):
        tx = body
    if command is not None:
        fields.update(
            id=command.key[1] if command.key else None,
            client_id=command.key[0] if command.key else None,
            via=command.via,
            principal=command.principal,
        )
    lines.log(
        log,
        "info",
        "ledger_action",
        op=op,
        status=status,
        code=code,
        sequence=tx.get("sequence"),
        replayed=body.get("replayed"),
        request_id=rid,
        **fields,
    )


def _money_route(op: str) -> Route:
    spec = MONEY_OPS[op]

    @auth.roles(*spec.roles)
    async def handler(request: web.Request) -> web.Response:
        command = money_command(op, await read_json(request), principal(request))
        annotate(request, client_id=command.key[0] if command.key else None, via=command.via)
        try:
            [result] = await request.app[SUBMIT](request, [command])
        except CroupierError as e:
            log_action(request_lines(request), op, command, e, request_id(request))
            raise
        log_action(request_lines(request), op, command, result, request_id(request))
        return answer(result)

    return Route(
        "POST",
        spec.path,
        handler,
        spec.summary,
        body=spec.request,
        answer=spec.answer,
        codes=(*REQUEST_CODES, *WRITER_CODES, *spec.decision_codes()),
        tag="money",
        replays=True,
    )


def _batch_item(result: Result, rid: str) -> dict[str, Any]:
    """One action's result; a problem body names the action's own request id."""
    if isinstance(result, CroupierError):
        return {"status": status_for(result), "body": {**problem(result), "request_id": rid}}
    status, body = result
    return {"status": status, "body": {**body, "request_id": rid} if status >= 400 else body}


@auth.roles("edge")
async def batch(request: web.Request) -> web.Response:
    parsed = validate(BatchIn, await read_json(request))
    limit = request.app[CONFIG].batch_actions_max
    if len(parsed.actions) > limit:
        raise BadRequest(f"actions: at most {limit} per batch", field="actions")
    who = principal(request)
    slots: list[Command | CroupierError] = []
    for action in parsed.actions:
        try:
            slots.append(money_command(action.op, action.body, who))
        except CroupierError as e:  # judged alone: a bad action fails only itself
            slots.append(e)
        except Exception as e:  # a bug with this action: it alone answers 500, not retried,
            # and the rest of the batch goes on. Logged here with its traceback; counted where the
            # money SLO's alerts read it (the edge's edge_money_errors_total{code="internal_error"}).
            log.exception("batch_action_failed", op=action.op, error=repr(e))
            slots.append(CroupierError("an internal error occurred with this action; it has been logged"))
    commands = [s for s in slots if isinstance(s, Command)]
    batch_rid = request_id(request)
    rids = [action.request_id or batch_rid for action in parsed.actions]
    annotate(request, actions=len(slots))
    lines = request_lines(request)
    try:
        results = iter(await request.app[SUBMIT](request, commands) if commands else [])
    except CroupierError as e:  # the whole batch refused (not primary, queue full...): each action says so
        for action, slot, rid in zip(parsed.actions, slots, rids, strict=True):
            log_action(
                lines,
                action.op,
                slot if isinstance(slot, Command) else None,
                e if isinstance(slot, Command) else slot,
                rid,
                batch_request_id=batch_rid,
            )
        raise
    out = []
    for action, slot, rid in zip(parsed.actions, slots, rids, strict=True):
        result = next(results) if isinstance(slot, Command) else slot
        log_action(
            lines, action.op, slot if isinstance(slot, Command) else None, result, rid, batch_request_id=batch_rid
        )
        out.append(_batch_item(result, rid))
    return json_response({"results": out})


@auth.roles(*READ_ROLES)
async def balances(request: web.Request) -> web.Response:
    return json_response(await request.app[READS].balances(path_id(request, "player_id")))


@auth.roles(*READ_ROLES)
async def rounds(request: web.Request) -> web.Response:
    status = query_choice(request, "status", ("open", "closed", "refunded"))
    client_id = query_id(request, "client_id")
    return json_response(
        await request.app[READS].rounds(path_id(request, "player_id"), status, page_limit(request), client_id)
    )


@auth.roles(*READ_ROLES)
async def transaction(request: web.Request) -> web.Response:
    client_id = request.query.get("client_id")
    return json_response(await request.app[READS].transaction(path_id(request, "id"), client_id))


@auth.roles(*READ_ROLES)
async def by_external_ref(request: web.Request) -> web.Response:
    """admin_read sees every entry under the reference; a cashier only its own writes (its client
    id), an edge only what it forwarded (its via): a provider's references are its business."""
    who = principal(request)
    only = None if who.role == "admin_read" else ({"via": who.name} if who.role == "edge" else {"client_id": who.name})
    after = query_int(request, "after_sequence", 0, high=2**62)
    return json_response(
        await request.app[READS].by_external_ref(
            path_id(request, "external_ref"), after_sequence=after, limit=page_limit(request), only=only
        )
    )


@auth.roles(*READ_ROLES)
async def jackpot(request: web.Request) -> web.Response:
    epoch = request.app[SERVICE].epoch  # read before the truth: the copy whose history `as_of` is in
    return json_response({**await request.app[READS].jackpot(path_id(request, "jackpot_id")), "as_of_epoch": epoch})


@auth.roles(*READ_ROLES)
async def bonuses(request: web.Request) -> web.Response:
    epoch = request.app[SERVICE].epoch
    truth = await request.app[READS].bonuses(path_id(request, "player_id"), request.app[CONFIG].page_limit_max)
    return json_response({**truth, "as_of_epoch": epoch})


@auth.roles("replica", "admin_read")
async def journal(request: web.Request) -> web.Response:
    after = query_int(request, "after_sequence", 0, high=2**62)
    wait_ms = query_int(request, "wait_ms", 0, high=request.app[CONFIG].journal_wait_ms_max)
    after_hash = request.query.get("after_hash")
    if after_hash is not None and not HASH_TEXT.fullmatch(after_hash):
        raise BadRequest("after_hash: the 64 lowercase hex digits of an entry's hash", field="after_hash")
    service = request.app[SERVICE]
    if principal(request).role == "replica" and after_hash is not None:
        # A standby asks for what follows what it has durably applied, and proves it holds this
        # chain up to there; a poll without the proof reads the journal but acknowledges nothing.
        await service.acknowledge(principal(request).name, after, after_hash, asyncio.get_running_loop().time())
    if wait_ms:  # long poll: a new commit is pushed to the standby at once
        await service.commits.reach(after + 1, wait_ms / 1000)
    # Both read first, at one instant: the page never runs past the head, and what is acknowledged
    # never runs past it either (read after the page, a commit meanwhile put it beyond the head).
    head, acked = service.head.sequence, service.acknowledged_sequence
    lines = await request.app[READS].journal_page(after, page_limit(request))
    body = "".join(line + "\n" for line in lines)
    return web.Response(
        text=body,
        content_type="application/x-ndjson",
        headers={HEAD_HEADER: str(head), ACKED_HEADER: str(acked)},
    )


@auth.public
async def readyz(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    standby = request.app.get(STANDBY)
    # Also what a peer ledger reads as this copy's own announcement (core_ledger/fencing.py).
    body = {
        "role": service.role,
        "epoch": service.epoch,
        "fenced": service.fenced,
        "head_sequence": service.head.sequence,
        "head_hash": service.head.hash,
        # A promote request under way (it reads the peers first): a peer standby promoted at the
        # same time sees it and refuses, so two promotions never both take one epoch.
        "promoting": standby is not None and standby.promotion.locked(),
        "instance": request.app[FENCING].instance,  # this process: a peer that reads it is reading itself
    }
    if service.fenced:  # it still serves reads, never writes again
        return json_response({**body, "status": "fenced"}, status=503, headers={RETRY_AFTER: "1"})
    if service.halted is not None:  # fail-stop on a broken invariant: an operator must look
        return json_response({**body, "status": "halted", "halted": service.halted}, status=503)
    lease = request.app.get(LEASE)
    if service.role == "passive" and lease is not None:  # one of a pair, waiting for the writer lease
        return json_response(
            {**body, "status": "unavailable", "reason": lease.reason}, status=503, headers={RETRY_AFTER: "1"}
        )
    if service.role == "standby" and standby is not None:
        body["tailer"] = standby.state
    auditing = request.app[AUDITOR].health
    if auditing.failing:  # the tailer's own failures show in `tailer`
        body["failing_tasks"] = [auditing.task]
    if not service.ready or auditing.failing or body.get("tailer", "tailing") != "tailing":
        return json_response({**body, "status": "unavailable"}, status=503, headers={RETRY_AFTER: "1"})
    return json_response({**body, "status": "ready"})


@auth.roles(*READ_ROLES, "replica", "admin_write")
async def limits(request: web.Request) -> web.Response:
    return json_response(limits_of(request.app[CONFIG]).dump())


def limits_of(config: LedgerConfig) -> Limits:
    """What a client must respect, from this ledger's configuration and the request models."""
    return Limits(
        batch_actions_max=config.batch_actions_max,
        body_bytes_max=config.body_bytes_max,
        page_limit_max=config.page_limit_max,
        journal_wait_ms_max=config.journal_wait_ms_max,
        reason_chars_max=REASON_CHARS_MAX,
        currencies_max=CURRENCIES_MAX,
        game_ids_max=GAME_IDS_MAX,
    )


LEDGER_READ_CODES = (*READ_CODES, "storage_unavailable")

ROUTES: list[Route] = [
    *(_money_route(op) for op in MONEY_OPS),
    Route(
        "POST",
        "/v1/batch",
        batch,
        "Many money actions in one round trip, each judged alone",
        body=BatchIn,
        created=False,
        answer=BatchAnswer,
        tag="money",
        codes=(*REQUEST_CODES, *WRITER_CODES),
    ),
    Route(
        "GET",
        "/v1/players/{player_id}/balances",
        balances,
        "A player's balances",
        answer=BalancesAnswer,
        codes=LEDGER_READ_CODES,
    ),
    Route(
        "GET",
        "/v1/players/{player_id}/rounds",
        rounds,
        "A player's rounds (one game-server client's with client_id; open: those holding a stake)",
        query={"status": "string", "limit": "integer", "client_id": "string"},
        answer=RoundsAnswer,
        codes=LEDGER_READ_CODES,
    ),
    Route(
        "GET",
        "/v1/transactions/{id}",
        transaction,
        "One transaction",
        query={"client_id": "string"},
        answer=Transaction,
        codes=LEDGER_READ_CODES,
    ),
    Route(
        "GET",
        "/v1/transactions/by-external-ref/{external_ref}",
        by_external_ref,
        "Transactions journaled under a provider's reference (admin_read: all; edge/cashier: their own)",
        query={"after_sequence": "integer", "limit": "integer"},
        answer=ExternalRefAnswer,
        codes=LEDGER_READ_CODES,
    ),
    Route(
        "GET",
        "/v1/jackpots/{jackpot_id}",
        jackpot,
        "A jackpot's pool, epoch and per-edge contributions",
        answer=LedgerJackpot,
        codes=LEDGER_READ_CODES,
    ),
    Route(
        "GET",
        "/v1/players/{player_id}/bonuses",
        bonuses,
        "A player's bonus offers and wagering",
        answer=LedgerBonuses,
        codes=LEDGER_READ_CODES,
    ),
    Route(
        "GET",
        "/v1/journal",
        journal,
        "Journal entries as NDJSON",
        query={"after_sequence": "integer", "after_hash": "string", "limit": "integer", "wait_ms": "integer"},
        ndjson=True,
        tag="replication",
        codes=(*LEDGER_READ_CODES, "replica_diverged", "not_primary"),
    ),
    Route(
        "GET",
        "/v1/limits",
        limits,
        "What a client must respect: batch, body and page sizes",
        answer=Limits,
        codes=("unauthenticated", "forbidden"),
    ),
    Route(
        "GET",
        "/readyz",
        readyz,
        "Ready to serve (store open, writer running, not fenced)",
        answer=LedgerReady,
        unready_status=503,
    ),
]
