"""The route tables of both services, read from apps built by their own factories, the access
policy docs/API.md states for them, and a valid example request for every route.

The apps are built (never started) from throwaway configs: a route table is a property of the
code, not of a running process, so a route added anywhere shows up here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from core_ledger.app import create_app as create_ledger_app
from core_ledger.config import LedgerConfig
from edge.app import create_app as create_edge_app
from edge.config import EdgeConfig
from harness.cluster import EDGE_ROLES, LEDGER_ROLES

PUBLIC = "public"
# Roles of the credentials each process of a `harness.cluster.Cluster` knows (by service name).
CLUSTER_ROLES = {"ledger": frozenset(LEDGER_ROLES), **{e: frozenset(EDGE_ROLES) for e in ("eu", "us", "apac")}}
PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json"})


@dataclass(frozen=True)
class RouteInfo:
    method: str
    path: str
    roles: frozenset[str] | None  # None: no declaration at all
    public: bool

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def access(self) -> str | frozenset[str] | None:
        return PUBLIC if self.public else self.roles


def route_table(app: web.Application) -> list[RouteInfo]:
    out = []
    for route in app.router.routes():
        handler = route.handler
        out.append(
            RouteInfo(
                route.method,
                route.resource.canonical,
                getattr(handler, "croupier_roles", None),
                bool(getattr(handler, "croupier_public", False)),
            )
        )
    return out


def ledger_routes(tmp: Path) -> list[RouteInfo]:
    return route_table(create_ledger_app(LedgerConfig(data_dir=tmp / "ledger-routes")))


def edge_routes(tmp: Path) -> list[RouteInfo]:
    cfg = EdgeConfig(
        id="routes",
        crdt_client_id=1,
        host="127.0.0.1",
        port=1,
        data_dir=tmp / "edge-routes",
        ledger_url="http://127.0.0.1:1",
        ledger_token="unused",
        peer_token="unused",
        ledger_attempt_timeout_s=1.0,
        ledger_deadline_s=1.0,
        body_bytes_max=65536,
        session_state_bytes_max=4096,
        log_level="warning",
        peers=(),
        tokens=(),
    )
    return route_table(create_edge_app(cfg))


def _roles(*names: str) -> frozenset[str]:
    return frozenset(names)


GAME_MONEY = ("/v1/bets", "/v1/wins", "/v1/rollbacks", "/v1/jackpot-payouts", "/v1/bonus-claims")
LEDGER_READS = (
    "/v1/players/{player_id}/balances",
    "/v1/players/{player_id}/rounds",
    "/v1/transactions/{id}",
    "/v1/jackpots/{jackpot_id}",
    "/v1/players/{player_id}/bonuses",
    "/v1/transactions/by-external-ref/{external_ref}",
)
ADMIN_READS = (
    "/admin/v1/players/{player_id}",
    "/admin/v1/players/{player_id}/statement",
    "/admin/v1/rounds/{round_id}",
    "/admin/v1/transactions/{id}/trace",
    "/admin/v1/journal/export",
    "/admin/v1/replication",
    "/admin/v1/stale-rounds",
    # operator queries (core_ledger/queries_http.py): admin_read only, cashier included out
    "/admin/v1/players",
    "/admin/v1/accounts",
    "/admin/v1/transactions",
    "/admin/v1/rounds",
    "/admin/v1/jackpots",
    "/admin/v1/bonuses",
    "/admin/v1/players/{player_id}/balances",
    # finance reports (core_ledger/reports_http.py): admin_read only
    "/admin/v1/reports/ggr",
    "/admin/v1/reports/cash",
    "/admin/v1/reports/liabilities",
)
ADMIN_WRITES = (
    "/admin/v1/players",
    "/admin/v1/players/{player_id}/freeze",
    "/admin/v1/players/{player_id}/unfreeze",
    "/admin/v1/adjustments",
    "/admin/v1/jackpots",
    "/admin/v1/bonuses",
    "/admin/v1/backups",
    "/admin/v1/promote",
    "/admin/v1/unfence",
    "/admin/v1/rounds/{player_id}/{round_id}/settle",
)
METRICS = _roles("metrics", "admin_read")
EVERY_PROCESS = {
    ("GET", "/healthz"): PUBLIC,
    ("HEAD", "/healthz"): PUBLIC,
    ("GET", "/openapi.json"): PUBLIC,
    ("HEAD", "/openapi.json"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): METRICS,
    ("HEAD", "/metrics"): METRICS,
}

# Who may call what (docs/API.md). A route missing here fails the policy test: access to a new route
# is a decision to review, not a default.
LEDGER_POLICY: dict[tuple[str, str], str | frozenset[str]] = {
    **{("POST", p): _roles("edge") for p in (*GAME_MONEY, "/v1/batch")},
    ("POST", "/v1/deposits"): _roles("cashier"),
    ("POST", "/v1/withdrawals"): _roles("cashier"),
    **{("GET", p): _roles("edge", "cashier", "admin_read") for p in LEDGER_READS},
    ("GET", "/v1/journal"): _roles("replica", "admin_read"),
    ("GET", "/v1/limits"): _roles("edge", "cashier", "replica", "admin_read", "admin_write"),
    **{("GET", p): _roles("admin_read") for p in ADMIN_READS},
    **{("POST", p): _roles("admin_write") for p in ADMIN_WRITES},
    ("POST", "/admin/v1/audit/verify"): _roles("admin_read", "admin_write"),
    ("GET", "/admin/v1/audit/checkpoints"): _roles("admin_read", "admin_write"),
    ("GET", "/admin/v1/audit/checkpoints/export"): _roles("admin_read", "admin_write"),
    ("POST", "/admin/v1/audit/checkpoints"): _roles("admin_write"),
    ("GET", "/v1/events"): _roles("events", "admin_read"),
    ("PUT", "/v1/consumers/{name}/cursor"): _roles("events"),
    ("PUT", "/admin/v1/consumers/{name}"): _roles("admin_write"),
    ("GET", "/admin/v1/consumers"): _roles("admin_read", "admin_write"),
    ("DELETE", "/admin/v1/consumers/{name}"): _roles("admin_write"),
    ("POST", "/admin/v1/consumers/{name}/dead-letters/{letter_id}/replay"): _roles("admin_write"),
    **EVERY_PROCESS,
}
EDGE_POLICY: dict[tuple[str, str], str | frozenset[str]] = {
    **{("POST", p): _roles("game_server") for p in GAME_MONEY},
    **{
        ("GET", p): _roles("game_server")
        for p in (
            "/v1/players/{player_id}/balances",
            "/v1/players/{player_id}/session",
            "/v1/jackpots",
            "/v1/jackpots/{jackpot_id}",
            "/v1/players/{player_id}/bonus-progress",
        )
    },
    ("PUT", "/v1/players/{player_id}/session/{game_id}"): _roles("game_server"),
    ("GET", "/v1/sync"): _roles("peer"),
    **EVERY_PROCESS,
}

# --- valid example requests -------------------------------------------------------------------

# The matrix player: what the right roles write in the matrix (a freeze included) lands on a
# player that no other security test uses.
MATRIX_PLAYER = "p008"
PATH_VALUES = {
    "player_id": MATRIX_PLAYER,
    "jackpot_id": "mega",
    "round_id": "matrix-r",
    "id": "seed-dep-p001",
    "game_id": "slots-1",
    "name": "matrix-consumer",
    "letter_id": "1-1",
    "external_ref": "matrix-ref",
}


def concrete_path(path: str) -> str:
    for name, value in PATH_VALUES.items():
        path = path.replace("{" + name + "}", value)
    assert "{" not in path, f"no example value for a parameter of {path}"
    return path


BODILESS_POSTS = frozenset(
    {
        "/admin/v1/audit/verify",
        "/admin/v1/backups",
        "/admin/v1/promote",
        "/admin/v1/audit/checkpoints",
        "/admin/v1/consumers/{name}/dead-letters/{letter_id}/replay",
    }
)


def example_body(method: str, path: str, tag: str) -> dict[str, Any] | None:
    """A valid body for a write route (fresh ids per `tag`), None for routes without one."""
    if method not in ("POST", "PUT"):
        return None
    p = MATRIX_PLAYER
    money = {"player_id": p, "currency": "EUR", "amount_minor": 100}
    bodies: dict[str, dict[str, Any]] = {
        "/v1/bets": {"id": f"{tag}-bet", **money, "round_id": f"{tag}-r", "game_id": "slots-1"},
        "/v1/wins": {"id": f"{tag}-win", **money, "round_id": f"{tag}-r"},
        "/v1/rollbacks": {"id": f"{tag}-rb", "bet_id": f"{tag}-bet", "player_id": p},
        "/v1/jackpot-payouts": {"id": f"{tag}-jp", "jackpot_id": "mega", "player_id": p, "round_id": f"{tag}-r"},
        "/v1/bonus-claims": {"id": f"{tag}-bc", "player_id": p, "bonus_id": "welcome"},
        "/v1/deposits": {"id": f"{tag}-dep", **money},
        "/v1/withdrawals": {"id": f"{tag}-wd", **money},
        "/v1/batch": {
            "actions": [
                {"op": "bet", "body": {"id": f"{tag}-batch-bet", **money, "round_id": f"{tag}-r", "game_id": "slots-1"}}
            ]
        },
        "/admin/v1/players": {"player_id": f"{tag}-player", "currencies": ["EUR"]},
        "/admin/v1/players/{player_id}/freeze": {"reason": "security matrix"},
        "/admin/v1/players/{player_id}/unfreeze": {"reason": "security matrix"},
        "/admin/v1/unfence": {"reason": "security matrix"},  # the matrix ledger is not fenced: 409 not_fenced
        "/admin/v1/adjustments": {"id": f"{tag}-adj", **money, "reason": "security matrix"},
        "/admin/v1/jackpots": {
            "jackpot_id": f"{tag}-jackpot",
            "currency": "EUR",
            "seed_minor": 0,
            "contribution_ppm": 0,
            "game_ids": [f"{tag}-game"],
        },
        "/admin/v1/bonuses": {
            "id": f"{tag}-bonus",
            "player_id": p,
            "bonus_id": f"{tag}-bonus",
            "currency": "EUR",
            "amount_minor": 1,
            "wagering_requirement_minor": 1,
            "expires_at": "2099-01-01T00:00:00Z",
        },
        "/v1/players/{player_id}/session/{game_id}": {"state": {"level": 1}},
        "/v1/consumers/{name}/cursor": {"sequence": 0},
        "/admin/v1/consumers/{name}": {"description": "security matrix"},
        "/admin/v1/rounds/{player_id}/{round_id}/settle": {"policy": "close", "reason": "security matrix"},
    }
    return bodies.get(path, {}) if path not in BODILESS_POSTS else None
