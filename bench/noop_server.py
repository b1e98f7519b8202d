"""A no-op `POST /v1/bets` of the ledger's shape: the baseline the ledger benchmark compares with.

Same framework cost as the ledger's bet route and nothing else: the app comes from
`shared.web.make_app` (auth by bearer token, request metrics, problem+json errors), the body is
parsed with `shared.models.BetIn`, each request is logged as one JSON line as the ledger logs it,
and the 201 answer is a JSON body of the ledger's shape and about its size (docs/API.md, "Answers
of the money writes"). Nothing is stored. The ratio of the ledger's bets/s to this endpoint's
requests/s is then the cost of the ledger's own work.

    python bench/noop_server.py --port 8080 --token-file secrets/edge.token [--log-level info]
"""

from __future__ import annotations

import argparse
import itertools
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from shared import auth, event_loop, logs
from shared.config import LOG_LEVELS, token_entries
from shared.models import BetIn
from shared.web import json_response, make_app, principal, read_model

BODY_BYTES_MAX = 64 * 1024  # the ledger's own request size cap is of this order
SEQUENCE_KEY = web.AppKey("sequence", itertools.count)


@auth.roles("edge")
async def post_bet(request: web.Request) -> web.Response:
    bet = await read_model(request, BetIn)
    sequences = request.app[SEQUENCE_KEY]
    sequence = next(sequences)
    caller = principal(request)
    committed_at = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    return json_response(
        {
            "transaction": {
                "id": bet.id,
                "type": "bet",
                "sequence": sequence,
                "committed_at": committed_at,
                "player_id": bet.player_id,
                "currency": bet.currency,
                "amount_minor": bet.amount_minor,
                "round_id": bet.round_id,
                "game_id": bet.game_id,
                "via": bet.via or caller.name,
                "client_id": bet.client_id or caller.name,
                "jackpot_contributions": [],
            },
            "balance": {
                "player_id": bet.player_id,
                "currency": bet.currency,
                "balance_minor": 1_000_000_000 - sequence * bet.amount_minor,
                "version": sequence,
            },
            "replayed": False,
        },
        status=201,
    )


def build_app(token_file: Path) -> web.Application:
    tokens = auth.TokenStore(
        token_entries([{"name": "bench", "role": "edge", "token_file": str(token_file)}], Path.cwd())
    )
    app = make_app(tokens=tokens, registry=CollectorRegistry(), body_bytes_max=BODY_BYTES_MAX)
    app[SEQUENCE_KEY] = itertools.count(1)
    app.router.add_post("/v1/bets", post_bet)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-file", type=Path, required=True, help="clear bearer token of role edge")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS, help="as the ledger it is compared with")
    args = parser.parse_args()
    logs.configure(args.log_level, service="noop")  # the ledger's own JSON request lines, one per request
    web.run_app(
        build_app(args.token_file),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=event_loop.new_loop(),  # the services' loop
    )


if __name__ == "__main__":
    main()
