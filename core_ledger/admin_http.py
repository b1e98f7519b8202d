"""The admin API (`/admin/v1`): writes need `admin_write`, reads `admin_read`; every write is
journaled with the admin's identity (the credential name) and logged (`admin_action`: who, what,
the outcome), as are promotions, backups, unfences and audit runs."""

from __future__ import annotations

import asyncio
import csv
import io
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
import structlog
from aiohttp import web
from pydantic import BaseModel

from shared import auth
from shared.contract.answers import (
    AuditReport,
    BackupTaken,
    PlayerAnswer,
    Promoted,
    ReplicationAnswer,
    RoundsAnswer,
    StaleRoundsAnswer,
    StatementAnswer,
    TraceAnswer,
    TransactionAnswer,
)
from shared.contract.operations import READ_CODES, REQUEST_CODES, WRITER_CODES
from shared.contract.requests import (
    AdjustmentIn,
    BonusGrantIn,
    FreezeIn,
    JackpotCreateIn,
    PlayerCreateIn,
    RoundSettleIn,
    UnfenceIn,
)
from shared.errors import BadRequest, CroupierError
from shared.routes import Route, path_id
from shared.web import json_response, principal, read_model

from core_ledger.answers import answer
from core_ledger.app_keys import AUDITOR, BACKUPS, CONFIG, FENCING, READS, SERVICE, STANDBY
from core_ledger.domain import ADMIN_SCOPE, Command
from core_ledger.domain.rounds import settlement
from core_ledger.query import page_limit, query_bool, query_choice, query_int
from core_ledger.service import LedgerService
from core_ledger.standby_tailer import StandbyTailer

log = structlog.get_logger("croupier.ledger.admin")

SEQUENCE_MAX = 2**62
PROMOTION_RECORD_WAIT_S = 2.0  # a promote answer waits this long at most for its journal entry
# What an admin write's decision can refuse with (beyond the request's own problems).
ADMIN_DECISION_CODES = (
    "validation_error",
    "not_found",
    "idempotency_key_reused",
    "version_conflict",
    "account_frozen",
    "balance_limit_exceeded",
    "report_limit_exceeded",
    "currency_mismatch",
    "insufficient_funds",
)
ADMIN_READ_CODES = (*READ_CODES, "storage_unavailable")
Body = TypeVar("Body", bound=BaseModel)
Keyer = Callable[[Body, auth.Principal], tuple[str, str] | None]


def _write_route(path: str, tx_type: str, model: type[Body], keyer: Keyer[Body], summary: str) -> Route:
    """An admin write: validate, build the command (path ids merged in), one service call."""

    @auth.roles("admin_write")
    async def handler(request: web.Request) -> web.Response:
        body = await read_model(request, model)
        who = principal(request)
        fields = body.model_dump(mode="json")
        if "player_id" in request.match_info:
            fields["player_id"] = path_id(request, "player_id")
        [result] = await request.app[SERVICE].submit([Command(tx_type, fields, who.name, keyer(body, who))])
        status, code = (result[0], result[1].get("code")) if isinstance(result, tuple) else (None, result.code)
        log.info(
            "admin_action",
            action=tx_type,
            principal=who.name,
            id=getattr(body, "id", None),
            player_id=fields.get("player_id"),
            status=status,
            code=code,
        )
        return answer(result)

    return Route(
        "POST",
        path,
        handler,
        summary,
        body=model,
        answer=TransactionAnswer,
        replays=True,
        codes=(*REQUEST_CODES, *WRITER_CODES, *ADMIN_DECISION_CODES),
    )


def _by_admin(body: Any, who: auth.Principal) -> tuple[str, str]:
    return (who.name, body.id)


@auth.roles("admin_read")
async def player(request: web.Request) -> web.Response:
    return json_response(await request.app[READS].player(path_id(request, "player_id")))


@auth.roles("admin_read")
async def statement(request: web.Request) -> web.Response:
    currency = request.query.get("currency", "")
    if len(currency) != 3 or not currency.isascii() or not currency.isupper():
        raise BadRequest("currency: a 3-letter currency code is required", field="currency")
    after = query_int(request, "after_sequence", 0, high=SEQUENCE_MAX)
    return json_response(
        await request.app[READS].statement(path_id(request, "player_id"), currency, after, page_limit(request))
    )


@auth.roles("admin_read")
async def round_(request: web.Request) -> web.Response:
    return json_response(await request.app[READS].rounds_by_id(path_id(request, "round_id"), page_limit(request)))


