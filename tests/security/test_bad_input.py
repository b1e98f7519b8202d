"""Mass assignment and bad input on the ledger and on an edge: unknown fields, wrong types, floats
for money, negative and huge amounts, ids out of pattern, oversized bodies, malformed JSON and
non-UTF-8 each get a problem+json with a stable `code` (and the field named), and nothing changes:
the journal head and every balance are identical before and after, and the refused attempts did
not bind their idempotency id (a valid request with it afterwards commits fresh)."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.cluster_client import PROBLEM, Client, Reply

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="package")]

BODY_BYTES_MAX = 65_536  # both services' default body_bytes_max, which the cluster keeps
BAD_IDS = ("", "a b", "a" * 129, "é", "../etc/passwd", "x/y", "a\x00b", "a;DROP TABLE accounts")
HUGE = (10**15 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1)


@dataclass(frozen=True)
class Target:
    service: str
    role: str
    path: str
    base: Callable[[str], dict[str, Any]]  # a valid body for an id
    amount_positive: bool = True  # zero and negative amounts are invalid here
    prepare: dict[str, Any] | None = None  # a bet the valid request needs (a win needs its round)


def bet(id_: str) -> dict[str, Any]:
    return {
        "id": id_,
        "player_id": "p002",
        "currency": "EUR",
        "amount_minor": 100,
        "round_id": f"{id_}-r",
        "game_id": "slots-1",
    }


def deposit(id_: str) -> dict[str, Any]:
    return {"id": id_, "player_id": "p002", "currency": "EUR", "amount_minor": 100}


def adjustment(id_: str) -> dict[str, Any]:
    return {**deposit(id_), "reason": "security test"}


TARGETS = {
    "ledger-bet": Target("ledger", "edge", "/v1/bets", bet),
    "ledger-deposit": Target("ledger", "cashier", "/v1/deposits", deposit),
    "ledger-withdrawal": Target("ledger", "cashier", "/v1/withdrawals", deposit),
    "ledger-adjustment": Target("ledger", "admin_write", "/admin/v1/adjustments", adjustment, amount_positive=False),
    "edge-bet": Target("eu", "game_server", "/v1/bets", bet),
    "edge-win": Target(
        "us",
        "game_server",
        "/v1/wins",
        lambda i: {**deposit(i), "round_id": "bad-win-r", "close_round": False},
        amount_positive=False,
        prepare={**bet("bad-win-bet"), "round_id": "bad-win-r"},
    ),
}


def _json(body: Any) -> bytes:
    # The standard library writes integers of any size (orjson stops at 64 bits).
    return json.dumps(body, separators=(",", ":")).encode()


def body_cases(t: Target, id_: str) -> list[tuple[str, bytes, int, str, str | None]]:
    """(name, raw body, status, code, field named) for every bad body of target `t`."""
    b = t.base(id_)
    cases: list[tuple[str, bytes, int, str, str | None]] = [
        (f"unknown field {f}", _json({**b, f: v}), 400, "validation_error", f)
        for f, v in (
            ("balance_minor", 10**9),
            ("sequence", 1),
            ("outcome", "committed"),
            ("postings", [{"account": "cashier:EUR", "amount_minor": -1}]),
            ("principal", "admin_write"),
        )
    ]
    cases += [
        (f"amount {v!r}", _json({**b, "amount_minor": v}), 400, "validation_error", "amount_minor")
        for v in ("100", True, None, [100], {"v": 100}, 100.0, 100.5, *HUGE)
    ]
    cases += [
        (
            f"amount raw {raw}",
            _json(b).replace(b'"amount_minor":100', b'"amount_minor":' + raw),
            400,
            "validation_error",
            "amount_minor",
        )
        for raw in (b"1e2", b"1E2", b"100.00", b"1" + b"0" * 40)
    ]
    if t.amount_positive:
        cases += [
            (f"amount {v}", _json({**b, "amount_minor": v}), 400, "validation_error", "amount_minor")
            for v in (0, -1, -100)
        ]
    cases += [(f"id {v!r}", _json({**b, "id": v}), 400, "validation_error", "id") for v in (*BAD_IDS, 5, None)]
    cases += [
        (f"player_id {v!r}", _json({**b, "player_id": v}), 400, "validation_error", "player_id") for v in BAD_IDS[:4]
    ]
    cases += [
        (f"currency {v!r}", _json({**b, "currency": v}), 400, "validation_error", "currency")
        for v in ("eur", "EURO", 978, "E1R")
    ]
    cases.append(
        (
            "missing player_id",
            _json({k: v for k, v in b.items() if k != "player_id"}),
            400,
            "validation_error",
            "player_id",
        )
    )
    cases.append(
        ("deep unknown field", _json(b)[:-1] + b',"x":' + b"[" * 300 + b"]" * 300 + b"}", 400, "validation_error", "x")
    )
    return cases


RAW_CASES: list[tuple[str, bytes, int, str]] = [
    ("empty body", b"", 400, "malformed_json"),
    ("truncated", b'{"id": "x"', 400, "malformed_json"),
    ("trailing garbage", b'{"id": "x"} x', 400, "malformed_json"),
    ("single quotes", b"{'id': 'x'}", 400, "malformed_json"),
    ("NaN", b'{"amount_minor": NaN}', 400, "malformed_json"),
    ("Infinity", b'{"amount_minor": Infinity}', 400, "malformed_json"),
    ("latin-1", '{"id": "é"}'.encode("latin-1"), 400, "malformed_json"),
    ("utf-16", '{"id": "x"}'.encode("utf-16"), 400, "malformed_json"),
    ("utf-8 bom", b'\xef\xbb\xbf{"id": "x"}', 400, "malformed_json"),
    ("lone surrogate", b'{"id": "\\ud800"}', 400, "malformed_json"),
    ("invalid byte", b'{"id": "\xff\xfe"}', 400, "malformed_json"),
    ("nesting 5000 deep", b"[" * 5000 + b"]" * 5000, 400, "malformed_json"),
    ("null", b"null", 400, "validation_error"),
    ("array", b"[]", 400, "validation_error"),
    ("string", b'"x"', 400, "validation_error"),
    ("number", b"5", 400, "validation_error"),
    ("oversized", b'{"id": "' + b"a" * BODY_BYTES_MAX + b'"}', 413, "payload_too_large"),
    ("oversized array", b"[" + b"1," * BODY_BYTES_MAX + b"1]", 413, "payload_too_large"),
]


def problem_violation(reply: Reply, status: int, code: str, field: str | None = None) -> str | None:
    """Why `reply` is not that problem (None when it is)."""
    if reply.status != status or reply.content_type != PROBLEM:
        return f"{reply.status} {reply.content_type} {reply.raw[:160]!r}"
    body = reply.json()
    if body.get("code") != code or body.get("status") != status or not body.get("title"):
        return f"problem {body}"
    if field is not None and field not in str(body.get("field", "")) + body.get("detail", ""):
        return f"field {field!r} not named: {body}"
    return None


async def _send_all(client: Client, t: Target, id_: str) -> list[str]:
    wrong = []
    for name, raw, status, code, field in body_cases(t, id_):
        reply = await client.as_role(t.service, t.role, "POST", t.path, data=raw)
        if why := problem_violation(reply, status, code, field):
            wrong.append(f"{name}: {why}")
    for name, raw, status, code in RAW_CASES:
        reply = await client.as_role(t.service, t.role, "POST", t.path, data=raw)
        if why := problem_violation(reply, status, code):
            wrong.append(f"{name}: {why}")
    return wrong


@pytest.mark.parametrize("target", sorted(TARGETS))
async def test_bad_bodies_get_a_stable_problem_change_nothing_and_leave_the_id_unbound(client, target):
    t = TARGETS[target]
    id_ = f"bad-{target}"
    if t.prepare is not None:
        placed = await client.as_role(t.service, t.role, "POST", "/v1/bets", body=t.prepare)
        assert placed.status == 201, placed.raw
    before = await client.snapshot()
    assert await _send_all(client, t, id_) == []
    assert await client.snapshot() == before
    fresh = await client.as_role(t.service, t.role, "POST", t.path, body=t.base(id_))
    assert fresh.status == 201 and fresh.json()["replayed"] is False, fresh.raw


BAD_PATHS = (
    "/v1/players/a%20b/balances",
    "/v1/players/" + "a" * 129 + "/balances",
    "/v1/players/%C3%A9/balances",
    "/v1/players/a%2Fb/balances",
    "/v1/players/%00/balances",
    "/v1/jackpots/%2E%2E%2Fx",
)
BAD_QUERIES = (
    "/v1/players/p001/rounds?limit=-1",
    "/v1/players/p001/rounds?limit=abc",
    "/v1/players/p001/rounds?limit=1" + "0" * 30,
    "/v1/players/p001/rounds?limit=1.5",
    "/v1/players/p001/rounds?status=everything",
    "/v1/journal?after_sequence=-5",
    "/v1/journal?limit=100000000",
    "/admin/v1/players/p001/statement?currency=eur",
    "/admin/v1/journal/export?format=xml",
    "/admin/v1/journal/export?from_sequence=0",
)


async def test_ids_out_of_pattern_in_paths_and_bad_query_values_get_validation_errors(client):
    wrong = []
    for service, role in (("ledger", "admin_read"), ("eu", "game_server")):
        for path in BAD_PATHS:
            reply = await client.as_role(service, role, "GET", path)
            # %2F may be decoded before routing: then no route matches, which is a 404 problem too.
            if why := problem_violation(reply, 400, "validation_error") and problem_violation(reply, 404, "not_found"):
                wrong.append(f"{service} {path}: {why}")
    for path in BAD_QUERIES:
        reply = await client.as_role("ledger", "admin_read", "GET", path)
        if why := problem_violation(reply, 400, "validation_error"):
            wrong.append(f"ledger {path}: {why}")
    assert wrong == []


async def test_a_batch_of_bad_actions_answers_each_with_its_problem_and_commits_nothing(client):
    before = await client.snapshot()
    good = bet("bad-batch-1")
    actions = [
        {"op": "bet", "body": {**good, "amount_minor": 1.5}},
        {"op": "bet", "body": {**good, "id": "bad batch"}},
        {"op": "bet", "body": {**good, "balance_minor": 1}},
        {"op": "deposit", "body": deposit("bad-batch-2")},
    ]
    reply = await client.as_role("ledger", "edge", "POST", "/v1/batch", body={"actions": actions[:3]})
    assert reply.status == 200, reply.raw
    results = reply.json()["results"]
    assert [r["status"] for r in results] == [400, 400, 400], results
    assert all(r["body"]["code"] == "validation_error" for r in results), results
    refusals = [
        ({"actions": actions[3:]}, 400),
        ({"actions": []}, 400),
        ({"actions": {"op": "bet"}}, 400),
        ({"actions": [{"op": "bet", "body": good}] * 257}, 400),
        ({"actions": [], "via": "x"}, 400),
    ]
    for body, status in refusals:
        r = await client.as_role("ledger", "edge", "POST", "/v1/batch", body=body)
        assert problem_violation(r, status, "validation_error") is None, (body, r.raw[:300])
    assert await client.snapshot() == before


async def test_only_an_edge_credential_may_set_via_and_client_id_on_the_ledger(client):
    before = await client.snapshot()
    for extra in ({"via": "eu"}, {"client_id": "gs"}):
        reply = await client.as_role(
            "ledger", "cashier", "POST", "/v1/deposits", body={**deposit("bad-via-dep"), **extra}
        )
        assert problem_violation(reply, 403, "forbidden") is None, reply.raw
    assert await client.snapshot() == before


async def test_a_game_server_cannot_choose_the_via_or_client_id_its_edge_forwards(client):
    """Mass assignment through the edge: the edge records its own id and the caller's identity."""
    body = {**bet("bad-mass-assign"), "via": "us", "client_id": "another-game-server"}
    reply = await client.as_role("eu", "game_server", "POST", "/v1/bets", body=body)
    if reply.status == 201:
        tx = reply.json()["transaction"]
        assert (tx["via"], tx["client_id"]) == ("eu", "gs"), tx
    else:
        assert problem_violation(reply, 400, "validation_error") is None, reply.raw


