"""Role × route matrix against the live processes: for every route of both services (from their
route tables), no credential and an unknown one get 401, a credential of each wrong role gets 403
(401 where the service does not know that credential at all), and a right role gets an answer
(2xx/4xx). Wrong-role and anonymous calls carry valid bodies and commit nothing."""

from __future__ import annotations

import pytest

from shared.auth import ROLES

from tests.support.cluster_client import Client, Reply
from tests.support.route_policy import CLUSTER_ROLES, RouteInfo, concrete_path, edge_routes, example_body, ledger_routes

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="package")]

BOGUS_TOKEN = "not-a-credential-of-this-cluster"


def _problem_code(reply: Reply) -> str | None:
    if reply.content_type != "application/problem+json" or not reply.raw:
        return None
    return reply.json().get("code")


def _refusal(reply: Reply, status: int, code: str) -> str | None:
    """Why `reply` is not the expected refusal (None when it is). HEAD answers carry no body."""
    if reply.status != status:
        return f"status {reply.status}"
    if reply.raw and _problem_code(reply) != code:
        return f"body {reply.raw[:200]!r}"
    return None


async def _call(client: Client, service: str, route: RouteInfo, token: str | None, tag: str) -> Reply:
    return await client.send(
        service, route.method, concrete_path(route.path), token=token, body=example_body(route.method, route.path, tag)
    )


async def _matrix(client: Client, service: str, routes: list[RouteInfo]) -> list[str]:
    """Every route × (no credential, unknown credential, each role); returns the violations."""
    wrong: list[str] = []
    tag = f"matrix-{service}"
    guarded = [r for r in routes if not r.public]
    for route in guarded:
        for token, label in ((None, "no credential"), (BOGUS_TOKEN, "unknown credential")):
            if why := _refusal(await _call(client, service, route, token, tag), 401, "unauthenticated"):
                wrong.append(f"{route.label} with {label}: {why}, expected 401")
        for role in sorted(ROLES - route.roles):
            known = role in CLUSTER_ROLES[service]
            status, code = (403, "forbidden") if known else (401, "unauthenticated")
            reply = await _call(client, service, route, client.token(service, role), tag)
            if why := _refusal(reply, status, code):
                wrong.append(f"{route.label} as {role}: {why}, expected {status}")
    return wrong


async def _right_roles(client: Client, service: str, routes: list[RouteInfo]) -> list[str]:
    wrong = []
    for route in routes:
        allowed = ["anonymous"] if route.public else sorted(route.roles & CLUSTER_ROLES[service])
        assert allowed, f"{route.label}: no credential of the cluster may call it"
        for role in allowed:
            token = None if role == "anonymous" else client.token(service, role)
            reply = await _call(client, service, route, token, f"matrix-{service}")
            if reply.status in (401, 403) or reply.status >= 500:
                wrong.append(f"{route.label} as {role}: {reply.status} {reply.raw[:200]!r}")
    return wrong


@pytest.mark.parametrize("service", ["ledger", "eu"])
async def test_every_route_refuses_anonymous_unknown_and_wrong_roles_and_answers_the_right_ones(
    client, service, tmp_path
):
    routes = ledger_routes(tmp_path) if service == "ledger" else edge_routes(tmp_path)
    before = await client.snapshot()
    assert await _matrix(client, service, routes) == []
    assert await client.snapshot() == before, "a refused call changed the ledger"
    assert await _right_roles(client, service, routes) == []


BYPASS_PATHS = (
    "/healthz/../v1/journal",
    "/healthz/%2e%2e/v1/journal",
    "//v1/journal",
    "/v1//journal",
    "/V1/journal",
    "/v1/journal/",
    "/v1/journal%00",
    "/openapi.json/../admin/v1/replication",
    "/v1/journal;/healthz",
    "/./v1/journal",
    "/v1/./journal",
    "/admin/v1/replication/.",
    "/metrics/",
    "/v1/players/p001/balances/",
)


@pytest.mark.parametrize("service", ["ledger", "eu"])
async def test_path_tricks_and_other_methods_do_not_reach_a_guarded_route_without_a_credential(client, service):
    answers = {}
    for path in BYPASS_PATHS:
        answers[path] = (await client.send(service, "GET", path)).status
    for method in ("OPTIONS", "TRACE", "PATCH", "DELETE", "PUT"):
        answers[f"{method} /v1/journal"] = (await client.send(service, method, "/v1/journal")).status
    assert {k: s for k, s in answers.items() if s not in (401, 404, 405)} == {}