@auth.roles("admin_read")
async def stale_rounds(request: web.Request) -> web.Response:
    """Open rounds older than `older_than_s` (default: the configured `stale_round_after_s`)."""
    configured = request.app[CONFIG].stale_round_after_s
    raw = request.query.get("older_than_s")
    older_than_s = float(query_int(request, "older_than_s", 0, high=30 * 86_400)) if raw is not None else configured
    if raw is None and configured <= 0:
        raise BadRequest(
            "older_than_s: required while stale_round_after_s is 0 (stale rounds are off)", field="older_than_s"
        )
    after = query_int(request, "after_sequence", 0, high=SEQUENCE_MAX)
    return json_response(
        await request.app[READS].stale_rounds(older_than_s, after_sequence=after, limit=page_limit(request))
    )


@auth.roles("admin_write")
async def settle_round(request: web.Request) -> web.Response:
    """Refund or close one round by hand (journaled as `round_refund` / `round_close`)."""
    body = await read_model(request, RoundSettleIn)
    who = principal(request)
    player_id, round_id = path_id(request, "player_id"), path_id(request, "round_id")
    if body.client_id is not None:
        scope: str | None = body.client_id
    else:
        scopes = await request.app[READS].round_scopes(player_id, round_id)
        if len(scopes) > 1:
            raise BadRequest(
                f"round {round_id!r} of {player_id!r} is played by several clients: name one in client_id",
                field="client_id",
            )
        scope = scopes[0] if scopes else None  # none: the rules answer not_found
    command = settlement(body.policy, player_id, round_id, scope, body.reason, who.name)
    [result] = await request.app[SERVICE].submit([command])
    status, code = (result[0], result[1].get("code")) if isinstance(result, tuple) else (None, result.code)
    log.info(
        "admin_action",
        action=command.type,
        principal=who.name,
        player_id=player_id,
        round_id=round_id,
        client_id=scope,
        reason=body.reason,
        status=status,
        code=code,
    )
    return answer(result)


@auth.roles("admin_read")
async def trace(request: web.Request) -> web.Response:
    return json_response(await request.app[READS].trace(path_id(request, "id"), page_limit(request)))


@auth.roles("admin_read", "admin_write")
async def verify(request: web.Request) -> web.Response:
    report = await request.app[AUDITOR].verify()
    log.info(
        "admin_action",
        action="audit_verify",
        principal=principal(request).name,
        ok=report.get("ok"),
        first_bad_sequence=report.get("first_bad_sequence"),
    )
    return json_response(report)


CSV_COLUMNS = (
    "sequence",
    "epoch",
    "type",
    "id",
    "client_id",
    "via",
    "principal",
    "committed_at",
    "outcome",
    "postings",
    "prev_hash",
    "hash",
)


def _csv_line(entry: dict[str, Any]) -> str:
    tx = entry["transaction"]
    row = [
        entry["sequence"],
        entry["epoch"],
        tx["type"],
        tx["id"],
        tx["client_id"],
        tx["via"],
        tx["principal"],
        tx["committed_at"],
        tx["outcome"],
        orjson.dumps(entry["postings"]).decode(),
        entry["prev_hash"],
        entry["hash"],
    ]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(["" if v is None else v for v in row])
    return out.getvalue()


@auth.roles("admin_read")
async def export(request: web.Request) -> web.StreamResponse:
    start = query_int(request, "from_sequence", 1, low=1, high=SEQUENCE_MAX)
    end = query_int(request, "to_sequence", request.app[SERVICE].head.sequence, low=0, high=SEQUENCE_MAX)
    fmt = query_choice(request, "format", ("ndjson", "csv")) or "ndjson"
    response = web.StreamResponse(headers={"Content-Type": "text/csv" if fmt == "csv" else "application/x-ndjson"})
    await response.prepare(request)
    if fmt == "csv":
        await response.write(",".join(CSV_COLUMNS).encode() + b"\n")
    async for page in request.app[READS].journal_range(start, end):
        lines = [_csv_line(e) if fmt == "csv" else orjson.dumps(e).decode() + "\n" for e in page]
        await response.write("".join(lines).encode())
    await response.write_eof()
    return response