async def test_bad_session_states_get_a_problem_and_leave_the_stored_state_alone(client):
    path = "/v1/players/p003/session/slots-1"
    ok = await client.as_role("eu", "game_server", "PUT", path, body={"state": {"level": 7}})
    assert ok.status == 200, ok.raw
    cases = [
        ({"state": [1]}, 400, "validation_error"),
        ({"state": "x"}, 400, "validation_error"),
        ({"state": {}, "edge": "us"}, 400, "validation_error"),
        ({"state": {"blob": "x" * 20_000}}, 413, "payload_too_large"),
    ]
    for body, status, code in cases:
        reply = await client.as_role("eu", "game_server", "PUT", path, body=body)
        assert problem_violation(reply, status, code) is None, (str(body)[:80], reply.raw[:300])
    session = await client.as_role("eu", "game_server", "GET", "/v1/players/p003/session")
    assert session.json()["games"]["slots-1"]["state"] == {"level": 7}


ENCODED_CASES = [
    ("gzip bomb", "gzip", gzip.compress(b'{"id": "' + b"a" * (16 << 20) + b'"}'), 413, "payload_too_large"),
    ("deflate bomb", "deflate", zlib.compress(b"[" + b"0," * (8 << 20) + b"0]"), 413, "payload_too_large"),
    ("not gzip", "gzip", b'{"id": "x"}', 400, "malformed_json"),
    ("truncated gzip", "gzip", gzip.compress(b'{"id": "x"}')[:12], 400, "malformed_json"),
]


@pytest.mark.parametrize("target", ["ledger-bet", "edge-bet"])
async def test_compressed_bodies_are_capped_after_decompression_and_undecodable_ones_refused(client, target):
    t = TARGETS[target]
    before = await client.snapshot()
    for name, encoding, raw, status, code in ENCODED_CASES:
        # A body the parser gave up on leaves the connection unusable: do not pool it.
        reply = await client.as_role(
            t.service, t.role, "POST", t.path, data=raw, headers={"Content-Encoding": encoding, "Connection": "close"}
        )
        assert problem_violation(reply, status, code) is None, (name, reply.status, reply.raw[:200])
    assert await client.snapshot() == before
