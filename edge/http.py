"""The edge's HTTP API (docs/API.md, section "Edge"): handlers and the route table.

Handlers parse, call one service method, render. The application that serves them is built by the
composition root, edge/app.py; the parts handlers use are under the keys of edge/app_keys.py.
"""

from __future__ import annotations

from aiohttp import web

from shared import auth
from shared.contract.answers import (
    BalancesAnswer,
    BonusProgress,
    EdgeJackpot,
    EdgeJackpots,
    EdgeReady,
    SessionAnswer,
    SessionSaved,
)
from shared.contract.headers import RETRY_AFTER
from shared.contract.operations import EDGE_FORWARD_CODES, MONEY_OPS, READ_CODES, REQUEST_CODES, WRITER_CODES
from shared.contract.requests import SessionStateIn
from shared.routes import Route, path_id
from shared.web import annotate, json_response, principal, read_model

from edge.app_keys import HEALTH, HUB, SERVICE
from edge.service import EDGE_MONEY_OPS

EDGE_SET_FIELDS = frozenset({"via", "client_id"})  # set here from the edge's id and the caller's credential
# A read through to the ledger can also fail as the ledger does (unavailable here).
THROUGH_CODES = (*READ_CODES, "ledger_unavailable", "edge_overloaded", "not_primary", "storage_unavailable")
LOCAL_CODES = (*READ_CODES, "storage_unavailable", "ledger_unavailable")


def _money_route(op: str) -> Route:
    spec = MONEY_OPS[op]

    @auth.roles("game_server")
    async def handler(request: web.Request) -> web.Response:
        body = await read_model(request, spec.request)
        client_id = principal(request).name
        annotate(request, client_id=client_id, via=request.app[SERVICE].edge_id, id=body.id)
        status, answer = await request.app[SERVICE].money(op, body, client_id)
        return json_response(answer, status=status)

    return Route(
        "POST",
        spec.path,
        handler,
        f"{op.replace('_', ' ').capitalize()}, forwarded to the ledger",
        spec.request,
        answer=spec.answer,
        tag="money",
        replays=True,
        hidden_fields=EDGE_SET_FIELDS,
        codes=(*REQUEST_CODES, *EDGE_FORWARD_CODES, *WRITER_CODES, *spec.decision_codes()),
    )


@auth.roles("game_server")
async def balances(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].balances(path_id(request, "player_id")))


@auth.roles("game_server")
async def session(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].session(path_id(request, "player_id"), principal(request).name))


@auth.roles("game_server")
async def put_session(request: web.Request) -> web.Response:
    body = await read_model(request, SessionStateIn)
    return json_response(
        await request.app[SERVICE].put_session(
            path_id(request, "player_id"), path_id(request, "game_id"), body.state, client_id=principal(request).name
        )
    )


@auth.roles("game_server")
async def jackpots(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].jackpots())


@auth.roles("game_server")
async def jackpot(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].jackpot(path_id(request, "jackpot_id")))


@auth.roles("game_server")
async def bonus_progress(request: web.Request) -> web.Response:
    return json_response(await request.app[SERVICE].bonus_progress(path_id(request, "player_id")))


@auth.roles("peer")
async def sync(request: web.Request) -> web.WebSocketResponse:
    return await request.app[HUB].accept(request, principal(request).name)


@auth.public
async def readyz(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    store_ok, ledger_ok = service.state.store.is_open, service.ledger.reachable()
    failing = request.app[HEALTH].failing()
    ready = store_ok and ledger_ok and not failing
    body = {
        "status": "ready" if ready else "unavailable",
        "store": store_ok,
        "ledger": ledger_ok,
        "peers_connected": sorted(request.app[HUB].links),
        "background_failing": failing,
    }
    if not ready:
        return json_response(body, status=503, headers={RETRY_AFTER: "1"})
    return json_response(body)


ROUTES = [
    *(_money_route(op) for op in EDGE_MONEY_OPS),
    Route(
        "GET",
        "/v1/players/{player_id}/balances",
        balances,
        "Balances, read through to the ledger",
        answer=BalancesAnswer,
        codes=THROUGH_CODES,
    ),
    Route(
        "GET",
        "/v1/players/{player_id}/session",
        session,
        "Open rounds (ledger) and game states (CRDT)",
        answer=SessionAnswer,
        codes=LOCAL_CODES,
        tag="edge-state",
    ),
    Route(
        "PUT",
        "/v1/players/{player_id}/session/{game_id}",
        put_session,
        "Save a game state (last writer wins; 409 session_games_full for a new game past session_games_max)",
        SessionStateIn,
        answer=SessionSaved,
        codes=(*REQUEST_CODES, "storage_unavailable", "session_games_full"),
        tag="edge-state",
    ),
    Route(
        "GET",
        "/v1/jackpots",
        jackpots,
        "Jackpot displays known here",
        answer=EdgeJackpots,
        codes=LOCAL_CODES,
        tag="edge-state",
    ),
    Route(
        "GET",
        "/v1/jackpots/{jackpot_id}",
        jackpot,
        "One jackpot display, served locally",
        answer=EdgeJackpot,
        codes=LOCAL_CODES,
        tag="edge-state",
    ),
    Route(
        "GET",
        "/v1/players/{player_id}/bonus-progress",
        bonus_progress,
        "Bonus wagering progress, served locally",
        answer=BonusProgress,
        codes=LOCAL_CODES,
        tag="edge-state",
    ),
    Route(
        "GET",
        "/v1/sync",
        sync,
        "Websocket for peer edges (CRDT sync)",
        tag="replication",
        codes=("unauthenticated", "forbidden", "validation_error"),
    ),
    Route(
        "GET",
        "/readyz",
        readyz,
        "Ready: store open, ledger reachable, no background task failing repeatedly",
        answer=EdgeReady,
        unready_status=503,
    ),
]
