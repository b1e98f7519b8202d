"""Shared plumbing: token checks, role checks, the error table and strict request models."""

import pytest

from shared import auth
from shared.errors import BadRequest, Conflict, Forbidden, Unauthenticated, error_from_code, problem, status_for
from shared.models import BetIn
from shared.web import validate


def test_tokens_resolve_by_hash_and_reject_unknown_or_missing():
    token = auth.new_token()
    store = auth.TokenStore([auth.TokenEntry("gs-1", "game_server", auth.hash_token(token))])
    assert store.authenticate(f"Bearer {token}") == auth.Principal("gs-1", "game_server")
    with pytest.raises(Unauthenticated):
        store.authenticate("Bearer " + token + "x")
    with pytest.raises(Unauthenticated):
        store.authenticate(None)
    with pytest.raises(Unauthenticated):
        store.authenticate(token)  # no scheme


def test_roles_deny_by_default_and_admit_declared_roles():
    @auth.roles("edge")
    async def h(_):
        return None

    async def undeclared(_):
        return None

    auth.check(h, auth.Principal("e", "edge"))
    with pytest.raises(Forbidden):
        auth.check(h, auth.Principal("c", "cashier"))
    with pytest.raises(Forbidden):
        auth.check(undeclared, auth.Principal("a", "admin_write"))
    with pytest.raises(Unauthenticated):
        auth.check(h, None)


def test_error_table_maps_codes_to_statuses():
    assert status_for(error_from_code("round_closed", "x")) == 409
    assert status_for(error_from_code("insufficient_funds", "x")) == 422
    assert status_for(error_from_code("account_frozen", "x")) == 423
    assert status_for(error_from_code("not_primary", "x")) == 503
    body = problem(Conflict("closed", code="round_closed", replayed=True))
    assert body["code"] == "round_closed" and body["status"] == 409 and body["replayed"] is True


@pytest.mark.parametrize(
    "patch,field",
    [
        ({"amount_minor": 1.0}, "amount_minor"),
        ({"amount_minor": True}, "amount_minor"),
        ({"amount_minor": "5"}, "amount_minor"),
        ({"amount_minor": 0}, "amount_minor"),
        ({"amount_minor": 10**16}, "amount_minor"),
        ({"id": "bad id"}, "id"),
        ({"id": "x" * 129}, "id"),
        ({"currency": "eur"}, "currency"),
        ({"extra": 1}, "extra"),
    ],
)
def test_bet_body_is_strict_and_names_the_field(patch, field):
    body = {"id": "b1", "player_id": "p1", "currency": "EUR", "amount_minor": 5, "round_id": "r1", "game_id": "g"}
    validate(BetIn, body)
    with pytest.raises(BadRequest) as e:
        validate(BetIn, {**body, **patch})
    assert e.value.extra["field"] == field


async def test_an_unhandled_bug_becomes_a_500_problem_without_details(aiohttp_client):
    from prometheus_client import CollectorRegistry

    from shared.web import make_app

    @auth.public
    async def broken(_request):
        raise KeyError("secret-internal-detail")

    app = make_app(tokens=auth.TokenStore([]), registry=CollectorRegistry(), body_bytes_max=1024)
    app.router.add_get("/broken", broken)
    client = await aiohttp_client(app)
    resp = await client.get("/broken")
    body = await resp.json(content_type=None)
    assert resp.status == 500 and resp.content_type == "application/problem+json"
    assert body["code"] == "internal_error" and "secret-internal-detail" not in str(body)


def test_every_code_the_services_raise_by_name_is_in_the_error_table():
    """A code raised as `code="..."` must map back to its class (and status) through the table,
    so a client (the edge among them) that reads a problem's `code` knows what it means. Only the
    web framework's own codes (documented apart in docs/API.md) stay outside it."""
    import re
    from pathlib import Path

    from shared.errors import CLASS_BY_CODE

    root = Path(__file__).resolve().parents[2]
    framework_codes = {
        "internal_error",
        "method_not_allowed",
        "http_error",
        "client_disconnected",
    }  # the last is only logged (the caller went away), never answered
    raised = {
        m
        for package in ("core_ledger", "edge", "shared")
        for path in (root / package).rglob("*.py")
        for m in re.findall(r'code\s*=\s*"([a-z_]+)"', path.read_text())
    }
    assert "standby_unavailable" in raised  # the scan sees what it should
    assert sorted(raised - framework_codes - set(CLASS_BY_CODE)) == []


async def test_a_caller_check_sees_authenticated_requests_only_and_its_refusal_is_a_problem(aiohttp_client):
    """`make_app(caller_check=...)` (the ledger's epoch claims): run after authentication and the
    role check, before the handler; a refusal it raises is answered as problem+json; anonymous and
    refused callers never reach it; it may answer with an awaitable to wait for."""
    from prometheus_client import CollectorRegistry

    from shared.web import ANSWER_HEADERS_KEY, make_app

    token = auth.new_token()
    seen: list[tuple[str, str]] = []

    async def waited() -> None:
        seen.append(("waited", ""))

    def check(request, who):
        seen.append((request.path, who.name))
        if request.headers.get("X-Claim") == "bad":
            raise BadRequest("X-Claim: bad", field="X-Claim")
        return waited() if request.headers.get("X-Claim") == "wait" else None

    @auth.roles("edge")
    async def edge_only(_request):
        from shared.web import json_response

        return json_response({"ok": True})

    @auth.public
    async def public(_request):
        from shared.web import json_response

        return json_response({"ok": True})

    app = make_app(
        tokens=auth.TokenStore([auth.TokenEntry("e-1", "edge", auth.hash_token(token))]),
        registry=CollectorRegistry(),
        body_bytes_max=1024,
        caller_check=check,
    )
    app[ANSWER_HEADERS_KEY].append(lambda _request, response: response.headers.__setitem__("X-Extra", "1"))
    app.router.add_get("/edge", edge_only)
    app.router.add_get("/public", public)
    client = await aiohttp_client(app)
    bearer = {"Authorization": f"Bearer {token}"}
    assert (await client.get("/public", headers={"X-Claim": "bad"})).status == 200  # anonymous: not checked
    assert (await client.get("/edge", headers={"X-Claim": "bad"})).status == 401  # refused first: not checked
    assert seen == []
    resp = await client.get("/edge", headers={**bearer, "X-Claim": "bad"})
    body = await resp.json(content_type=None)
    assert resp.status == 400 and body["code"] == "validation_error" and body["field"] == "X-Claim"
    assert resp.headers["X-Extra"] == "1" and body["request_id"] == resp.headers["X-Request-Id"]
    resp = await client.get("/edge", headers={**bearer, "X-Claim": "wait"})
    assert resp.status == 200 and resp.headers["X-Extra"] == "1"
    assert seen == [("/edge", "e-1"), ("/edge", "e-1"), ("waited", "")]
