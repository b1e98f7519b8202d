"""Both services' OpenAPI documents are valid OpenAPI 3.1 and pass a lint rule set (what Spectral's
`oas` rules and our own conventions ask; Spectral itself needs npm, which the test machines do not
reach: docs/decisions/openapi-generation-and-lint.md): every operation has an operationId, a tag,
a summary, a success answer with a schema, a problem answer per error status whose `code` is an
enum of codes of the error table, the roles it needs; every `$ref` resolves; every example
validates against its schema; the edge does not advertise what it sets itself. The answer checker
of tests/support/answer_check.py is shown to fail on an answer that is not what is documented."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from shared.errors import CODES
from shared.routes import document

from core_ledger import admin_http
from core_ledger import http as ledger_http
from edge import http as edge_http
from tests.support.answer_check import AnswerChecker, _rebase

DOCS = {
    "ledger": lambda: document(
        [*ledger_http.ROUTES, *admin_http.ROUTES],
        title="ledger",
        description="d",
        answer_headers=ledger_http.LEDGER_HEADERS,
    ),
    "edge": lambda: document(edge_http.ROUTES, title="edge", description="d"),
}
METHODS = ("get", "put", "post", "delete", "patch")


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m, p, op) for p, item in doc["paths"].items() for m, op in item.items() if m in METHODS]


def refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [v for k, v in value.items() if k == "$ref"] + [r for v in value.values() for r in refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in refs(v)]
    return []


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> Draft202012Validator:
    registry: Registry = Registry().with_resource("urn:openapi", Resource(doc, specification=DRAFT202012))
    return Draft202012Validator(_rebase(schema), registry=registry)


@pytest.fixture(params=sorted(DOCS), scope="module")
def doc(request: pytest.FixtureRequest) -> dict[str, Any]:
    return DOCS[request.param]()


def test_the_document_is_valid_openapi_3_1(doc):
    validate(doc)
    assert doc["openapi"] == "3.1.0" and doc["servers"] and doc["tags"]
    assert doc["components"]["securitySchemes"] == {"bearer": doc["components"]["securitySchemes"]["bearer"]}
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_every_operation_is_named_tagged_summarised_and_says_who_may_call_it(doc):
    tags = {t["name"] for t in doc["tags"]}
    ids = [op["operationId"] for _, _, op in operations(doc)]
    assert len(ids) == len(set(ids)) >= 10
    for method, path, op in operations(doc):
        where = f"{method.upper()} {path}"
        assert op["summary"] and op["tags"] and set(op["tags"]) <= tags, where
        public = op["security"] == []
        assert public == (op["x-roles"] == []), where
        assert public or op["security"] == [{"bearer": []}], where
        for role in op["x-roles"]:
            assert f"`{role}`" in op["description"], where


def test_every_operation_documents_its_answers_and_its_problem_codes(doc):
    for method, path, op in operations(doc):
        where = f"{method.upper()} {path}"
        statuses = {int(s) for s in op["responses"]}
        assert "default" not in op["responses"], where  # every status is named: conformance can fail
        success = [s for s in statuses if s < 400]
        assert success, where
        for status in success:
            if status != 101:
                assert op["responses"][str(status)]["content"], where
        if op["security"]:
            assert {401, 403} <= statuses, where
        for status in (s for s in statuses if s >= 400):
            response = op["responses"][str(status)]
            if "application/problem+json" not in response["content"]:  # a probe's "not ready": its own body
                assert path == "/readyz" and status == 503 and "Retry-After" in response["headers"], where
                continue
            schema = response["content"]["application/problem+json"]["schema"]
            enum = schema["allOf"][1]["properties"]["code"]["enum"]
            assert enum and all(CODES[c].status == status for c in enum), (where, status, enum)
            assert "X-Request-Id" in response["headers"], where
            if status == 503:
                assert "Retry-After" in response["headers"], where
            if status == 401:
                assert "WWW-Authenticate" in response["headers"], where


def test_every_ref_resolves(doc):
    for ref in refs(doc):
        assert ref.startswith("#/"), ref
        node: Any = doc
        for part in ref[2:].split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]


def test_every_example_validates_against_its_schema(doc):
    checked = 0
    for method, path, op in operations(doc):
        contents = [r.get("content", {}) for r in op["responses"].values()]
        contents.append(op.get("requestBody", {}).get("content", {}))
        for content in contents:
            for media in content.values():
                if "example" in media:
                    errors = [e.message for e in validator(doc, media["schema"]).iter_errors(media["example"])]
                    assert errors == [], (method, path, errors)
                    checked += 1
    assert checked >= 20


def test_the_edge_does_not_advertise_the_members_it_sets_itself():
    doc = DOCS["edge"]()
    for path in ("/v1/bets", "/v1/wins", "/v1/rollbacks", "/v1/jackpot-payouts", "/v1/bonus-claims"):
        ref = doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
        assert "id" in schema["properties"] and not {"via", "client_id"} & set(schema["properties"]), path
    ledger = DOCS["ledger"]()
    assert {"via", "client_id"} <= set(ledger["components"]["schemas"]["BetIn"]["properties"])


def test_the_limits_route_is_documented_with_its_schema():
    doc = DOCS["ledger"]()
    ok = doc["paths"]["/v1/limits"]["get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"] == {"$ref": "#/components/schemas/Limits"}
    assert {"batch_actions_max", "body_bytes_max", "page_limit_max"} <= set(
        doc["components"]["schemas"]["Limits"]["required"]
    )


def test_the_answer_checker_fails_on_what_is_not_documented():
    checker = AnswerChecker(DOCS["ledger"]())
    good = b'{"player_id": "p1", "balances": [{"currency": "EUR", "balance_minor": 5, "version": 1}]}'
    path = "/v1/players/{player_id}/balances"
    assert checker.check("GET", path, 200, "application/json", good) == []
    assert checker.check("GET", path, 200, "application/json", b'{"player_id": "p1"}')  # a member missing
    assert checker.check("GET", path, 418, "application/json", good)  # a status not documented
    wrong_code = b'{"type": "t", "title": "t", "status": 409, "detail": "d", "code": "round_closed", "request_id": "r"}'
    assert checker.check("POST", "/v1/deposits", 409, "application/problem+json", wrong_code)  # not a 409 it can give
    assert checker.check("POST", "/v1/bets", 409, "application/problem+json", wrong_code) == []


def test_the_batch_takes_exactly_the_money_operations_edges_send():
    from typing import get_args

    from shared.contract.operations import BATCH_OPS, MONEY_OPS
    from shared.contract.requests import BatchOp

    assert set(get_args(BatchOp)) == set(BATCH_OPS) == {n for n, op in MONEY_OPS.items() if "edge" in op.roles}
    assert all(name == op.tx_type for name, op in MONEY_OPS.items())  # keyed by transaction type