@auth.roles("admin_read")
async def replication(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    head = service.head
    # Enough to decide which copy is right: the highest epoch, then the longest chain that verifies.
    body: dict[str, Any] = {
        "role": service.role,
        "epoch": head.epoch,
        "fenced": service.fenced,
        "fenced_by_epoch": service.fenced_by or None,
        "head": {"sequence": head.sequence, "hash": head.hash},
        "synchronous_standby": service.limits.synchronous_standby,
        "standbys": service.acks.report(head.sequence, asyncio.get_running_loop().time()),
    }
    standby = request.app.get(STANDBY)
    if standby is not None:
        body["primary"] = {
            "url": standby.settings.primary_url,
            "head_sequence": standby.primary_head,
            "epoch": standby.primary_epoch,
            "lag_sequences": max(0, standby.primary_head - head.sequence),
            "tailing": standby.running,
            "broken_at_sequence": standby.broken_at,
            "state": standby.state,
            "diverged_at_sequence": standby.diverged_at,
        }
    return json_response(body)


@auth.roles("admin_write")
async def promote(request: web.Request) -> web.Response:
    standby = request.app.get(STANDBY)
    force = query_bool(request, "force")
    if standby is None:
        return await _promote(request, force, None)
    async with standby.promotion:
        return await _promote(request, force, standby)


async def _promote(request: web.Request, force: bool, standby: StandbyTailer | None) -> web.Response:
    """Promote this copy (a primary answers its head: a no-op). The caller holds the tailer's
    promotion lock, so the tailer is never restarted while another request promotes."""
    service = request.app[SERVICE]
    above, record = 0, None  # the highest epoch a peer announced; what the promote entry records
    if standby is not None and service.role == "standby":
        # Read the peers while still tailing: a promotion refused then never held up the
        # confirmations a synchronous primary waits for.
        # Read after this request announced itself (`promoting`): a survey already under way (the
        # periodic check) may have read a peer before that peer's own promotion began.
        survey = await request.app[FENCING].survey(fresh=True)
        await standby.stop()  # cooperatively: an apply under way ends first, so the head below is final
        objection = survey.objection_to_promotion(service.epoch, service.head.sequence, standby.primary_acked)
        if objection is not None:
            log.log(
                logging.CRITICAL if force else logging.WARNING,
                "promotion_objected",
                principal=principal(request).name,
                code=objection.code,
                detail=str(objection),
                forced=force,
                peers=objection.extra.get("peers"),
            )
            if not force:
                standby.start()  # it goes on tailing (and may catch up)
                raise objection
        # Above every epoch a peer announced: two copies promoted one after the other never share one.
        above = survey.highest_epoch()
        record = {
            "force": force,
            "head_sequence": service.head.sequence,
            "primary_acknowledged": standby.primary_acked,
            "peers": [v.record() for v in survey.views],
        }
    try:
        head = await service.promote(above)
    except Exception:  # not handled here, only undone: re-raised, a refusal (epoch_exhausted) and a
        # store failure (storage_unavailable) are answered as such, a bug is logged and counted by
        # the web layer as a 500. Still a standby either way, so it goes on tailing.
        if standby is not None and service.role == "standby":
            standby.start()
        raise
    if record is not None:
        await _journal_promotion(service, {**record, "epoch": head.epoch}, principal(request).name)
    log.warning(
        "admin_action",
        action="promote",
        principal=principal(request).name,
        epoch=head.epoch,
        head_sequence=head.sequence,
        forced=force,
    )
    return json_response(
        {"role": "primary", "epoch": head.epoch, "head": {"sequence": head.sequence, "hash": head.hash}}
    )


async def _journal_promotion(service: LedgerService, request: dict[str, Any], who: str) -> None:
    """The promotion's record as the first entry of the new epoch (who, whether forced, what the
    copy held and the peers announced). It is not waited for past PROMOTION_RECORD_WAIT_S (a
    synchronous primary without a standby yet holds its answer): it is journaled all the same."""
    try:
        pending = service.enqueue([Command("promote", request, who, None)])
        async with asyncio.timeout(PROMOTION_RECORD_WAIT_S):
            [result] = await asyncio.shield(pending)
    except TimeoutError:
        log.warning("promotion_record_unconfirmed", epoch=request["epoch"])
        return
    except CroupierError as refused:  # the writer took nothing (its queue full, say): logged, not retried
        result = refused
    if isinstance(result, CroupierError):
        log.error("promotion_record_failed", epoch=request["epoch"], code=result.code)


@auth.roles("admin_write")
async def unfence(request: web.Request) -> web.Response:
    body = await read_model(request, UnfenceIn)
    result = await request.app[FENCING].unfence(body.reason, body.force, principal(request))
    log.warning(
        "admin_action",
        action="unfence",
        principal=principal(request).name,
        force=body.force,
        reason=body.reason,
        status=result[0] if isinstance(result, tuple) else None,
        code=None if isinstance(result, tuple) else result.code,
    )
    return answer(result)


@auth.roles("admin_write")
async def backup(request: web.Request) -> web.Response:
    taken = await request.app[BACKUPS].take(trigger=f"admin:{principal(request).name}")
    log.info(
        "admin_action",
        action="backup",
        principal=principal(request).name,
        **{k: v for k, v in taken.items() if isinstance(v, (str, int, float, bool))},
    )
    return json_response(taken, status=201)


ROUTES: list[Route] = [
    _write_route(
        "/admin/v1/players",
        "player_create",
        PlayerCreateIn,
        lambda b, _: (ADMIN_SCOPE, f"player:{b.player_id}"),
        "Create a player with accounts",
    ),
    Route(
        "GET",
        "/admin/v1/players/{player_id}",
        player,
        "A player, flags and balances",
        answer=PlayerAnswer,
        codes=ADMIN_READ_CODES,
    ),
    _write_route("/admin/v1/players/{player_id}/freeze", "freeze", FreezeIn, lambda b, w: None, "Freeze a player"),
    _write_route(
        "/admin/v1/players/{player_id}/unfreeze", "unfreeze", FreezeIn, lambda b, w: None, "Unfreeze a player"
    ),
    _write_route("/admin/v1/adjustments", "adjustment", AdjustmentIn, _by_admin, "Signed balance adjustment"),
    Route(
        "GET",
        "/admin/v1/players/{player_id}/statement",
        statement,
        "Postings with running balance",
        query={"currency": "string", "after_sequence": "integer", "limit": "integer"},
        answer=StatementAnswer,
        codes=ADMIN_READ_CODES,
    ),
    Route(
        "GET", "/admin/v1/rounds/{round_id}", round_, "Rounds with this id", answer=RoundsAnswer, codes=ADMIN_READ_CODES
    ),
    Route(
        "GET",
        "/admin/v1/stale-rounds",
        stale_rounds,
        "Open rounds older than older_than_s (default: stale_round_after_s), oldest first",
        query={"older_than_s": "integer", "after_sequence": "integer", "limit": "integer"},
        answer=StaleRoundsAnswer,
        tag="admin",
        codes=ADMIN_READ_CODES,
    ),
    Route(
        "POST",
        "/admin/v1/rounds/{player_id}/{round_id}/settle",
        settle_round,
        "Settle an interrupted round by hand: refund its bets or close it (journaled, idempotent per round and policy)",
        body=RoundSettleIn,
        answer=TransactionAnswer,
        replays=True,
        tag="admin",
        codes=(
            *REQUEST_CODES,
            *WRITER_CODES,
            *ADMIN_DECISION_CODES,
            "round_closed",
            "round_refunded",
            "wagering_already_claimed",
        ),
    ),
    Route(
        "GET",
        "/admin/v1/transactions/{id}/trace",
        trace,
        "Who, when, via which edge, sequence, hash",
        query={"limit": "integer"},
        answer=TraceAnswer,
        codes=ADMIN_READ_CODES,
    ),
    _write_route(
        "/admin/v1/jackpots",
        "jackpot_create",
        JackpotCreateIn,
        lambda b, _: (ADMIN_SCOPE, f"jackpot:{b.jackpot_id}"),
        "Create a jackpot (seeded by the house)",
    ),
    _write_route("/admin/v1/bonuses", "bonus_grant", BonusGrantIn, _by_admin, "Grant a bonus offer"),
    Route(
        "POST",
        "/admin/v1/audit/verify",
        verify,
        "Verify the whole hash chain",
        answer=AuditReport,
        codes=ADMIN_READ_CODES,
    ),
    Route(
        "GET",
        "/admin/v1/journal/export",
        export,
        "Export a journal range",
        query={"from_sequence": "integer", "to_sequence": "integer", "format": "string"},
        ndjson=True,
        codes=ADMIN_READ_CODES,
    ),
    Route(
        "GET",
        "/admin/v1/replication",
        replication,
        "Role, epoch, head and standbys",
        answer=ReplicationAnswer,
        codes=ADMIN_READ_CODES,
    ),
    Route(
        "POST",
        "/admin/v1/backups",
        backup,
        "Online, verified backup (portable directory format) into backup_dir",
        created=True,
        answer=BackupTaken,
        codes=("unauthenticated", "forbidden", "backup_not_configured", "backup_failed", "storage_unavailable"),
    ),
    Route(
        "POST",
        "/admin/v1/promote",
        promote,
        "Make this standby the primary (above every epoch its peers announce); no-op on a primary; "
        "409 standby_behind while it holds less than its primary acknowledged or a peer standby holds more, "
        "409 peer_is_primary while a peer is primary at its epoch or above, "
        "409 peer_promoting while a peer standby is being promoted (unless force=true)",
        query={"force": "boolean"},
        answer=Promoted,
        codes=(
            "validation_error",
            "unauthenticated",
            "forbidden",
            "standby_behind",
            "peer_is_primary",
            "peer_promoting",
            "epoch_exhausted",
            "storage_unavailable",
        ),
    ),
    Route(
        "POST",
        "/admin/v1/unfence",
        unfence,
        "Lift this primary's fence (journaled with the reason and the peers' evidence; refused while a peer "
        "is primary at a higher epoch unless forced)",
        body=UnfenceIn,
        answer=TransactionAnswer,
        replays=True,
        codes=(*REQUEST_CODES, *WRITER_CODES, "not_fenced", "peer_is_primary", "peer_unreadable"),
    ),
]
